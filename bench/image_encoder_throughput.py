"""How many frames/s does the image encoder sustain, one frame per call vs a batch of 4?

For each (model, batch) it times repeated forward passes and prints frames/s from the mean and from the
fastest call, and frames per CPU-second of this process (robust when the machine is shared with other
work: wall time then mostly measures the neighbours), plus the batch-4 / batch-1 ratio of the same run.
Usage: python bench/image_encoder_throughput.py [--models sam2.1_hiera_tiny tiny-synthetic] [--seconds 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from batchtrack.model.configs import get_config
from batchtrack.model.loading.build import build_image_encoder


def call_times(name: str, batch: int, seconds: float, device: torch.device) -> tuple[list[float], float]:
    """Wall seconds of each call, and the process CPU seconds of all of them."""
    encoder = build_image_encoder(name, device=device)
    size = get_config(name).image_size
    images = torch.randn(batch, 3, size, size, device=device)
    times: list[float] = []
    with torch.inference_mode():
        encoder(images)  # warm-up: allocator, kernels, position-encoding cache
        cpu_start = time.process_time()
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(times) < 3:
            t0 = time.perf_counter()
            encoder(images)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return times, time.process_time() - cpu_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["sam2.1_hiera_tiny", "tiny-synthetic"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        # One thread makes CPU-seconds exact on a shared machine: no OpenMP spin-waiting on a preempted peer.
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    for name in args.models:
        size = get_config(name).image_size
        mean_fps, best_fps, cpu_fps = {}, {}, {}
        for batch in (1, 4):
            times, cpu_seconds = call_times(name, batch, args.seconds, device)
            mean_fps[batch] = batch * len(times) / sum(times)
            best_fps[batch] = batch / min(times)
            cpu_fps[batch] = batch * len(times) / cpu_seconds
        for batch in (1, 4):
            print(
                f"{name} @ {size}px batch {batch}: frames/s mean {mean_fps[batch]:.2f}, fastest call "
                f"{best_fps[batch]:.2f}; frames per CPU-second {cpu_fps[batch]:.3f}"
            )
        print(f"{name}: batch-4/batch-1 frames per CPU-second {cpu_fps[4] / cpu_fps[1]:.2f}")


if __name__ == "__main__":
    main()
