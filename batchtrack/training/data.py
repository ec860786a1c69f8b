"""Synthetic training clips, rendered on the fly as tensors (no video files in between).

Every clip is a pure function of (seed, rank, step, index in batch): a scene is drawn with random
parameters from `batchtrack.synthetic`, a window of `clip_frames` frames is rendered with its exact
masks, and the objects visible on the first frame (the prompted frame) are the ones trained on.
Workers of a distributed run see different clips because their rank is part of the seed.

Letters: T frames, N objects, H x W pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from batchtrack.synthetic.render import render_frame
from batchtrack.synthetic.scene import Scene, SceneSpec
from batchtrack.synthetic.splits import TRAIN
from batchtrack.training.config import DataSpec

# Objects smaller than this fraction of the frame on the prompted frame are not trained on:
# a box around a few pixels says little, and SAM's decoder cannot resolve them at stride 4 anyway.
MIN_PROMPT_AREA_FRACTION = 0.004
_MAX_SCENE_TRIES = 20


@dataclass
class TrainingClip:
    """One training clip: frames, the masks of the objects trained on, and their frame-0 prompts."""

    frames: torch.Tensor  # (T, H, W, 3) uint8 RGB
    masks: torch.Tensor  # (T, N, H, W) bool, visible part of each object
    object_ids: list[int]  # (N,)
    boxes: torch.Tensor  # (N, 4) float32 x0, y0, x1, y1 in pixels: the frame-0 box prompts
    prompt_masks: torch.Tensor | None  # (N, H, W) bool frame-0 mask prompts, or None to prompt with the boxes
    # For the association loss: a click inside each visible object on every frame ((-1, -1) when hidden),
    # as automatic mode's grid clicks land on objects, and one track per frame left out to stand for
    # "a new object" (-1: none left out).
    clicks: torch.Tensor  # (T, N, 2) float32 x, y in pixels
    left_out: torch.Tensor  # (T,) int64 object index or -1
    # Frame-0 positive clicks (P per object, the same P for all: inference batches objects by click
    # count), used instead of the boxes when set; None otherwise. x, y in pixels, on the object.
    prompt_points: torch.Tensor | None = None  # (N, P, 2) float32

    def to(self, device: torch.device) -> TrainingClip:
        return TrainingClip(
            frames=self.frames.to(device),
            masks=self.masks.to(device),
            object_ids=self.object_ids,
            boxes=self.boxes.to(device),
            prompt_masks=None if self.prompt_masks is None else self.prompt_masks.to(device),
            clicks=self.clicks.to(device),
            left_out=self.left_out.to(device),
            prompt_points=None if self.prompt_points is None else self.prompt_points.to(device),
        )


@dataclass
class ClipBatch:
    """The clips of one optimizer step on one worker."""

    clips: list[TrainingClip]

    def to(self, device: torch.device) -> ClipBatch:
        return ClipBatch([clip.to(device) for clip in self.clips])


def mask_box(mask: np.ndarray) -> np.ndarray:
    """(4,) float32 x0, y0, x1, y1 box of a non-empty (H, W) bool mask, in pixel-edge coordinates."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def _jitter_box(rng: np.random.Generator, box: np.ndarray, amount: float, width: int, height: int) -> np.ndarray:
    if amount <= 0:
        return box
    side = np.array([box[2] - box[0], box[3] - box[1]] * 2, dtype=np.float32)
    moved = box + rng.uniform(-amount, amount, 4).astype(np.float32) * side
    moved = np.clip(moved, 0, [width, height, width, height]).astype(np.float32)
    if moved[2] - moved[0] < 1 or moved[3] - moved[1] < 1:
        return box
    return moved


def _scene_spec(rng: np.random.Generator, spec: DataSpec) -> SceneSpec:
    """Scene parameters spread over the range the synthetic benchmark uses, so the model sees it all."""
    return SceneSpec(
        seed=TRAIN.draw(rng),  # never a validation or test scene (batchtrack.synthetic.splits)
        width=spec.width,
        height=spec.height,
        num_frames=spec.scene_frames,
        num_objects=int(rng.integers(spec.min_objects, spec.max_objects + 1)),
        object_size=float(rng.uniform(0.15, 0.4)),
        speed=float(rng.uniform(0.004, 0.045)),
        rotation=float(rng.uniform(0.0, 6.0)),
        scaling=float(rng.uniform(0.0, 0.35)),
        deformation=float(rng.uniform(0.0, 1.0)),
        occlusion=float(rng.uniform(*spec.occlusion)),
        exit_prob=float(rng.uniform(0.0, 0.4)),
        camera_motion=float(rng.uniform(0.0, 1.0)),
        noise_std=float(rng.uniform(0.0, 4.0)),
    )


def _positive_clicks(rng: np.random.Generator, masks: np.ndarray, count: int) -> np.ndarray:
    """(N, count, 2) float32 x, y pixel centres drawn uniformly inside each (H, W) mask of `masks` (N, H, W)."""
    out = np.zeros((masks.shape[0], count, 2), dtype=np.float32)
    for n, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        picks = rng.integers(0, len(xs), count)
        out[n, :, 0] = xs[picks]
        out[n, :, 1] = ys[picks]
    return out


def make_clip(spec: DataSpec, rng: np.random.Generator, clip_frames: int | None = None) -> TrainingClip:
    """Render one training clip whose first frame shows at least one object large enough to prompt.

    `clip_frames` overrides `spec.clip_frames` (1: the prompted frame alone, for a curriculum).
    """
    num_frames = spec.clip_frames if clip_frames is None else clip_frames
    min_area = MIN_PROMPT_AREA_FRACTION * spec.width * spec.height
    for _ in range(_MAX_SCENE_TRIES):
        scene = Scene.from_spec(_scene_spec(rng, spec))
        stride = int(rng.integers(1, spec.max_stride + 1))
        span = (num_frames - 1) * stride + 1
        start = int(rng.integers(0, spec.scene_frames - span + 1))
        first = render_frame(scene, start)
        areas = first.masks.reshape(len(first.object_ids), -1).sum(1)
        candidates = [i for i in range(len(first.object_ids)) if areas[i] >= min_area]
        if candidates:
            break
    else:
        raise RuntimeError(f"no synthetic scene with a promptable object in {_MAX_SCENE_TRIES} tries")
    rng.shuffle(candidates)
    chosen = sorted(candidates[: spec.max_tracked_objects])
    rendered = [first] + [render_frame(scene, start + k * stride) for k in range(1, num_frames)]
    frames = np.stack([f.image for f in rendered])  # (T, H, W, 3)
    masks = np.stack([f.masks[chosen] for f in rendered])  # (T, N, H, W)
    boxes = np.stack(
        [_jitter_box(rng, mask_box(masks[0, n]), spec.box_jitter, spec.width, spec.height) for n in range(len(chosen))]
    )  # (N, 4)
    use_mask = rng.random() < spec.mask_prompt_fraction
    # Drawn after everything above, so adding them left the frames, masks and prompts of a seed unchanged.
    clicks = np.full((num_frames, len(chosen), 2), -1.0, dtype=np.float32)
    for t in range(num_frames):
        for n in range(len(chosen)):
            ys, xs = np.nonzero(masks[t, n])
            if len(xs):
                k = int(rng.integers(len(xs)))
                clicks[t, n] = (xs[k], ys[k])
    # With a single object, leaving its track out would leave the head one column: nothing to learn.
    leave = (rng.random(num_frames) < 0.5) & (len(chosen) > 1)
    left_out = np.where(leave, rng.integers(0, len(chosen), num_frames), -1).astype(np.int64)
    # Click prompts: drawn last as well (a seed's clips without them are unchanged).
    points = None
    if spec.click_prompt_fraction > 0 and not use_mask and rng.random() < spec.click_prompt_fraction:
        points = _positive_clicks(rng, masks[0], int(rng.integers(1, spec.max_clicks + 1)))
    return TrainingClip(
        frames=torch.from_numpy(frames),
        masks=torch.from_numpy(masks),
        object_ids=[first.object_ids[i] for i in chosen],
        boxes=torch.from_numpy(boxes),
        prompt_masks=torch.from_numpy(masks[0].copy()) if use_mask else None,
        clicks=torch.from_numpy(clicks),
        left_out=torch.from_numpy(left_out),
        prompt_points=None if points is None else torch.from_numpy(points),
    )


def make_batch(
    spec: DataSpec, *, seed: int, step: int, rank: int = 0, batch_clips: int = 1, clip_frames: int | None = None
) -> ClipBatch:
    """The clips of optimizer step `step` on worker `rank` (deterministic in all its arguments)."""
    clips = []
    for index in range(batch_clips):
        rng = np.random.default_rng([seed, rank, step, index])
        clips.append(make_clip(spec, rng, clip_frames))
    return ClipBatch(clips)
