"""Work units and clips: what one actor tracks in order, and the spans its rows are grouped by.

A work unit is one video, or several short videos, tracked in order by one actor: each video is
opened (downloaded) once and tracked in one pass, its memory bank carried from clip to clip, so a
prompted object or an automatic track continues through the whole video under one id. Clips are
fixed-length spans of a video: the granularity of clips/ rows, timings and failures.

Every id is a hash of what determines the output, so a rerun of the same job finds the same ids:

- `video_key`: the video, the model and its weights, the video's prompts, the mode (with the
  automatic-mode settings, or the concept set and the concept-mode settings that are not SAM 3's),
  the clip length, the seed and the sampling rate;
- `unit_id`: the video keys of its videos;
- `clip_id`: the video, the span, the model and the video's prompts and concepts (a prompt on any
  frame before the clip changes what the clip holds; other concepts make other rows, so a rerun with
  other concepts does not resume the old rows).

Units are formed from a listing partition's videos in their sorted order (`group_units`), which
needs only the sizes that listing returns: nothing is opened to plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from batchtrack.config import AutoConfig, ClipPlanConfig, ConceptConfig, UnitConfig
from batchtrack.io.corpus import VideoRef, stable_hash
from batchtrack.io.prompts import PromptRecord, canonical_concepts, prompt_set_hash

VideoMode = Literal["prompted", "auto", "concept", "skipped"]


@dataclass(frozen=True)
class ModelKey:
    """The parts of the model that change outputs: its name and the hash of its weights."""

    name: str
    checkpoint_hash: str


@dataclass(frozen=True)
class PlanSettings:
    """What every unit of a job shares: model, clip length, automatic mode, seed."""

    model: ModelKey
    clip: ClipPlanConfig
    auto_key: str | None  # automatic-mode settings (`auto_mode_key`); None when automatic mode is unavailable
    no_auto_reason: str | None  # why a video without prompts is skipped, when it is
    seed: int = 0
    concepts: tuple[str, ...] = ()  # noun phrases tracked in every video (--text), canonical
    sample_fps: float | None = None  # --sample-fps; None: every frame
    concept_key: str | None = None  # concept-mode settings off their defaults (`concept_mode_key`); None: none is


@dataclass(frozen=True)
class VideoTask:
    """One video of a work unit: where it is, its prompts, and how it is tracked."""

    ref: VideoRef
    prompts: tuple[PromptRecord, ...]
    mode: VideoMode
    key: str  # video_key: hash of everything that determines the video's rows
    reason: str | None = None  # why a `skipped` video is skipped
    concepts: tuple[str, ...] = ()  # noun phrases of a `concept` video, canonical (sorted, unique)

    @property
    def video_id(self) -> str:
        return self.ref.video_id

    def to_dict(self) -> dict[str, Any]:
        ref = self.ref
        return {
            "ref": [ref.video_id, ref.uri, ref.size, ref.etag],
            "prompts": [p.canonical() for p in self.prompts],
            "mode": self.mode,
            "key": self.key,
            "reason": self.reason,
            "concepts": list(self.concepts),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoTask:
        video_id, uri, size, etag = data["ref"]
        return cls(
            ref=VideoRef(video_id=video_id, uri=uri, size=int(size), etag=etag),
            prompts=tuple(PromptRecord.model_validate(p) for p in data["prompts"]),
            mode=data["mode"],
            key=data["key"],
            reason=data.get("reason"),
            concepts=tuple(data.get("concepts", ())),
        )


@dataclass(frozen=True)
class WorkUnit:
    """Videos one actor tracks in order and commits together (one file per output table)."""

    unit_id: str
    videos: tuple[VideoTask, ...]
    model: ModelKey
    clip: ClipPlanConfig
    seed: int = 0
    sample_fps: float | None = None  # track the frames nearest to this rate's grid; None: every frame

    def to_json(self) -> str:
        data = {
            "unit_id": self.unit_id,
            "videos": [v.to_dict() for v in self.videos],
            "model": [self.model.name, self.model.checkpoint_hash],
            "clip": self.clip.model_dump(mode="json"),
            "seed": self.seed,
            "sample_fps": self.sample_fps,
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkUnit:
        data = json.loads(text)
        return cls(
            unit_id=data["unit_id"],
            videos=tuple(VideoTask.from_dict(v) for v in data["videos"]),
            model=ModelKey(*data["model"]),
            clip=ClipPlanConfig.model_validate(data["clip"]),
            seed=int(data["seed"]),
            sample_fps=data.get("sample_fps"),
        )


def clip_length(cfg: ClipPlanConfig, fps: float) -> int:
    """Frames per clip: `length_frames` if set, else `length_s` at the video's frame rate (at least 2).

    >>> clip_length(ClipPlanConfig(length_s=2.0), fps=25.0)
    50
    """
    if cfg.length_frames is not None:
        return cfg.length_frames
    return max(2, round(cfg.length_s * fps)) if fps > 0 else max(2, round(cfg.length_s * 30))


def clip_spans(num_frames: int, length: int) -> list[tuple[int, int]]:
    """[start, end) spans of `length` frames tiling [0, num_frames) without overlap; the last may be shorter.

    >>> clip_spans(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    >>> clip_spans(3, 10)
    [(0, 3)]
    """
    return [(start, min(start + length, num_frames)) for start in range(0, max(num_frames, 0), length)]


def make_clip_id(video_key: str, start: int, end: int) -> str:
    """Deterministic 16-hex clip id: the video key (video, model, prompts, mode) and the span."""
    return stable_hash(video_key, start, end)


def video_clip_id(video_key: str, reason: str) -> str:
    """Id of the single row that stands for a whole video that was not cut into clips (unreadable, skipped)."""
    return stable_hash(video_key, reason)


def auto_mode_key(auto: AutoConfig) -> str:
    """The automatic-mode settings that change a video's output, as a canonical string for ids.

    >>> auto_mode_key(AutoConfig()) == auto_mode_key(AutoConfig(enabled=False))
    True
    >>> auto_mode_key(AutoConfig()) == auto_mode_key(AutoConfig(keyframe_every=5))
    False
    """
    return json.dumps(auto.model_dump(mode="json", exclude={"enabled"}), sort_keys=True, separators=(",", ":"))


def concept_mode_key(concept: ConceptConfig) -> str | None:
    """The concept-mode settings that differ from their defaults (SAM 3's), as a canonical string for ids; None when
    none does, so the ids of a job on the defaults are those of a job before the settings existed.

    >>> concept_mode_key(ConceptConfig()) is None and concept_mode_key(ConceptConfig(recondition_every=16)) is None
    True
    >>> concept_mode_key(ConceptConfig(recondition_every=2))
    '{"recondition_every":2}'
    """
    changed = concept.model_dump(mode="json", exclude_defaults=True)
    return json.dumps(changed, sort_keys=True, separators=(",", ":")) if changed else None


def plan_video(
    ref: VideoRef, prompts: Sequence[PromptRecord], settings: PlanSettings, concepts: Sequence[str] = ()
) -> VideoTask:
    """How one video is tracked: `concept` when it has concepts (the job's and its own, with any visual
    prompts), else `prompted` with its prompts, else `auto` when available, else `skipped`."""
    wanted = canonical_concepts([*settings.concepts, *concepts])
    if wanted:
        mode: VideoMode = "concept"
    elif prompts:
        mode = "prompted"
    elif settings.no_auto_reason is None:
        mode = "auto"
    else:
        mode = "skipped"
    model = settings.model
    parts: list[object] = [ref.video_id, model.name, model.checkpoint_hash, prompt_set_hash(prompts), mode]
    parts += [settings.clip.model_dump_json(), settings.seed]
    if mode == "auto":
        parts.append(settings.auto_key)
    if mode == "concept":
        parts.append(json.dumps(wanted))
        if settings.concept_key is not None:  # absent on the defaults, so their ids stay as they were
            parts.append(f"concept={settings.concept_key}")
    if settings.sample_fps is not None:  # absent at full rate, so full-rate ids stay as they were
        parts.append(f"sample_fps={settings.sample_fps!r}")
    reason = f"no prompts and {settings.no_auto_reason}" if mode == "skipped" else None
    ordered = tuple(sorted(prompts, key=lambda p: (p.frame, p.object_id)))
    return VideoTask(ref=ref, prompts=ordered, mode=mode, key=stable_hash(*parts), reason=reason, concepts=wanted)


def unit_id_of(videos: Sequence[VideoTask]) -> str:
    return stable_hash("unit", *(v.key for v in videos))


def group_units(videos: Iterable[VideoTask], cfg: UnitConfig) -> Iterator[list[VideoTask]]:
    """Consecutive videos grouped into units of at most `max_videos`, closed once their bytes reach `max_bytes`.

    A video of `max_bytes` or more is a unit of its own. The grouping depends only on the order and
    sizes of the videos, so the same listing gives the same units on every run.

    >>> from batchtrack.io.corpus import VideoRef
    >>> def task(n, size):
    ...     return VideoTask(VideoRef(str(n), f"v{n}.mp4", size, ""), (), "auto", str(n))
    >>> [[v.key for v in u] for u in group_units([task(i, s) for i, s in enumerate([1, 1, 9, 1, 1, 1])],
    ...                                          UnitConfig(max_videos=2, max_bytes=5))]
    [['0', '1'], ['2'], ['3', '4'], ['5']]
    """
    unit: list[VideoTask] = []
    size = 0
    for video in videos:
        if video.ref.size >= cfg.max_bytes and unit:
            yield unit
            unit, size = [], 0
        unit.append(video)
        size += max(video.ref.size, 0)
        if len(unit) >= cfg.max_videos or size >= cfg.max_bytes:
            yield unit
            unit, size = [], 0
    if unit:
        yield unit


def make_unit(videos: Sequence[VideoTask], settings: PlanSettings) -> WorkUnit:
    return WorkUnit(
        unit_id=unit_id_of(videos),
        videos=tuple(videos),
        model=settings.model,
        clip=settings.clip,
        seed=settings.seed,
        sample_fps=settings.sample_fps,
    )
