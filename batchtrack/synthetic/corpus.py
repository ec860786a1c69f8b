"""Synthetic corpora on disk: videos, their ground truth and a prompt manifest.

A corpus folder holds `NAME.mp4` + `NAME.gt.parquet` per video and one `prompts.jsonl` with a box per
object, taken from the ground truth on the first frame where the object is visible.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchtrack.errors import ConfigError
from batchtrack.io.rle import mask_bbox
from batchtrack.synthetic.encode import write_mp4
from batchtrack.synthetic.ground_truth import GtRow, frame_rows, ground_truth_path, write_ground_truth
from batchtrack.synthetic.render import render_frame
from batchtrack.synthetic.scene import Scene, SceneSpec

PROMPTS_FILE = "prompts.jsonl"

# A prompt on a sliver of an object (a few pixels peeking in at the border) is not a fair start.
MIN_PROMPT_AREA = 64

# Knobs of each benchmark subset; everything else keeps SceneSpec's defaults.
BENCHMARK_SUBSETS: dict[str, dict[str, float]] = {
    "occlusion": {"occlusion": 1.0, "exit_prob": 0.0, "camera_motion": 0.1, "deformation": 0.1},
    "deformation": {"deformation": 1.0, "scaling": 0.35, "occlusion": 0.1, "exit_prob": 0.0, "camera_motion": 0.1},
    "fast_motion": {"speed": 0.045, "rotation": 6.0, "occlusion": 0.2, "exit_prob": 0.3, "camera_motion": 0.1},
    "camera_motion": {"camera_motion": 1.0, "occlusion": 0.1, "exit_prob": 0.0, "deformation": 0.1},
    "mixed": {"occlusion": 0.5, "deformation": 0.5, "exit_prob": 0.3, "camera_motion": 0.5, "speed": 0.02},
}


@dataclass(frozen=True)
class BoxPrompt:
    """A box prompt from the ground truth: the object's box on its first well-visible frame."""

    frame_index: int
    object_id: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (x1, y1 exclusive)


@dataclass(frozen=True)
class SyntheticVideo:
    """A written synthetic video and what it takes to track it."""

    video_path: Path
    gt_path: Path
    spec: SceneSpec
    prompts: list[BoxPrompt]


def write_synthetic_video(
    spec: SceneSpec,
    out_dir: Path,
    name: str,
    *,
    min_prompt_area: int = MIN_PROMPT_AREA,
    crf: int = 18,
    gop: int = 30,
) -> SyntheticVideo:
    """Render `spec` to `out_dir/NAME.mp4` and `out_dir/NAME.gt.parquet`; return it with its box prompts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = Scene.from_spec(spec)
    video_path = out_dir / f"{name}.mp4"
    gt_path = ground_truth_path(video_path)
    prompts: dict[int, BoxPrompt] = {}
    gt_rows: list[GtRow] = []

    def images() -> Iterator[np.ndarray]:
        for t in range(spec.num_frames):
            rendered = render_frame(scene, t)
            gt_rows.extend(frame_rows(t, rendered.object_ids, rendered.masks))
            for object_id, mask in zip(rendered.object_ids, rendered.masks, strict=True):
                if object_id not in prompts and int(mask.sum()) >= min_prompt_area:
                    x, y, w, h = mask_bbox(mask)
                    prompts[object_id] = BoxPrompt(t, object_id, (x, y, x + w, y + h))
            yield rendered.image

    written = write_mp4(video_path, images(), spec.fps, crf=crf, gop=gop)
    assert written == spec.num_frames
    write_ground_truth(gt_path, gt_rows)
    ordered = [prompts[i] for i in sorted(prompts)]
    return SyntheticVideo(video_path=video_path, gt_path=gt_path, spec=spec, prompts=ordered)


def write_prompts(path: Path, videos: list[SyntheticVideo]) -> None:
    """Write the prompt manifest; video paths are relative to the manifest's folder."""
    with path.open("w") as fh:
        for video in videos:
            relative = video.video_path.relative_to(path.parent).as_posix()
            for prompt in video.prompts:
                line = {
                    "video": relative,
                    "frame": prompt.frame_index,
                    "object_id": prompt.object_id,
                    "box": [float(v) for v in prompt.box],
                }
                fh.write(json.dumps(line) + "\n")


def make_demo_corpus(
    out_dir: Path | str,
    num_videos: int = 3,
    seed: int = 0,
    width: int = 320,
    height: int = 240,
    num_frames: int = 90,
) -> list[Path]:
    """Write `num_videos` mixed synthetic videos, their ground truth and `prompts.jsonl`; return the video paths."""
    if num_videos < 1:
        raise ConfigError(f"make_demo_corpus: num_videos must be at least 1, got {num_videos}")
    rng = np.random.default_rng(seed)
    return _write_corpus(Path(out_dir), rng, num_videos, "synthetic", width, height, num_frames, {})


def make_benchmark(
    out_dir: Path | str,
    subset: str,
    num_videos: int,
    seed: int,
    *,
    width: int = 320,
    height: int = 240,
    num_frames: int = 60,
) -> list[Path]:
    """Write a held-out benchmark subset (see `BENCHMARK_SUBSETS`) with ground truth and `prompts.jsonl`."""
    if subset not in BENCHMARK_SUBSETS:
        raise ConfigError(f"unknown benchmark subset {subset!r}; choose one of {sorted(BENCHMARK_SUBSETS)}")
    if num_videos < 1:
        raise ConfigError(f"make_benchmark: num_videos must be at least 1, got {num_videos}")
    # The subset name enters the seed, so subsets made with the same seed do not share scenes.
    subset_key = sum(ord(c) * 31**i for i, c in enumerate(subset)) % 2**31
    rng = np.random.default_rng([seed, subset_key])
    return _write_corpus(Path(out_dir), rng, num_videos, subset, width, height, num_frames, BENCHMARK_SUBSETS[subset])


def _write_corpus(
    out: Path,
    rng: np.random.Generator,
    num_videos: int,
    prefix: str,
    width: int,
    height: int,
    num_frames: int,
    knobs: Mapping[str, Any],
) -> list[Path]:
    """Draw `num_videos` scenes from `rng`, write them as `{prefix}_NNN` with ground truth and prompts.jsonl."""
    videos = []
    for index in range(num_videos):
        spec = SceneSpec(
            seed=int(rng.integers(2**31)),
            width=width,
            height=height,
            num_frames=num_frames,
            num_objects=int(rng.integers(2, 6)),
            **knobs,
        )
        videos.append(write_synthetic_video(spec, out, f"{prefix}_{index:03d}"))
    write_prompts(out / PROMPTS_FILE, videos)
    return [v.video_path for v in videos]
