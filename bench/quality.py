"""Tracking quality on the test split: the shipped model against the classical baselines, with intervals.

The protocol (batchtrack.synthetic.splits): training draws scene seeds from TRAIN, checkpoints are
chosen on VALIDATION, and this benchmark reads TEST only, once per shipped model. Nothing here is
used to choose weights or settings.

Part 1 (box prompts): the first --videos test videos of each subset (`make_split_videos`); every tracker
runs on the same decoded frames; DAVIS J, F and J&F over the objects (frames after each object's
box-prompt frame), each with a bootstrap 90% interval that resamples videos (objects of one video are
not independent), and tracking frames/s measured in the same run (decoding excluded). Then the paired
difference tiny-synthetic minus the better baseline per subset (same resampled videos), and the
re-acquisition figure (batchtrack.eval.reacquisition): of the spans where a prompted object is fully
hidden for >= 10 frames, the share found again (IoU >= 0.5) within 5 frames of its return.

Part 2 (automatic mode, no prompts): `AutoTracker` with the geometric IoU association against the learned
association head, on the first --auto-videos test videos of the mixed subset. Each predicted track set is
scored against the ground truth with `count_id_switches` (per frame, GT objects matched one-to-one to
tracks at IoU >= 0.5) and coverage (the fraction of visible GT (frame, object) pairs that are matched).

--write-record (only with the shipped weights) writes batchtrack/weights/tiny-synthetic.test.json, which
`make demo` prints.

Usage (the README's table: about 15 minutes on 2 CPUs):
    python bench/quality.py [--videos 10] [--frames 60] [--threads 2] [--auto-videos 2]
        [--subsets occlusion deformation fast_motion camera_motion mixed]
        [--checkpoint FILE] [--association-head FILE] [--workdir DIR] [--json OUT] [--write-record]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from batchtrack.baselines import build_baseline
from batchtrack.eval.bootstrap import Interval, bootstrap_mean
from batchtrack.eval.evaluate import score_video, track_corpus
from batchtrack.eval.identity import count_id_switches, match_frame
from batchtrack.eval.protocol import write_protocol_record
from batchtrack.eval.reacquisition import Reacquisition, count_reacquisitions
from batchtrack.io.video import iter_frames
from batchtrack.model.loading.build import WEIGHTS_DIR, build_tracker, shipped_weights
from batchtrack.model.modes.association import AssociationHead, load_association_head
from batchtrack.model.modes.auto import AutoTrackConfig, AutoTracker
from batchtrack.model.types import Prompt
from batchtrack.synthetic.corpus import BENCHMARK_SUBSETS
from batchtrack.synthetic.ground_truth import ground_truth_path, read_ground_truth
from batchtrack.synthetic.splits import TEST, make_split_videos

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


@dataclass
class _Scores:
    """One (subset, model): per-video object scores, re-acquisitions and timing."""

    j: dict[str, list[float]] = field(default_factory=dict)
    f: dict[str, list[float]] = field(default_factory=dict)
    jf: dict[str, list[float]] = field(default_factory=dict)
    reacquisition: Reacquisition = field(default_factory=lambda: Reacquisition(0, 0))
    frames: int = 0
    seconds: float = 0.0


def _score(tracker: Any, folder: Path) -> _Scores:
    scores = _Scores()
    for video in track_corpus(tracker, folder):
        objects = score_video(video.stem, video.gt, video.predicted, video.first_frames)
        scores.j[video.stem] = [o.j for o in objects]
        scores.f[video.stem] = [o.f for o in objects]
        scores.jf[video.stem] = [o.jf for o in objects]
        scores.reacquisition += count_reacquisitions(video.gt, video.predicted, video.first_frames)
        scores.frames += video.num_frames
        scores.seconds += video.seconds
    return scores


def _paired_difference(a: _Scores, b: _Scores) -> Interval:
    return bootstrap_mean([[x - y for x, y in zip(a.jf[v], b.jf[v], strict=True)] for v in a.jf])


def box_prompt_table(args: argparse.Namespace, root: Path) -> tuple[dict[str, Any], str]:
    rows: list[dict[str, Any]] = []
    trackers = {model: _tracker(model, args.checkpoint) for model in args.models}
    for tracker in trackers.values():
        _warm_up(tracker)
    results: dict[tuple[str, str], _Scores] = {}
    for subset in args.subsets:
        folder = root / subset
        make_split_videos(
            folder, TEST, subset, args.videos, width=args.width, height=args.height, num_frames=args.frames
        )
        for model in args.models:
            scores = results[(subset, model)] = _score(trackers[model], folder)
            j, f, jf = (
                bootstrap_mean(scores.j.values()),
                bootstrap_mean(scores.f.values()),
                bootstrap_mean(scores.jf.values()),
            )
            rows.append(
                {
                    "subset": subset,
                    "model": model,
                    "videos": len(scores.jf),
                    "objects": sum(len(v) for v in scores.jf.values()),
                    "J": j.estimate,
                    "F": f.estimate,
                    "J&F": jf.estimate,
                    "J&F_low": jf.low,
                    "J&F_high": jf.high,
                    "fps": scores.frames / scores.seconds if scores.seconds > 0 else None,
                }
            )
            print(f"  {subset:<14} {model:<20} J&F {jf}", flush=True)
    lines = [
        "| subset | model | videos | objects | J | F | J&F [90% interval] | frames/s |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        fps = f"{r['fps']:.1f}" if r["fps"] is not None else "-"
        lines.append(
            f"| {r['subset']} | {r['model']} | {r['videos']} | {r['objects']} | {r['J']:.3f} | {r['F']:.3f} | "
            f"{r['J&F']:.3f} [{r['J&F_low']:.3f}, {r['J&F_high']:.3f}] | {fps} |"
        )

    reacquisition: dict[str, dict[str, int]] = {}
    lines += [
        "",
        "| model | re-acquired / hidden spans (>= 10 frames hidden, found within 5) | share |",
        "|---|---:|---:|",
    ]
    for model in args.models:
        total = Reacquisition(0, 0)
        for subset in args.subsets:
            total += results[(subset, model)].reacquisition
        reacquisition[model] = {"found": total.found, "spans": total.spans}
        share = f"{total.share:.0%}" if total.spans else "-"
        lines.append(f"| {model} | {total.found} / {total.spans} | {share} |")

    differences: list[dict[str, Any]] = []
    baselines = [m for m in args.models if m.startswith("baseline-")]
    if "tiny-synthetic" in args.models and baselines:
        lines += ["", "| subset | tiny-synthetic minus the better baseline (paired, 90% interval) |", "|---|---|"]
        for subset in args.subsets:
            best = max(baselines, key=lambda m: bootstrap_mean(results[(subset, m)].jf.values()).estimate)
            diff = _paired_difference(results[(subset, "tiny-synthetic")], results[(subset, best)])
            differences.append(
                {"subset": subset, "baseline": best, "difference": diff.estimate, "low": diff.low, "high": diff.high}
            )
            lines.append(f"| {subset} | {diff} vs {best} |")
    tables = {"rows": rows, "reacquisition": reacquisition, "differences": differences}
    return tables, "\n".join(lines)


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
    made = make_split_videos(
        folder, TEST, "mixed", args.auto_videos, width=args.width, height=args.height, num_frames=args.frames
    )
    videos = [v.video_path for v in made]
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
            lines.append(f"| {r['association']} | {r['id_switches']} | {r['coverage']:.1%} | {r['tracks']} | {fps} |")
    return rows, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10, help="test videos per subset")
    parser.add_argument("--frames", type=int, default=60, help="frames per test video")
    parser.add_argument("--width", type=int, default=320, help="test video width")
    parser.add_argument("--height", type=int, default=240, help="test video height")
    parser.add_argument("--subsets", nargs="+", default=list(BENCHMARK_SUBSETS), choices=sorted(BENCHMARK_SUBSETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="trackers compared")
    parser.add_argument("--checkpoint", help="weights for tiny-synthetic (default: the shipped file)")
    parser.add_argument("--auto-videos", type=int, default=1, help="mixed test videos for the association comparison")
    parser.add_argument("--keyframe-every", type=int, default=15, help="automatic mode: propose every N frames")
    parser.add_argument(
        "--association-head", help="association-head safetensors for the 'learned' rule (default: the shipped file)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--workdir", help="keep the test videos here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument(
        "--write-record", action="store_true", help="write weights/tiny-synthetic.test.json (shipped weights only)"
    )
    args = parser.parse_args(argv)
    if args.write_record and args.checkpoint:
        parser.error("--write-record records the shipped weights; drop --checkpoint")
    torch.set_num_threads(args.threads)

    protocol = (
        f"test split seeds from {TEST.start}, {args.videos} video(s) x {args.frames} frames per subset, "
        f"{args.width}x{args.height}, box prompts, bootstrap 90% intervals over videos"
    )
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        t0 = time.perf_counter()
        quality, quality_md = box_prompt_table(args, root)
        assoc, assoc_md = association_table(args, root) if args.auto_videos > 0 else ([], "")
        wall = time.perf_counter() - t0
    print()
    print(f"Test split ({protocol}, torch threads {args.threads}):\n")
    print(quality_md)
    if assoc_md:
        print(
            f"\nAutomatic mode (no prompts), tiny-synthetic, {args.auto_videos} mixed test video(s) x {args.frames} "
            f"frames, keyframe every {args.keyframe_every}; ID switches / coverage at IoU >= 0.5 against the truth:\n"
        )
        print(assoc_md)
    print(f"\nwall time {wall:.0f} s")
    results = {**quality, "association": assoc, "wall_s": wall, "protocol": protocol}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    weights = shipped_weights("tiny-synthetic")
    if args.write_record and weights is not None:
        command = "python bench/quality.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        path = write_protocol_record(weights, {**results, "command": command})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
