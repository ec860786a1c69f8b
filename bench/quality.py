"""Tracking quality on a held-out synthetic benchmark: the shipped model against the classical baselines.

Part 1 (box prompts): on fresh `make_benchmark` videos (own seed, never seen in training) of each subset,
`evaluate_tracker` scores every tracker: DAVIS J, F and J&F over the objects (frames after each
object's box-prompt frame), and tracking frames/s measured in the same run (decoding excluded).

Part 2 (automatic mode, no prompts): `AutoTracker` with the geometric IoU association against the learned
association head. Each predicted track set is scored against the ground truth with
`count_id_switches` (per frame, GT objects matched one-to-one to tracks at IoU >= 0.5) and coverage
(the fraction of visible GT (frame, object) pairs that are matched). The learned head's weights are
--association-head FILE, by default the shipped batchtrack/weights/tiny-synthetic.association.safetensors
(trained on the frozen shipped tracker, jobs/configs/train_association.yaml); without a file its row says
"not available".

Usage (the defaults run in a few minutes on 2 CPUs):
    python bench/quality.py [--videos 1] [--frames 30] [--seed 20261127] [--threads 2]
        [--subsets occlusion deformation fast_motion camera_motion mixed] [--auto-videos 1]
        [--checkpoint FILE] [--association-head FILE] [--workdir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from batchtrack.eval.baselines import build_baseline
from batchtrack.eval.evaluate import evaluate_tracker
from batchtrack.io.video import iter_frames
from batchtrack.model.association import AssociationHead, load_association_head
from batchtrack.model.auto import AutoTrackConfig, AutoTracker
from batchtrack.model.build import WEIGHTS_DIR, build_tracker
from batchtrack.model.types import Prompt
from batchtrack.pipeline.stitch import count_id_switches, match_frame
from batchtrack.synthetic.corpus import BENCHMARK_SUBSETS, make_benchmark
from batchtrack.synthetic.ground_truth import ground_truth_path, read_ground_truth

MODELS = ("tiny-synthetic", "baseline-flow", "baseline-homography")
FrameMasks = dict[int, dict[int, np.ndarray]]


def _tracker(name: str, checkpoint: str | None) -> Any:
    if name.startswith("baseline-"):
        return build_baseline(name)
    return build_tracker(name, checkpoint=checkpoint, device="cpu")


def _warm_up(tracker: Any) -> None:
    """One short untimed pass, so one-time start-up costs do not land in the first subset's frames/s."""
    frame = np.zeros((240, 320, 3), dtype=np.uint8)
    prompt = Prompt(frame_index=0, object_id=0, box=np.array([100, 80, 200, 160], dtype=np.float32))
    for _ in tracker.track([(0, frame), (1, frame), (2, frame)], [prompt]):
        pass


def box_prompt_table(args: argparse.Namespace, root: Path) -> tuple[list[dict[str, Any]], str]:
    rows: list[dict[str, Any]] = []
    trackers = {model: _tracker(model, args.checkpoint) for model in args.models}
    for tracker in trackers.values():
        _warm_up(tracker)
    for subset in args.subsets:
        folder = root / subset
        make_benchmark(folder, subset, args.videos, args.seed, num_frames=args.frames)
        for model in args.models:
            report = evaluate_tracker(trackers[model], folder)
            rows.append(
                {
                    "subset": subset,
                    "model": model,
                    "objects": len(report.objects),
                    "J": report.j,
                    "F": report.f,
                    "J&F": report.jf,
                    "fps": report.frames_per_second,
                }
            )
            print(f"  {subset:<14} {model:<20} J&F {report.jf:.3f}", flush=True)
    lines = [
        "| subset | model | objects | J | F | J&F | frames/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        fps = f"{r['fps']:.1f}" if r["fps"] is not None else "-"
        lines.append(
            f"| {r['subset']} | {r['model']} | {r['objects']} | {r['J']:.3f} | {r['F']:.3f} | {r['J&F']:.3f} | {fps} |"
        )
    return rows, "\n".join(lines)


def _gt_tracks(gt_path: Path) -> FrameMasks:
    gt = read_ground_truth(gt_path)
    return {f: {o: gt.mask(f, o) for o in gt.object_ids} for f in range(gt.num_frames)}


def _run_auto(tracker: AutoTracker, video: Path) -> tuple[FrameMasks, float, int]:
    frames = list(enumerate(iter_frames(str(video))))
    pred: FrameMasks = {}
    start = time.perf_counter()
    for result in tracker.track(frames):
        masks = (result.mask_logits > 0).numpy()
        pred[result.frame_index] = {int(o): m for o, m in zip(result.object_ids, masks, strict=True)}
    return pred, time.perf_counter() - start, len(frames)


def association_table(args: argparse.Namespace, root: Path) -> tuple[list[dict[str, Any]], str]:
    folder = root / "auto_mixed"
    videos = make_benchmark(folder, "mixed", args.auto_videos, args.seed + 1, num_frames=args.frames)
    head: AssociationHead | None = None
    head_file = args.association_head or (WEIGHTS_DIR / "tiny-synthetic.association.safetensors")
    if Path(head_file).is_file():
        head = load_association_head(head_file)
    rows: list[dict[str, Any]] = []
    for rule in ("iou", "learned"):
        if rule == "learned" and head is None:
            rows.append({"association": rule, "available": False})
            continue
        config = AutoTrackConfig(keyframe_every=args.keyframe_every, rule=rule)  # type: ignore[arg-type]
        tracker = AutoTracker(build_tracker("tiny-synthetic", checkpoint=args.checkpoint, device="cpu"), config, head)
        switches = matched = visible = frames_done = tracks = 0
        seconds = 0.0
        for video in videos:
            gt = _gt_tracks(ground_truth_path(video))
            pred, secs, n = _run_auto(tracker, video)
            switches += count_id_switches(pred, gt)
            matched += sum(len(match_frame(pred.get(f, {}), gt[f], 0.5)) for f in gt)
            visible += sum(int(m.any()) for objs in gt.values() for m in objs.values())
            tracks += len({o for objs in pred.values() for o, m in objs.items() if m.any()})
            seconds += secs
            frames_done += n
        rows.append(
            {
                "association": rule,
                "available": True,
                "id_switches": switches,
                "coverage": matched / max(visible, 1),
                "tracks": tracks,
                "fps": frames_done / seconds if seconds > 0 else None,
            }
        )
        print(f"  auto {rule:<8} id switches {switches} coverage {matched / max(visible, 1):.1%}", flush=True)
    lines = ["| association | ID switches | coverage | tracks started | frames/s |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        if not r["available"]:
            lines.append(f"| {r['association']} | not available (no trained association-head weights) | | | |")
        else:
            fps = f"{r['fps']:.1f}" if r["fps"] is not None else "-"
            lines.append(
                f"| {r['association']} | {r['id_switches']} | {r['coverage']:.1%} | {r['tracks']} | {fps} |"
            )
    return rows, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1, help="benchmark videos per subset")
    parser.add_argument("--frames", type=int, default=30, help="frames per benchmark video")
    parser.add_argument("--seed", type=int, default=20261127, help="benchmark seed (held out from training)")
    parser.add_argument("--subsets", nargs="+", default=list(BENCHMARK_SUBSETS), choices=sorted(BENCHMARK_SUBSETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="trackers compared")
    parser.add_argument("--checkpoint", help="weights for tiny-synthetic (default: the shipped file)")
    parser.add_argument("--auto-videos", type=int, default=1, help="mixed videos for the association comparison")
    parser.add_argument("--keyframe-every", type=int, default=15, help="automatic mode: propose every N frames")
    parser.add_argument(
        "--association-head", help="association-head safetensors for the 'learned' rule (default: the shipped file)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--workdir", help="keep the benchmark videos here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        t0 = time.perf_counter()
        quality, quality_md = box_prompt_table(args, root)
        assoc, assoc_md = association_table(args, root) if args.auto_videos > 0 else ([], "")
        wall = time.perf_counter() - t0
    print()
    print(
        f"Held-out synthetic benchmark (seed {args.seed}, {args.videos} video(s) x {args.frames} frames per subset, "
        f"320x240, box prompts from prompts.jsonl, torch threads {args.threads}):\n"
    )
    print(quality_md)
    if assoc_md:
        print(
            f"\nAutomatic mode (no prompts), tiny-synthetic, {args.auto_videos} mixed video(s) x {args.frames} frames, "
            f"keyframe every {args.keyframe_every}; ID switches / coverage at IoU >= 0.5 against ground truth:\n"
        )
        print(assoc_md)
    print(f"\nwall time {wall:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"quality": quality, "association": assoc, "wall_s": wall}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
