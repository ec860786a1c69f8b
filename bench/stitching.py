"""Does cutting a video into clips and stitching them cost identity? ID switches, stitched vs sequential.

On synthetic videos with exact ground truth, the tracker runs
- sequential: one clip over the whole video, prompted with GT boxes on frame 0;
- stitched: clips of --clip-frames with --overlap frames shared, each clip tracked on its own and
  prompted with GT boxes on its first frame under shuffled per-clip ids (as a detector without
  identity would give them); `stitch_video` then links the clips into video-level track ids;
- unstitched: the same clips with their per-clip ids taken as they are (what stitching fixes);
- with --auto also automatic mode per clip (no prompts at all) + stitching;
- with --reid C also stitching with pointer re-identification (cosine >= C) across gaps.
ID switches are counted against the GT (`count_id_switches`: per frame, GT objects matched to
predicted tracks at IoU >= 0.5); coverage is the fraction of visible GT (frame, object) pairs
matched. Frames shared by two clips are taken from the earlier clip.

Usage: python bench/stitching.py [--model tiny-synthetic] [--videos 2] [--frames 60] [--clip-frames 20] [--overlap 4]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from batchtrack.model.auto import AutoTrackConfig, AutoTracker
from batchtrack.model.build import build_tracker
from batchtrack.model.types import FrameResult, Prompt
from batchtrack.pipeline.stitch import ClipOverlapData, count_id_switches, match_frame, stitch_video
from batchtrack.synthetic.render import render_frames
from batchtrack.synthetic.scene import Scene, SceneSpec

FrameMasks = dict[int, dict[int, np.ndarray]]


@dataclass
class Score:
    id_switches: int = 0
    matched: int = 0
    visible: int = 0
    seconds: float = 0.0

    def add(self, pred: FrameMasks, gt: FrameMasks, seconds: float) -> None:
        self.id_switches += count_id_switches(pred, gt)
        self.matched += _matched_pairs(pred, gt)
        self.visible += sum(int(m.any()) for objs in gt.values() for m in objs.values())
        self.seconds += seconds

    def row(self, name: str) -> str:
        cover = self.matched / max(self.visible, 1)
        return f"{name:<14} id_switches {self.id_switches:>4}   coverage {cover:6.1%}   tracking {self.seconds:7.1f} s"


def _matched_pairs(pred: FrameMasks, gt: FrameMasks) -> int:
    return sum(len(match_frame(pred.get(f, {}), gt[f], 0.5)) for f in gt)


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def _gt_prompts(gt: FrameMasks, frame: int, ids: dict[int, int]) -> list[Prompt]:
    return [Prompt(frame_index=frame, object_id=ids[o], box=_box(m)) for o, m in sorted(gt[frame].items()) if m.any()]


def _masks(results: list[FrameResult]) -> FrameMasks:
    return {r.frame_index: {o: (r.mask_logits[i] > 0).numpy() for i, o in enumerate(r.object_ids)} for r in results}


def _run(tracker: Any, frames: list[tuple[int, np.ndarray]], prompts: list[Prompt]) -> tuple:
    start = time.perf_counter()
    results = list(tracker.track(frames, prompts))
    return results, time.perf_counter() - start


def clip_ranges(num_frames: int, length: int, overlap: int) -> list[tuple[int, int]]:
    ranges, start = [], 0
    while True:
        end = min(start + length, num_frames)
        ranges.append((start, end))
        if end == num_frames:
            return ranges
        start = end - overlap


def bench_video(
    spec: SceneSpec, tracker: Any, args: argparse.Namespace, scores: dict[str, Score], rng: np.random.Generator
) -> None:
    rendered = list(render_frames(Scene.from_spec(spec)))
    frames = [(r.frame_index, r.image) for r in rendered]
    gt: FrameMasks = {r.frame_index: dict(zip(r.object_ids, r.masks, strict=True)) for r in rendered}

    identity = {o: o for o in gt[0]}
    results, seconds = _run(tracker, frames, _gt_prompts(gt, 0, identity))
    scores["sequential"].add(_masks(results), gt, seconds)

    modes: list[tuple[str, Any]] = [("stitched", tracker)]
    if args.auto:
        modes.append(("auto", AutoTracker(tracker, AutoTrackConfig(keyframe_every=args.keyframe_every))))
    for mode, runner in modes:
        clips: list[ClipOverlapData] = []
        per_clip: dict[str, FrameMasks] = {}
        seconds = 0.0
        for start, end in clip_ranges(spec.num_frames, args.clip_frames, args.overlap):
            clip_id = f"{start}-{end}"
            shuffled = {o: int(n) for o, n in zip(sorted(gt[start]), rng.permutation(100), strict=False)}
            prompts = _gt_prompts(gt, start, shuffled) if mode == "stitched" else []
            results, took = _run(runner, frames[start:end], prompts)
            seconds += took
            masks = _masks(results)
            per_clip[clip_id] = masks
            shared = [f for f in masks if f < start + args.overlap or f >= end - args.overlap]
            objects = {o for f in masks for o in masks[f]}
            pointers = {r.frame_index: dict(zip(r.object_ids, r.object_pointers.numpy(), strict=True)) for r in results}
            clips.append(
                ClipOverlapData(
                    clip_id,
                    start,
                    end,
                    masks={o: {f: masks[f][o] for f in shared if o in masks[f]} for o in objects},
                    pointers={o: {f: pointers[f][o] for f in shared if o in pointers[f]} for o in objects},
                    signatures={
                        o: np.mean([pointers[f][o] for f in masks if o in masks[f] and masks[f][o].any()], axis=0)
                        for o in objects
                        if any(o in masks[f] and masks[f][o].any() for f in masks)
                    },
                    first_frames={
                        o: min((f for f in masks if o in masks[f] and masks[f][o].any()), default=end) for o in objects
                    },
                )
            )
        track_ids = stitch_video(clips)
        variants = [(mode, track_ids), (f"{mode}-raw", {key: key[1] for key in track_ids})]
        if args.reid is not None:
            variants.append((f"{mode}+reid", stitch_video(clips, reid_min_cosine=args.reid)))
        for name, ids in variants:
            pred: FrameMasks = {}
            for clip in clips:
                for f, objs in per_clip[clip.clip_id].items():
                    pred.setdefault(f, {ids[(clip.clip_id, o)]: m for o, m in objs.items()})
            scores.setdefault(name, Score()).add(pred, gt, seconds if name == mode else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-synthetic")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--clip-frames", type=int, default=20)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--auto", action="store_true", help="also run automatic mode per clip")
    parser.add_argument("--keyframe-every", type=int, default=10)
    parser.add_argument("--reid", type=float, default=None, help="also stitch with pointer re-identification")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model.startswith("baseline-"):
        from batchtrack.eval.baselines import build_baseline

        if args.auto:
            parser.error("--auto needs a SAM-style model, not a classical baseline")
        tracker = build_baseline(args.model)
    else:
        tracker = build_tracker(args.model, checkpoint=args.checkpoint, device=args.device)
    print(
        f"model={args.model} device={getattr(tracker, 'device', 'cpu')} threads={torch.get_num_threads()} "
        f"videos={args.videos} frames={args.frames} clip={args.clip_frames} overlap={args.overlap}"
    )
    rng = np.random.default_rng(args.seed)
    scores: dict[str, Score] = {"sequential": Score()}
    for v in range(args.videos):
        spec = SceneSpec(
            seed=int(rng.integers(2**31)), width=args.width, height=args.height, num_frames=args.frames, num_objects=3
        )
        bench_video(spec, tracker, args, scores, rng)
        print(f"video {v}: done")
    for name, score in scores.items():
        print(score.row(name))


if __name__ == "__main__":
    main()
