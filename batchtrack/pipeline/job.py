"""run_job: list → probe → plan clips → skip committed → track in an actor pool → stitch → clips/ → _manifest.json.

Runs on the Ray cluster named by RAY_ADDRESS (as under `ray job submit`) or on an embedded local
Ray when there is none. Every clip of the plan ends as exactly one clips/ row: ok (tracked now or
committed by an earlier run), failed (with its stage, error class and message) or skipped.

A clip with prompts on its frames is tracked in prompted mode; a clip without (a video with no
prompts, or the unprompted stretch of a prompted one) in automatic mode when `auto.enabled` and
the model can propose objects, else it is skipped with the reason. After tracking, the stitching
post-pass (`track_ids`) gives every video with several ok clips its video-level track ids.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import ray
import ray.data
from ray.data import ActorPoolStrategy

from batchtrack.config import JobConfig
from batchtrack.io.corpus import VideoRef, list_videos
from batchtrack.io.prompts import PromptRecord, load_prompts
from batchtrack.io.video import VideoInfo, probe_video
from batchtrack.pipeline.actor import ActorSettings, ClipTracker
from batchtrack.pipeline.commit import (
    ClipStatus,
    load_committed,
    package_versions,
    write_clip_rows,
    write_manifest,
)
from batchtrack.pipeline.models import auto_unavailable_reason, check_auto_config, checkpoint_hash
from batchtrack.pipeline.plan import ClipSpec, ModelKey, auto_mode_key, plan_video, video_clip_id
from batchtrack.pipeline.track_ids import StitchClip, VideoStitch, stitch_video_output

log = logging.getLogger(__name__)

REMOTE_PROBE_MIN_VIDEOS = 256
REMOTE_STITCH_MIN_VIDEOS = 64
PROBE_CHUNK = 64
PROBE_THREADS = 16


@dataclass(frozen=True)
class Failure:
    video_uri: str
    clip_id: str
    stage: str
    error_class: str
    message: str


@dataclass
class JobSummary:
    """What a job did, for the final table, the exit code and `_manifest.json`."""

    output: str
    videos: int = 0
    clips: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    resumed: int = 0  # ok clips committed by an earlier run, not tracked again
    frames: int = 0  # frames tracked by this run
    objects: int = 0  # (clip, object) pairs tracked by this run
    mask_rows: int = 0  # rows written by this run
    auto_clips: int = 0  # ok clips tracked in automatic mode (this run or resumed)
    stitched_videos: int = 0  # videos with several ok clips whose track ids were stitched
    stitch_rewrites: int = 0  # masks/ and pointers/ files rewritten by this run's stitching pass
    wall_seconds: float = 0.0
    clip_seconds: float = 0.0  # sum over this run's clips of their time in an actor
    failures: list[Failure] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def failed_fraction(self) -> float:
        counted = self.clips - self.skipped
        return self.failed / counted if counted > 0 else 0.0

    def exit_code(self, max_failed_fraction: float) -> int:
        """0 unless the fraction of failed clips (among clips not skipped) exceeds `max_failed_fraction`."""
        return 1 if self.failed_fraction > max_failed_fraction else 0

    def counts(self) -> dict[str, Any]:
        return {
            "videos": self.videos,
            "clips": self.clips,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "resumed": self.resumed,
            "frames": self.frames,
            "objects": self.objects,
            "mask_rows": self.mask_rows,
            "auto_clips": self.auto_clips,
            "stitched_videos": self.stitched_videos,
            "stitch_rewrites": self.stitch_rewrites,
            "wall_seconds": round(self.wall_seconds, 3),
            "clip_seconds": round(self.clip_seconds, 3),
            "frames_per_second": round(self.frames_per_second, 3),
        }

    def to_table(self, max_failures: int = 10) -> str:
        lines = [
            f"batchtrack job → {self.output}",
            f"  videos            {self.videos:>8}",
            f"  clips             {self.clips:>8}",
            f"    ok              {self.ok:>8}   (of which resumed: {self.resumed}, automatic mode: {self.auto_clips})",
            f"    failed          {self.failed:>8}",
            f"    skipped         {self.skipped:>8}",
            f"  frames tracked    {self.frames:>8}",
            f"  objects tracked   {self.objects:>8}",
            f"  mask rows         {self.mask_rows:>8}",
            f"  stitched videos   {self.stitched_videos:>8}   (files rewritten: {self.stitch_rewrites})",
            f"  wall time         {self.wall_seconds:>8.1f} s   (clips' own time summed: {self.clip_seconds:.1f} s)",
            f"  throughput        {self.frames_per_second:>8.2f} frames/s",
        ]
        if self.failures:
            lines.append("  failures:")
            for failure in self.failures[:max_failures]:
                lines.append(
                    f"    {failure.video_uri} [{failure.stage}] {failure.error_class}: {failure.message[:160]}"
                )
            if len(self.failures) > max_failures:
                lines.append(f"    … and {len(self.failures) - max_failures} more (see clips/)")
        return "\n".join(lines)


@dataclass(frozen=True)
class ProbeOutcome:
    info: VideoInfo | None
    error_class: str | None = None
    message: str | None = None


def probe_one(uri: str, storage_options: Mapping[str, Any]) -> ProbeOutcome:
    """Probe one video; a video that cannot be probed is an outcome with its error, never an exception."""
    try:
        return ProbeOutcome(info=probe_video(uri, storage_options=dict(storage_options)))
    except (MemoryError, ray.exceptions.RayError):
        raise
    except Exception as exc:
        return ProbeOutcome(info=None, error_class=type(exc).__name__, message=str(exc)[:2000])


@ray.remote(num_cpus=0.25, max_retries=3)
def _probe_chunk(uris: list[str], storage_options: dict[str, Any]) -> list[ProbeOutcome]:
    return [probe_one(uri, storage_options) for uri in uris]


def ensure_ray() -> None:
    """Connect to RAY_ADDRESS when set (ray job submit sets it), else start an embedded local Ray."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(include_dashboard=False, log_to_driver=True)


def probe_videos(refs: Sequence[VideoRef], storage_options: Mapping[str, Any]) -> list[ProbeOutcome]:
    """Probe every video: in driver threads for a small corpus, as Ray tasks over the cluster for a large one.

    Probing reads only headers and packet indexes, so threads suffice up to a few hundred videos and
    avoid starting worker processes; past that, chunks of videos are probed in parallel on the cluster.
    """
    uris = [ref.uri for ref in refs]
    if len(uris) < REMOTE_PROBE_MIN_VIDEOS:
        with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
            return list(pool.map(lambda uri: probe_one(uri, storage_options), uris))
    options = dict(storage_options)
    chunks = [uris[i : i + PROBE_CHUNK] for i in range(0, len(uris), PROBE_CHUNK)]
    return [outcome for chunk in ray.get([_probe_chunk.remote(c, options) for c in chunks]) for outcome in chunk]


def _video_row(ref: VideoRef, model: ModelKey, reason: str, status: str, **values: Any) -> ClipStatus:
    return ClipStatus(
        video_id=ref.video_id,
        video_uri=ref.uri,
        clip_id=video_clip_id(ref.video_id, reason, model),
        start_frame=0,
        end_frame=values.pop("end_frame", 0),
        status=status,
        model_name=model.name,
        checkpoint_hash=model.checkpoint_hash,
        **values,
    )


def _skipped_clip(spec: ClipSpec, reason: str) -> ClipStatus:
    return ClipStatus.for_clip(
        spec,
        "skipped",
        error_stage="plan",
        error_message=f"no prompts on frames [{spec.start}, {spec.end}) and {reason}",
    )


def plan_corpus(
    refs: Sequence[VideoRef],
    probes: Sequence[ProbeOutcome],
    prompts: Mapping[str, Sequence[PromptRecord]],
    cfg: JobConfig,
    model: ModelKey,
) -> tuple[list[ClipSpec], list[ClipStatus]]:
    """Clips to track, and the rows decided without tracking (probe failures, clips that cannot be tracked).

    Clips without prompts are planned in automatic mode when it is available (`auto.enabled` and a
    model that proposes objects); otherwise a video without prompts is one skipped row, and an
    unprompted clip of a prompted video a skipped clip row, each saying why.
    """
    no_auto = auto_unavailable_reason(model.name, cfg.auto)
    auto_key = auto_mode_key(cfg.auto) if no_auto is None else None
    to_track: list[ClipSpec] = []
    decided: list[ClipStatus] = []
    for ref, probe in zip(refs, probes, strict=True):
        if probe.info is None:
            decided.append(
                _video_row(
                    ref, model, "probe", "failed",
                    error_stage="probe", error_class=probe.error_class, error_message=probe.message,
                )
            )
            continue
        video_prompts = prompts.get(ref.uri, [])
        if not video_prompts and no_auto is not None:
            decided.append(
                _video_row(
                    ref, model, "no-prompts", "skipped",
                    end_frame=probe.info.num_frames, error_stage="plan", error_message=f"no prompts and {no_auto}",
                )
            )
            continue
        for spec in plan_video(ref, probe.info, video_prompts, cfg.clip, model, auto_key):
            if spec.prompts or spec.mode == "auto":
                to_track.append(spec)
            else:
                decided.append(_skipped_clip(spec, no_auto or "automatic mode is unavailable"))
    return to_track, decided


def track_clips(specs: Sequence[ClipSpec], cfg: JobConfig) -> list[ClipStatus]:
    """Track clips with Ray Data: one row per clip, map_batches(ClipTracker) over an actor pool."""
    if not specs:
        return []
    settings = ActorSettings(
        model=cfg.model,
        output=cfg.output,
        storage_options=dict(cfg.storage_options),
        pointer_dtype=cfg.out.pointer_dtype,
        compression=cfg.out.compression,
        num_cpus=cfg.actors.num_cpus,
        num_gpus=cfg.actors.num_gpus,
        prefetch_frames=cfg.actors.prefetch_frames,
        auto=cfg.auto if any(s.mode == "auto" for s in specs) else None,
    )
    actors = cfg.actors
    pool = (
        ActorPoolStrategy(size=actors.num_actors)
        if actors.max_actors is None
        else ActorPoolStrategy(min_size=actors.num_actors, max_size=actors.max_actors)
    )
    # Longest clips first so the pool's tail is short; one block per clip so clips spread over actors.
    ordered = sorted(specs, key=lambda s: (-s.num_frames, s.clip_id))
    items = [{"clip_id": s.clip_id, "spec": s.to_json()} for s in ordered]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ClipTracker,
        batch_size=1,
        batch_format="numpy",
        compute=pool,
        num_cpus=actors.num_cpus,
        num_gpus=actors.num_gpus,
        fn_constructor_kwargs={"settings": settings},
        max_restarts=actors.max_restarts,
    )
    statuses: dict[str, ClipStatus] = {}
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for text in np.asarray(batch["clip"]).tolist():
            status = ClipStatus.from_json(str(text))
            statuses[status.clip_id] = status  # a retried clip reports once; keep the last word
    return list(statuses.values())


@dataclass(frozen=True)
class StitchTask:
    """One video of the stitching post-pass: its ok clips and the first id free for new tracks."""

    video_id: str
    clips: list[StitchClip]
    first_new_id: int


def plan_stitching(
    specs: Sequence[ClipSpec], rows: Sequence[ClipStatus], prompts: Mapping[str, Sequence[PromptRecord]]
) -> list[StitchTask]:
    """Videos whose track ids need stitching: several ok clips, at least one tracked in automatic mode.

    A video whose clips are all prompted already has video-level ids (the prompts'), and a video with
    one clip keeps its object ids, so neither is read again.
    """
    by_id = {s.clip_id: s for s in specs}
    by_video: dict[str, list[tuple[ClipSpec, ClipStatus]]] = {}
    for row in rows:
        spec = by_id.get(row.clip_id)
        if row.status == "ok" and spec is not None and row.masks_file is not None:
            by_video.setdefault(row.video_id, []).append((spec, row))
    tasks = []
    for video_id, clips in sorted(by_video.items()):
        if len(clips) < 2 or all(spec.mode != "auto" for spec, _ in clips):
            continue
        video_prompts = prompts.get(clips[0][0].video_uri, [])
        stitch_clips = [
            StitchClip(
                clip_id=spec.clip_id, start=spec.start, end=spec.end, height=spec.height, width=spec.width,
                prompted=spec.mode != "auto", masks_file=str(row.masks_file), pointers_file=row.pointers_file,
            )
            for spec, row in sorted(clips, key=lambda pair: (pair[0].start, pair[0].end))
        ]
        tasks.append(StitchTask(video_id, stitch_clips, max((p.object_id for p in video_prompts), default=-1) + 1))
    return tasks


def _stitch_one(task: StitchTask, output: str, options: Mapping[str, Any], compression: str) -> VideoStitch:
    return stitch_video_output(
        output, task.video_id, task.clips, first_new_id=task.first_new_id, storage_options=options,
        compression=compression,
    )


@ray.remote(num_cpus=0.5, max_retries=3)
def _stitch_chunk(tasks: list[StitchTask], output: str, options: dict[str, Any], compression: str) -> list[VideoStitch]:
    return [_stitch_one(task, output, options, compression) for task in tasks]


def stitch_videos(
    tasks: Sequence[StitchTask], output: str, options: Mapping[str, Any], compression: str
) -> list[VideoStitch]:
    """Run the stitching post-pass: driver threads for a few videos, Ray tasks over the cluster for many."""
    if len(tasks) < REMOTE_STITCH_MIN_VIDEOS:
        with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
            return list(pool.map(lambda task: _stitch_one(task, output, options, compression), tasks))
    chunks = [list(tasks[i : i + 8]) for i in range(0, len(tasks), 8)]
    refs = [_stitch_chunk.remote(chunk, output, dict(options), compression) for chunk in chunks]
    return [result for chunk in ray.get(refs) for result in chunk]


def run_job(cfg: JobConfig) -> JobSummary:
    """Run the whole batch job described by `cfg` and return its summary (also in `_manifest.json`)."""
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat()
    options = dict(cfg.storage_options)
    ensure_ray()

    refs = list_videos(cfg.corpus, options)
    prompts = load_prompts(cfg.prompts, options) if cfg.prompts else {}
    unknown = sorted(set(prompts) - {ref.uri for ref in refs})
    if unknown:
        log.warning("%d prompted video(s) are not in the corpus, e.g. %s", len(unknown), unknown[0])
    model = ModelKey(cfg.model.name, checkpoint_hash(cfg.model, options))
    probes = probe_videos(refs, options)
    to_track, decided = plan_corpus(refs, probes, prompts, cfg, model)
    if any(s.mode == "auto" for s in to_track):
        check_auto_config(cfg.auto, cfg.model.name, options)

    committed = load_committed(cfg.output, (s.clip_id for s in to_track), options)
    pending = [s for s in to_track if s.clip_id not in committed]
    log.info(
        "%d videos → %d clips to track (%d already committed, %d decided without tracking)",
        len(refs), len(to_track), len(committed), len(decided),
    )
    tracked = track_clips(pending, cfg)

    rows = decided + [record.clip for record in committed.values()] + tracked
    write_clip_rows(cfg.output, rows, options, cfg.out.compression)
    stitched = stitch_videos(plan_stitching(to_track, rows, prompts), cfg.output, options, cfg.out.compression)

    summary = JobSummary(output=cfg.output, videos=len(refs), clips=len(rows), resumed=len(committed))
    summary.stitched_videos = len(stitched)
    summary.stitch_rewrites = sum(len(v.rewritten) for v in stitched)
    auto_ids = {s.clip_id for s in to_track if s.mode == "auto"}
    summary.auto_clips = sum(1 for row in rows if row.status == "ok" and row.clip_id in auto_ids)
    for row in rows:
        if row.status == "ok":
            summary.ok += 1
        elif row.status == "failed":
            summary.failed += 1
            failure = Failure(
                row.video_uri, row.clip_id, row.error_stage or "", row.error_class or "", row.error_message or ""
            )
            summary.failures.append(failure)
        else:
            summary.skipped += 1
    for row in tracked:
        if row.status == "ok":
            summary.frames += row.frames
            summary.objects += row.objects
            summary.mask_rows += row.mask_rows
        summary.clip_seconds += row.seconds
    summary.wall_seconds = time.perf_counter() - started

    write_manifest(
        cfg.output,
        {
            "config": cfg.redacted(),
            "versions": package_versions(),
            "counts": summary.counts(),
            "model": {"name": model.name, "checkpoint_hash": model.checkpoint_hash},
            "started_at": started_at,
            "finished_at": datetime.now(timezone.utc).isoformat(),
        },
        options,
    )
    log.info("\n%s", summary.to_table())
    return summary
