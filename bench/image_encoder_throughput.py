"""How many frames/s does the image encoder sustain, one frame per call vs a batch of 4?

For each (model, batch) it times repeated forward passes and prints frames/s from the mean and from the
fastest call (the fastest is the better estimate on a machine shared with other work), plus the
batch-4 / batch-1 ratio measured in the same run.
Usage: python bench/image_encoder_throughput.py [--models sam2.1_hiera_tiny tiny-synthetic] [--seconds 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from batchtrack.model.build import build_image_encoder
from batchtrack.model.configs import get_config


def call_times(name: str, batch: int, seconds: float, device: torch.device) -> list[float]:
    encoder = build_image_encoder(name, device=device)
    size = get_config(name).image_size
    images = torch.randn(batch, 3, size, size, device=device)
    times: list[float] = []
    with torch.inference_mode():
        encoder(images)  # warm-up: allocator, kernels, position-encoding cache
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(times) < 3:
            t0 = time.perf_counter()
            encoder(images)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["sam2.1_hiera_tiny", "tiny-synthetic"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    for name in args.models:
        size = get_config(name).image_size
        mean_fps, best_fps = {}, {}
        for batch in (1, 4):
            times = call_times(name, batch, args.seconds, device)
            mean_fps[batch] = batch * len(times) / sum(times)
            best_fps[batch] = batch / min(times)
        print(
            f"{name} @ {size}px frames/s: batch 1 mean {mean_fps[1]:.2f} best {best_fps[1]:.2f}; "
            f"batch 4 mean {mean_fps[4]:.2f} best {best_fps[4]:.2f}; "
            f"batch-4/batch-1 (best) {best_fps[4] / best_fps[1]:.2f}"
        )


if __name__ == "__main__":
    main()
