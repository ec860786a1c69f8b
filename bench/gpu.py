"""GPU frames/s and memory of the SAM 2.1 or SAM 3 tracker, measured side by side in one run, as one table.

Prepared for a machine with one CUDA GPU; it finishes in under 8 minutes (`--budget-s`, default 420 s:
past it, the remaining rows print "skipped (budget)"). Random weights throughout (`random_weights=True`):
speed and memory do not depend on the values. Rows:

- size x objects: frames/s of sam2.1_hiera_{tiny,small,base_plus,large} at 1, 8 and 32 objects (bf16);
- precision: tiny at 8 objects in float32 vs bfloat16 autocast, with the mean mask IoU between the two;
- torch.compile: tiny at 8 objects with the image encoder compiled (the per-frame heavy part; memory
  attention sees a memory length that changes over the first frames, so it stays eager), compile time
  excluded (a warm-up pass compiles);
- encoder batch: tiny at 8 objects encoding 1 vs 8 frames per image-encoder call;
- memory: peak GPU memory (torch.cuda.max_memory_allocated) over 100 vs 1,000 frames, tiny, 8 objects:
  equal when the memory bank is bounded;
- official: sam2==1.1.0's video predictor (when importable) on the same frames and boxes, tiny, bf16
  autocast as its README runs it, beside ours.

Frames are synthetic (moving discs on a gradient, 480x640), generated as they are consumed, so a
1,000-frame clip is never held in memory; objects are box prompts on frame 0.

`--model sam3`: the same rows for SAM 3's tracker at full size (1008 px, PE ViT-L+ trunk 32 x 1024 + the
tracker's neck, heads and memory; random weights, no detector) at 1, 8 and 32 objects, bf16 autocast;
encoder batch 1 vs 8 frames per call; peak GPU memory over 50 vs 200 frames. The official SAM 3 is not run
here (bench/sam3.py compares ours with it on CPU at a reduced size, identical weights).

Without CUDA (or with `--cpu-smoke`) a reduced run checks the script itself on CPU: the unit-test model
(test-tiny, or sam3-test-tiny with `--model sam3`) for every row but the official comparison
(sam2.1_hiera_tiny at 128 px), 1-2 objects, a few frames, no compile; tests/unit/model/test_bench_gpu.py
runs it for both models.

Usage: python bench/gpu.py [--model sam2.1|sam3] [--budget-s 420] [--cpu-smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from batchtrack.model.configs import SAM21_NAMES, TrackerConfig, get_config
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.tracker.tracker import Tracker
from batchtrack.model.types import Prompt

HEIGHT, WIDTH = 480, 640
OFFICIAL_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SMOKE_OFFICIAL_SIZE = 128  # input side of the official comparison on a CPU smoke run


@dataclass(frozen=True)
class Plan:
    """What one run measures; `full()` on a GPU, `smoke()` on CPU."""

    device: str
    sizes: tuple[str, ...]
    objects: tuple[int, ...]
    frames: int  # timed frames per row
    warmup: int  # untimed frames before each timed run
    image_size: int | None  # None: the model config's own (1024 for SAM 2.1, 1008 for SAM 3)
    model: str  # model of the precision / compile / batch / memory rows
    compare_objects: int  # objects of those rows and of the official comparison
    memory_lengths: tuple[int, int]
    compile: bool
    official: bool = True  # run sam2==1.1.0's predictor beside ours (SAM 2.1 plans only)

    @staticmethod
    def full() -> Plan:
        return Plan("cuda", SAM21_NAMES, (1, 8, 32), 48, 4, None, "sam2.1_hiera_tiny", 8, (100, 1000), True)

    @staticmethod
    def smoke() -> Plan:
        # test-tiny keeps CI fast; the official comparison still runs sam2.1_hiera_tiny (at 128 px).
        return Plan("cpu", ("test-tiny",), (1, 2), 3, 1, None, "test-tiny", 2, (4, 8), False)

    @staticmethod
    def full_sam3() -> Plan:
        # A 1008 px frame costs ~4x a SAM 2.1 large one in the trunk: fewer timed frames, shorter memory clips.
        return Plan("cuda", ("sam3",), (1, 8, 32), 24, 2, None, "sam3", 8, (50, 200), True, official=False)

    @staticmethod
    def smoke_sam3() -> Plan:
        return Plan("cpu", ("sam3-test-tiny",), (1, 2), 3, 1, None, "sam3-test-tiny", 2, (4, 8), False, official=False)


@dataclass
class Row:
    measure: str
    model: str
    objects: int
    frames: int
    setting: str
    fps: float | None = None
    note: str = ""


class Budget:
    """Wall-clock budget: rows that would start past it are reported as skipped."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def frame_stream(num_frames: int, num_objects: int) -> Iterator[tuple[int, np.ndarray]]:
    """Synthetic frames made on demand: `num_objects` discs drifting right on a gradient."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([xx * 0.3, yy * 0.4, (xx + yy) * 0.15], axis=-1).astype(np.uint8)
    centres = _grid_centres(num_objects)
    for t in range(num_frames):
        frame = background.copy()
        for k, (cx, cy) in enumerate(centres):
            x = (cx + 2 * t) % WIDTH
            frame[(xx - x) ** 2 + (yy - cy) ** 2 < 12**2] = ((60 * k) % 255, 200, 255 - (40 * k) % 255)
        yield t, frame


def _grid_centres(num_objects: int) -> list[tuple[float, float]]:
    cols = int(np.ceil(np.sqrt(num_objects)))
    rows = int(np.ceil(num_objects / cols))
    return [((i % cols + 0.5) * WIDTH / cols, (i // cols + 0.5) * HEIGHT / rows) for i in range(num_objects)]


def box_prompts(num_objects: int) -> list[Prompt]:
    return [
        Prompt(0, k + 1, box=np.array([cx - 14, cy - 14, cx + 14, cy + 14], dtype=np.float32))
        for k, (cx, cy) in enumerate(_grid_centres(num_objects))
    ]


def make_tracker(plan: Plan, name: str, **changes: Any) -> Tracker:
    config: TrackerConfig = get_config(name)
    if plan.image_size is not None:
        changes.setdefault("image_size", plan.image_size)
    return build_tracker(dataclasses.replace(config, **changes), device=plan.device, random_weights=True)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_track(
    tracker: Tracker,
    plan: Plan,
    num_objects: int,
    num_frames: int,
    keep: Callable[[int, torch.Tensor], None] | None = None,
) -> float:
    """Frames/s of one tracking pass (after an untimed warm-up pass); `keep(frame, masks)` sees each result."""
    prompts = box_prompts(num_objects)
    for _ in tracker.track(frame_stream(plan.warmup, num_objects), prompts, num_frames=plan.warmup):
        pass
    _sync(plan.device)
    start = time.perf_counter()
    for result in tracker.track(frame_stream(num_frames, num_objects), prompts, num_frames=num_frames):
        if keep is not None:
            keep(result.frame_index, result.mask_logits > 0)
    _sync(plan.device)
    return num_frames / (time.perf_counter() - start)


def sizes_rows(plan: Plan, budget: Budget) -> list[Row]:
    rows = []
    for name in plan.sizes:
        tracker = make_tracker(plan, name) if budget.left() > 0 else None
        for n in plan.objects:
            row = Row("size x objects", name, n, plan.frames, _precision(plan))
            if tracker is not None and budget.left() > 0:
                row.fps = timed_track(tracker, plan, n, plan.frames)
            rows.append(row)
        del tracker
        _free(plan.device)
    return rows


def precision_rows(plan: Plan, budget: Budget) -> list[Row]:
    n, masks = plan.compare_objects, {}
    rows = []
    for dtype in ("float32", "bfloat16"):
        row = Row("precision", plan.model, n, plan.frames, dtype)
        if budget.left() > 0:
            kept: dict[int, torch.Tensor] = {}
            tracker = make_tracker(plan, plan.model, cuda_dtype=dtype)
            row.fps = timed_track(tracker, plan, n, plan.frames, lambda t, m, kept=kept: kept.__setitem__(t, m.cpu()))
            masks[dtype] = kept
        rows.append(row)
    if len(masks) == 2:
        rows[-1].note = f"mask IoU vs float32: {mean_iou(masks['float32'], masks['bfloat16']):.4f}"
    if plan.device == "cpu":
        rows[-1].note += " (CPU runs float32 either way)"
    return rows


def mean_iou(a: dict[int, torch.Tensor], b: dict[int, torch.Tensor]) -> float:
    """Mean IoU over (frame, object) pairs; a pair empty in both counts as 1."""
    ious = []
    for t in sorted(a):
        inter = (a[t] & b[t]).flatten(1).sum(1).float()
        union = (a[t] | b[t]).flatten(1).sum(1).float()
        ious.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)))
    return float(torch.cat(ious).mean()) if ious else float("nan")


def compile_rows(plan: Plan, budget: Budget) -> list[Row]:
    n = plan.compare_objects
    eager = Row("torch.compile", plan.model, n, plan.frames, "eager")
    compiled = Row("torch.compile", plan.model, n, plan.frames, "image encoder compiled")
    if not plan.compile:
        eager.note = compiled.note = "skipped on CPU smoke"
        return [eager, compiled]
    tracker = make_tracker(plan, plan.model)
    if budget.left() > 0:
        eager.fps = timed_track(tracker, plan, n, plan.frames)
    if budget.left() > 120:  # compiling the trunk (Hiera or PE ViT) takes a minute or two
        started = time.perf_counter()
        tracker.image_encoder = torch.compile(tracker.image_encoder)  # type: ignore[assignment]
        for _ in tracker.track(frame_stream(plan.warmup, n), box_prompts(n), num_frames=plan.warmup):
            pass
        compiled.note = f"compile + warm-up {time.perf_counter() - started:.0f} s"
        compiled.fps = timed_track(tracker, plan, n, plan.frames)
    return [eager, compiled]


def encoder_batch_rows(plan: Plan, budget: Budget) -> list[Row]:
    rows = []
    for batch in (1, 8):
        row = Row("encoder batch", plan.model, plan.compare_objects, plan.frames, f"{batch} frames/call")
        if budget.left() > 0:
            tracker = make_tracker(plan, plan.model, encoder_batch_size=batch)
            row.fps = timed_track(tracker, plan, plan.compare_objects, plan.frames)
        rows.append(row)
    return rows


def memory_rows(plan: Plan, budget: Budget) -> list[Row]:
    rows = []
    tracker = make_tracker(plan, plan.model)
    for length in plan.memory_lengths:
        row = Row("peak memory", plan.model, plan.compare_objects, length, _precision(plan))
        if budget.left() > 0:
            if plan.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            row.fps = timed_track(tracker, plan, plan.compare_objects, length)
            row.note = _peak_memory(plan.device)
        rows.append(row)
    return rows


def _precision(plan: Plan) -> str:
    return "bf16" if plan.device == "cuda" else "fp32"


def _peak_memory(device: str) -> str:
    if device != "cuda":
        return "peak GPU memory: n/a on CPU"
    return f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"


def official_rows(plan: Plan, budget: Budget) -> list[Row]:
    n = plan.compare_objects
    if not plan.official:
        note = "not run here: bench/sam3.py compares with sam3 0.1.4 on CPU (identical weights)"
        return [Row("official vs ours", f"{plan.model} (official)", n, plan.frames, "-", note=note)]
    ours = Row("official vs ours", "sam2.1_hiera_tiny (ours)", n, plan.frames, "same frames and boxes")
    theirs = Row("official vs ours", "sam2.1_hiera_tiny (sam2 1.1.0)", n, plan.frames, "same frames and boxes")
    try:
        from sam2.build_sam import build_sam2_video_predictor
    except ImportError as exc:
        theirs.note = f"not importable: {exc}"
        return [ours, theirs]
    if budget.left() <= 0:
        return [ours, theirs]
    with tempfile.TemporaryDirectory() as tmp:
        folder, checkpoint = Path(tmp) / "frames", Path(tmp) / "tiny.pt"
        _write_jpegs(folder, plan.frames, n)
        size = plan.image_size or (SMOKE_OFFICIAL_SIZE if plan.device == "cpu" else None)
        overrides = [] if size is None else [f"++model.image_size={size}"]
        torch.manual_seed(0)
        official = build_sam2_video_predictor(
            OFFICIAL_CONFIG, ckpt_path=None, device=plan.device, hydra_overrides_extra=overrides
        )
        torch.save({"model": official.state_dict()}, checkpoint)
        theirs.fps = _official_fps(official, folder, plan, n)
        tracker = make_tracker(plan, "sam2.1_hiera_tiny", **({} if size is None else {"image_size": size}))
        tracker.load_state_dict(torch.load(checkpoint, map_location=plan.device, weights_only=True)["model"])
        ours.fps = timed_track(tracker, plan, n, plan.frames)
    theirs.note = "frames preloaded by init_state (not timed)"
    return [ours, theirs]


def _write_jpegs(folder: Path, num_frames: int, num_objects: int) -> None:
    from PIL import Image

    folder.mkdir()
    for t, frame in frame_stream(num_frames, num_objects):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)


def _official_fps(predictor: Any, folder: Path, plan: Plan, num_objects: int) -> float:
    if plan.device == "cuda":
        autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        autocast = torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), autocast:
        state = predictor.init_state(str(folder))
        for p in box_prompts(num_objects):
            predictor.add_new_points_or_box(state, p.frame_index, p.object_id, box=p.box)
        _sync(plan.device)
        start = time.perf_counter()
        frames = sum(1 for _ in predictor.propagate_in_video(state))
        _sync(plan.device)
    return frames / (time.perf_counter() - start)


def _free(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()


def format_table(rows: list[Row], plan: Plan, seconds: float) -> str:
    size = plan.image_size or get_config(plan.model).image_size
    device = torch.cuda.get_device_name() if plan.device == "cuda" else "CPU (smoke run)"
    lines = [
        f"bench/gpu.py on {device}, image size {size}, video {WIDTH}x{HEIGHT}, random weights, {seconds:.0f} s",
        "",
        "| measure | model | objects | frames | setting | frames/s | note |",
        "| --- | --- | ---: | ---: | --- | ---: | --- |",
    ]
    for r in rows:
        fps = f"{r.fps:.2f}" if r.fps is not None else "skipped (budget)" if not r.note else "-"
        lines.append(f"| {r.measure} | {r.model} | {r.objects} | {r.frames} | {r.setting} | {fps} | {r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting rows after this many seconds")
    parser.add_argument("--cpu-smoke", action="store_true", help="reduced CPU run (automatic without CUDA)")
    parser.add_argument("--model", choices=["sam2.1", "sam3"], default="sam2.1", help="tracker family to measure")
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke or not torch.cuda.is_available()
    if args.model == "sam3":
        plan = Plan.smoke_sam3() if smoke else Plan.full_sam3()
    else:
        plan = Plan.smoke() if smoke else Plan.full()
    if plan.device == "cpu":
        torch.set_num_threads(1)  # tiny tensors: thread hand-off costs more than the maths
    started = time.monotonic()
    budget = Budget(args.budget_s)
    rows: list[Row] = []
    for measure in (sizes_rows, precision_rows, compile_rows, encoder_batch_rows, memory_rows, official_rows):
        rows += measure(plan, budget)
        _free(plan.device)
    print(format_table(rows, plan, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
