"""Our tracker vs the official SAM 2.1 video predictor: frames/s and peak memory vs clip length.

Both run the same random SAM 2.1 tiny weights (made by the official builder, loaded strictly by us),
on the same JPEG frames with the same prompts (a box and a click on frame 0), in one invocation.
Every (implementation, clip length) runs in its own subprocess, so `ru_maxrss` is that run's peak.
Printed per run: frames/s of wall time and per CPU-second of the process (the stable number on a
machine shared with other work), peak RSS (`ru_maxrss`, which includes start-up: importing torch
and building the model) and clip RSS (resident memory at the end of the clip minus right after the
model was built: what tracking this clip holds). Then the ours/official ratio of frames per
CPU-second, and each implementation's clip-RSS growth from the shortest to the longest clip.

The official predictor holds the whole clip (all frames resized, plus every frame's outputs), so
its memory grows with the clip; ours streams frames and keeps a bounded memory bank.
`--image-size` lowers the model resolution on both sides (the hydra override `++model.image_size`
for the official one) so long clips finish on a CPU; 1024 is SAM 2.1's native size.

Usage: python bench/tracker.py [--lengths 100 1000] [--image-size 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

OFFICIAL_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
BOX = (20.0, 30.0, 62.0, 70.0)
CLICK = (115.0, 92.0)


def draw_frame(t: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(t)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 1.5, yy * 2.0, (xx + yy) * 0.8], axis=-1) + rng.normal(0, 10, (height, width, 3))
    cx = 40 + (3 * t) % max(1, width - 80)
    img[(xx - cx) ** 2 + (yy - 50) ** 2 < 15**2] = (220, 30, 30)
    img[80:105, 100:130] = (30, 200, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_clip(folder: Path, length: int, height: int, width: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t in range(length):
        Image.fromarray(draw_frame(t, height, width)).save(folder / f"{t:05d}.jpg", quality=95)


def clip_of_length(base: Path, length: int) -> Path:
    """A folder with the first `length` frames of `base` (symlinks), as the official loader reads folders."""
    folder = base.parent / f"{base.name}_{length}"
    if not folder.exists():
        folder.mkdir()
        for t in range(length):
            (folder / f"{t:05d}.jpg").symlink_to(base / f"{t:05d}.jpg")
    return folder


def make_checkpoint(path: Path) -> None:
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    model = build_sam2_video_predictor(OFFICIAL_CONFIG, ckpt_path=None, device="cpu")
    torch.save({"model": model.state_dict()}, path)


# -- workers (one subprocess each) --------------------------------------------------------------


def run_ours(folder: Path, checkpoint: Path, image_size: int) -> dict[str, Any]:
    from PIL import Image

    from batchtrack.model.configs import get_config
    from batchtrack.model.loading.checkpoint import load_state_dict_file, load_strict
    from batchtrack.model.tracker.tracker import Tracker
    from batchtrack.model.types import Prompt

    config = dataclasses.replace(get_config("sam2.1_hiera_tiny"), image_size=image_size, fill_hole_area=0)
    tracker = Tracker(config)
    load_strict(tracker, load_state_dict_file(checkpoint), str(checkpoint))
    tracker.eval()
    paths = sorted(folder.glob("*.jpg"))

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        for t, p in enumerate(paths):
            yield t, np.array(Image.open(p).convert("RGB"))

    prompts = [
        Prompt(0, 1, box=np.array(BOX, dtype=np.float32)),
        Prompt(0, 2, points=np.array([CLICK], dtype=np.float32), point_labels=np.array([1], dtype=np.int32)),
    ]
    base, start, cpu = rss_mib(), time.perf_counter(), time.process_time()
    count = sum(1 for _ in tracker.track(frames(), prompts, num_frames=len(paths)))
    return timings(count, start, cpu, base)


def run_official(folder: Path, checkpoint: Path, image_size: int) -> dict[str, Any]:
    from sam2.build_sam import build_sam2_video_predictor

    override = [f"++model.image_size={image_size}"]
    ckpt = str(checkpoint)
    pred = build_sam2_video_predictor(OFFICIAL_CONFIG, ckpt_path=ckpt, device="cpu", hydra_overrides_extra=override)
    pred.fill_hole_area = 0
    attend = pred.memory_attention.forward

    def attend_fp32(curr: Any, memory: torch.Tensor, curr_pos: Any = None, memory_pos: Any = None, **kw: Any) -> Any:
        return attend(curr=curr, memory=memory.float(), curr_pos=curr_pos, memory_pos=memory_pos.float(), **kw)

    pred.memory_attention.forward = attend_fp32
    base, start, cpu = rss_mib(), time.perf_counter(), time.process_time()
    with torch.inference_mode():
        state = pred.init_state(str(folder))
        pred.add_new_points_or_box(state, 0, 1, box=np.array(BOX, dtype=np.float32))
        pred.add_new_points_or_box(
            state, 0, 2, points=np.array([CLICK], dtype=np.float32), labels=np.array([1], dtype=np.int32)
        )
        count = sum(1 for _ in pred.propagate_in_video(state))
        return timings(count, start, cpu, base)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timings(frames: int, start: float, cpu: float, base_rss: float) -> dict[str, Any]:
    return {
        "frames": frames,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "clip_rss_mib": rss_mib() - base_rss,
    }


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    run = run_ours if args.worker == "ours" else run_official
    out = run(Path(args.folder), Path(args.checkpoint), args.image_size)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print("RESULT " + json.dumps(out))


# -- driver -------------------------------------------------------------------------------------


def measure(impl: str, folder: Path, checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", impl, "--folder", str(folder), "--checkpoint", str(checkpoint)]
    cmd += ["--image-size", str(args.image_size), "--threads", str(args.threads)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{impl} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000], help="clip lengths in frames")
    parser.add_argument("--image-size", type=int, default=256, help="model input side on both sides (1024 = native)")
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["ours", "official"], help="run one implementation only")
    parser.add_argument("--worker", choices=["ours", "official"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    impls = [args.only] if args.only else ["ours", "official"]
    lengths = sorted(args.lengths)
    with tempfile.TemporaryDirectory(prefix="bench-tracker-") as tmp:
        base = Path(tmp) / "frames"
        write_clip(base, lengths[-1], args.height, args.width)
        checkpoint = Path(tmp) / "sam2.1_hiera_tiny_random.pt"
        make_checkpoint(checkpoint)
        print(
            f"sam2.1_hiera_tiny (random weights) @ {args.image_size}px, video {args.width}x{args.height}, "
            f"2 objects, CPU threads={args.threads}, torch {torch.__version__}"
        )
        header = ("impl", "frames", "frames/s", "frames/CPU-s", "peak RSS MiB", "clip RSS MiB")
        print(f"{header[0]:<9} {header[1]:>7} {header[2]:>9} " + " ".join(f"{h:>13}" for h in header[3:]))
        results: dict[tuple[str, int], dict[str, Any]] = {}
        for length in lengths:
            folder = clip_of_length(base, length)
            for impl in impls:
                r = measure(impl, folder, checkpoint, args)
                results[impl, length] = r
                fps, cpu_fps = r["frames"] / r["seconds"], r["frames"] / r["cpu_seconds"]
                print(
                    f"{impl:<9} {r['frames']:>7} {fps:>9.2f} {cpu_fps:>13.2f} {r['peak_rss_mib']:>13.0f} "
                    f"{r['clip_rss_mib']:>13.0f}",
                    flush=True,
                )
    if len(impls) == 2:
        for length in lengths:
            ours, official = results["ours", length], results["official", length]
            ratio = (ours["frames"] / ours["cpu_seconds"]) / (official["frames"] / official["cpu_seconds"])
            wall = (ours["frames"] / ours["seconds"]) / (official["frames"] / official["seconds"])
            print(f"ours / official at {length} frames: frames per CPU-s {ratio:.2f}, frames per wall-s {wall:.2f}")
    if len(lengths) > 1:
        for impl in impls:
            grow = results[impl, lengths[-1]]["clip_rss_mib"] - results[impl, lengths[0]]["clip_rss_mib"]
            peak = results[impl, lengths[-1]]["peak_rss_mib"] - results[impl, lengths[0]]["peak_rss_mib"]
            print(f"{impl}: {lengths[-1]} vs {lengths[0]} frames: clip RSS {grow:+.0f} MiB, peak RSS {peak:+.0f} MiB")


if __name__ == "__main__":
    main()
