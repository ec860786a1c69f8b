"""Clip planning: a probed video and its prompts → fixed-length, overlapping clips with deterministic ids.

A clip id hashes everything that determines the clip's output (video, span, model, checkpoint, the
clip's prompts, and for a clip without prompts the automatic-mode settings), so a rerun of the same
job finds the same ids and skips what is committed, while a change of model, weights, prompts or
mode produces new ids instead of mixing old and new rows.

A clip is tracked in one of two modes: `prompted` (it has prompts on its frames; object ids are
the prompts' ids) or `auto` (no prompt on its frames: objects are found on keyframes and get
clip-local ids that the stitching post-pass turns into video-level track ids).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from batchtrack.config import AutoConfig, ClipPlanConfig
from batchtrack.io.corpus import VideoRef, stable_hash
from batchtrack.io.prompts import PromptRecord, prompt_set_hash, prompts_in_range

if TYPE_CHECKING:
    from batchtrack.io.video import VideoInfo

log = logging.getLogger(__name__)

ClipMode = Literal["prompted", "auto"]
CLIP_MODES: tuple[ClipMode, ...] = ("prompted", "auto")


@dataclass(frozen=True)
class ModelKey:
    """The parts of the model that change outputs: its name and the hash of its weights."""

    name: str
    checkpoint_hash: str


@dataclass(frozen=True)
class ClipSpec:
    """One clip to track: frames [start, end) of a video, with the prompts whose frame lies inside."""

    video_id: str
    video_uri: str
    clip_id: str
    start: int
    end: int
    fps: float
    width: int
    height: int
    model: ModelKey
    prompts: tuple[PromptRecord, ...] = field(default=())
    mode: ClipMode = "prompted"

    @property
    def num_frames(self) -> int:
        return self.end - self.start

    def to_json(self) -> str:
        """A compact JSON form: what travels through Ray Data as one string column."""
        data: dict[str, Any] = {
            "video_id": self.video_id,
            "video_uri": self.video_uri,
            "clip_id": self.clip_id,
            "start": self.start,
            "end": self.end,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "model": {"name": self.model.name, "checkpoint_hash": self.model.checkpoint_hash},
            "prompts": [p.canonical() for p in self.prompts],
            "mode": self.mode,
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ClipSpec:
        data = json.loads(text)
        return cls(
            video_id=data["video_id"],
            video_uri=data["video_uri"],
            clip_id=data["clip_id"],
            start=int(data["start"]),
            end=int(data["end"]),
            fps=float(data["fps"]),
            width=int(data["width"]),
            height=int(data["height"]),
            model=ModelKey(**data["model"]),
            prompts=tuple(PromptRecord.model_validate(p) for p in data["prompts"]),
            mode=_mode(data.get("mode", "prompted")),
        )


def _mode(value: str) -> ClipMode:
    if value == "auto":
        return "auto"
    if value == "prompted":
        return "prompted"
    raise ValueError(f"clip mode must be one of {CLIP_MODES}, got {value!r}")


def clip_length(cfg: ClipPlanConfig, fps: float) -> int:
    """Frames per clip: `length_frames` if set, else `length_s` at the video's frame rate (at least 2).

    >>> clip_length(ClipPlanConfig(length_s=2.0), fps=25.0)
    50
    """
    if cfg.length_frames is not None:
        return cfg.length_frames
    return max(2, round(cfg.length_s * fps)) if fps > 0 else max(2, round(cfg.length_s * 30))


def clip_spans(num_frames: int, length: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) spans covering [0, num_frames), `length` frames each, consecutive ones sharing `overlap`.

    The overlap is capped at half a clip so every clip advances. The last clip may be shorter.

    >>> clip_spans(10, 4, 1)
    [(0, 4), (3, 7), (6, 10)]
    >>> clip_spans(3, 10, 2)
    [(0, 3)]
    """
    if num_frames <= 0:
        return []
    overlap = min(overlap, length // 2)
    spans = []
    start = 0
    while True:
        end = min(start + length, num_frames)
        spans.append((start, end))
        if end >= num_frames:
            return spans
        start = end - overlap


def make_clip_id(
    video_id: str,
    start: int,
    end: int,
    model: ModelKey,
    prompts: Sequence[PromptRecord],
    auto_key: str | None = None,
) -> str:
    """Deterministic 16-hex clip id from everything that determines the clip's output.

    `auto_key` (from `auto_mode_key`) is given for clips tracked in automatic mode; prompted clips
    leave it out, so their ids do not depend on the automatic-mode settings.
    """
    parts: list[object] = [video_id, start, end, model.name, model.checkpoint_hash, prompt_set_hash(prompts)]
    if auto_key is not None:
        parts += ["auto", auto_key]
    return stable_hash(*parts)


def auto_mode_key(auto: AutoConfig) -> str:
    """The automatic-mode settings that change a clip's output, as a canonical string for clip ids.

    >>> auto_mode_key(AutoConfig()) == auto_mode_key(AutoConfig(enabled=False))
    True
    >>> auto_mode_key(AutoConfig()) == auto_mode_key(AutoConfig(keyframe_every=5))
    False
    """
    return json.dumps(auto.model_dump(mode="json", exclude={"enabled"}), sort_keys=True, separators=(",", ":"))


def video_clip_id(video_id: str, reason: str, model: ModelKey) -> str:
    """Id of the single row that stands for a whole video that was not cut into clips (probe failed, no prompts)."""
    return stable_hash(video_id, reason, model.name, model.checkpoint_hash)


def plan_video(
    ref: VideoRef,
    info: VideoInfo,
    prompts: Sequence[PromptRecord],
    cfg: ClipPlanConfig,
    model: ModelKey,
    auto_key: str | None = None,
) -> list[ClipSpec]:
    """All clips of one video, each carrying the prompts on its frames (possibly none).

    With `auto_key` (automatic mode available), a clip without prompts is planned in mode `auto`
    with an id that includes the key; without it, such a clip stays `prompted` with no prompts
    (the job records it as skipped).
    """
    beyond = [p for p in prompts if p.frame >= info.num_frames]
    if beyond:
        log.warning(
            "%s: %d prompt(s) on frames >= %d (the video's length) are ignored, e.g. object %d on frame %d",
            ref.uri, len(beyond), info.num_frames, beyond[0].object_id, beyond[0].frame,
        )
    clips = []
    for start, end in clip_spans(info.num_frames, clip_length(cfg, info.fps), cfg.overlap_frames):
        inside = prompts_in_range(prompts, start, end)
        auto = not inside and auto_key is not None
        clips.append(
            ClipSpec(
                video_id=ref.video_id,
                video_uri=ref.uri,
                clip_id=make_clip_id(ref.video_id, start, end, model, inside, auto_key if auto else None),
                start=start,
                end=end,
                fps=info.fps,
                width=info.width,
                height=info.height,
                model=model,
                prompts=tuple(inside),
                mode="auto" if auto else "prompted",
            )
        )
    return clips
