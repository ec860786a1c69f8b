"""run_job: one streaming Ray Data pipeline — list → plan units → track units in an actor pool → commit.

Runs on the Ray cluster named by RAY_ADDRESS (as under `ray job submit`) or on an embedded local
Ray when there is none. The driver validates the config and the prompts, splits the corpus into
listing parts with one request (`corpus_parts`), lists what earlier runs committed with two
listings, and then only consumes one small summary per work unit:

- listing tasks list their part, plan each video (`plan.plan_video`) and group videos into units
  (`plan.group_units`), marking units an earlier run committed;
- the actor pool tracks units as they arrive (the first unit is tracked while listing goes on) and
  commits each one (`commit.commit_unit`); committed units pass through untouched.

Every clip of the corpus ends as one clips/ row, written by its unit: ok, failed (with its stage,
error class and message) or skipped (with the reason).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import ray
import ray.data
from ray.data import ActorPoolStrategy
from ray.util.debug import log_once

from batchtrack.config import JobConfig, UnitConfig
from batchtrack.io.corpus import ListingPart, corpus_parts, corpus_scope, list_part
from batchtrack.io.prompt_chunks import manifest_shards
from batchtrack.pipeline.actor import UnitTracker
from batchtrack.pipeline.actor_settings import ActorSettings
from batchtrack.pipeline.commit import OutputState, package_versions, scan_output, write_manifest
from batchtrack.pipeline.orphans import describe as describe_orphans
from batchtrack.pipeline.orphans import end_orphans, find_orphans
from batchtrack.pipeline.plan import (
    ModelKey,
    PlanSettings,
    VideoTask,
    auto_mode_key,
    concept_mode_key,
    group_units,
    make_unit,
    plan_video,
)
from batchtrack.pipeline.pool import PoolSize, pool_size
from batchtrack.pipeline.progress import Progress
from batchtrack.pipeline.prompt_join import JoinedPrompts, join_prompts, joined_videos
from batchtrack.pipeline.tally import JobTally, TallyReader
from batchtrack.pipeline.unit_summary import UnitSummary
from batchtrack.trackers import ResolvedModel, resolve_model

log = logging.getLogger(__name__)

# A unit row is its own block, so units spread over the actor pool instead of queueing on one actor.
UNIT_BLOCK_BYTES = 1
UNITS_IN_FLIGHT_PER_ACTOR = 2  # the one being tracked and the next, fetched early


@dataclass(frozen=True)
class Failure:
    video_uri: str
    stage: str
    error_class: str
    message: str


@dataclass
class JobSummary:
    """What a job did, for the final table, the exit code and `_manifest.json`.

    Counts are of this run's units; units committed by an earlier run are counted in `resumed_units`
    (their rows are in clips/).
    """

    output: str
    units: int = 0
    resumed_units: int = 0
    videos: int = 0
    clips: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    frames: int = 0  # frames tracked by this run
    objects: int = 0  # (clip, object) pairs tracked by this run
    mask_rows: int = 0  # rows written by this run
    wall_seconds: float = 0.0
    unit_seconds: float = 0.0  # sum over this run's units of their time in an actor
    failures: list[Failure] = field(default_factory=list)
    prompt_lines: int = 0  # lines of the prompt manifest
    unmatched_videos: int = 0  # videos of the manifest that are not in the corpus: not tracked
    unmatched_lines: int = 0
    unmatched_examples: list[str] = field(default_factory=list)
    manifest_seconds: float = 0.0  # from the start to the whole manifest read, checked and joined

    MAX_FAILURES = 100

    def add(self, unit: UnitSummary) -> None:
        self.units += 1
        self.videos += unit.videos
        if unit.resumed:
            self.resumed_units += 1
            return
        for name in ("clips", "ok", "failed", "skipped", "frames", "objects", "mask_rows"):
            setattr(self, name, getattr(self, name) + getattr(unit, name))
        self.unit_seconds += unit.seconds
        room = self.MAX_FAILURES - len(self.failures)
        self.failures += [Failure(*f) for f in unit.failures[: max(room, 0)]]

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def failed_fraction(self) -> float:
        counted = self.clips - self.skipped
        return self.failed / counted if counted > 0 else 0.0

    def exit_code(self, max_failed_fraction: float) -> int:
        """0 unless the fraction of failed clips (among this run's clips not skipped) exceeds `max_failed_fraction`."""
        return 1 if self.failed_fraction > max_failed_fraction else 0

    def counts(self) -> dict[str, Any]:
        names = ("units", "resumed_units", "videos", "clips", "ok", "failed", "skipped", "frames", "objects")
        values: dict[str, Any] = {name: getattr(self, name) for name in names}
        values.update(
            prompt_lines=self.prompt_lines,
            unmatched_videos=self.unmatched_videos,
            unmatched_lines=self.unmatched_lines,
            mask_rows=self.mask_rows,
            wall_seconds=round(self.wall_seconds, 3),
            unit_seconds=round(self.unit_seconds, 3),
            frames_per_second=round(self.frames_per_second, 3),
        )
        return values

    def to_table(self, max_failures: int = 10) -> str:
        lines = [
            f"batchtrack job → {self.output}",
            f"  work units        {self.units:>8}   (committed by an earlier run: {self.resumed_units})",
            f"  videos            {self.videos:>8}",
            f"  clips tracked now {self.clips:>8}",
            f"    ok              {self.ok:>8}",
            f"    failed          {self.failed:>8}",
            f"    skipped         {self.skipped:>8}",
            f"  frames tracked    {self.frames:>8}",
            f"  objects tracked   {self.objects:>8}   (per clip)",
            f"  mask rows         {self.mask_rows:>8}",
            f"  wall time         {self.wall_seconds:>8.1f} s   (units' own time summed: {self.unit_seconds:.1f} s)",
            f"  throughput        {self.frames_per_second:>8.2f} frames/s",
        ]
        if self.unmatched_lines:
            lines.append(
                f"  prompt lines for videos not in the corpus: {self.unmatched_lines} "
                f"({self.unmatched_videos} videos, not tracked), e.g. {', '.join(self.unmatched_examples[:3])}"
            )
        if self.failures:
            lines.append("  failures:")
            for failure in self.failures[:max_failures]:
                lines.append(
                    f"    {failure.video_uri} [{failure.stage}] {failure.error_class}: {failure.message[:160]}"
                )
            if self.failed > max_failures:
                lines.append(f"    … and {self.failed - max_failures} more (see clips/)")
        return "\n".join(lines)


@dataclass(frozen=True)
class PlanContext:
    """What planning tasks need to plan units: shared once through the object store."""

    settings: PlanSettings
    state: OutputState
    units: UnitConfig
    retry_failed: bool
    storage_options: Mapping[str, Any]
    joined: Sequence[ray.ObjectRef] = ()  # a prompt manifest joined with the corpus: one table per partition


_CONTEXTS: dict[str, PlanContext] = {}  # per worker process: each context is fetched once


def _context(handle: list[ray.ObjectRef]) -> PlanContext:
    ref = handle[0]
    key = ref.hex()
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = ray.get(ref)
    return _CONTEXTS[key]


def plan_part(part: ListingPart, context: PlanContext) -> Iterator[dict[str, Any]]:
    """List one part of the corpus (a job without a prompt manifest) and yield its work units."""
    videos = (plan_video(ref, (), context.settings) for ref in list_part(part, context.storage_options))
    yield from plan_units(videos, context)


def plan_partition(partition: int, context: PlanContext) -> Iterator[dict[str, Any]]:
    """Plan one partition of the joined prompts and corpus (`prompt_join`) and yield its work units."""
    table = ray.get(context.joined[partition])
    videos = (
        plan_video(ref, prompts, context.settings, concepts)
        for ref, prompts, concepts in joined_videos(table, context.storage_options)
    )
    yield from plan_units(videos, context)


def plan_units(videos: Iterator[VideoTask], context: PlanContext) -> Iterator[dict[str, Any]]:
    """Videos grouped into work units, each marked committed (by an earlier run) or not."""
    for group in group_units(videos, context.units):
        unit = make_unit(group, context.settings)
        yield {
            "unit_id": unit.unit_id,
            "unit": unit.to_json(),
            "committed": not context.state.needs_tracking(unit.unit_id, context.retry_failed),
            "was_failed": unit.unit_id in context.state.failed,
        }


def _plan_rows(
    row: dict[str, Any], context: list[ray.ObjectRef], tally: ray.actor.ActorHandle | None = None
) -> Iterator[dict[str, Any]]:
    if "partition" in row:
        units = plan_partition(int(row["partition"]), _context(context))
    else:
        units = plan_part(ListingPart(**json.loads(row["part"])), _context(context))
    for unit in units:
        if tally is not None:
            tally.listed.remote()
        yield unit
    if tally is not None:
        tally.part_done.remote()


def ensure_ray() -> None:
    """Connect to RAY_ADDRESS when set (ray job submit sets it), else start an embedded local Ray."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        _end_orphans_of_crashed_runs()
        # address="local": a Ray of its own, even when a `ray start` cluster runs on this machine (ray.init()
        # would join that one, with whatever resources, and work, it has).
        ray.init(address="local", include_dashboard=False, log_to_driver=True)


def _end_orphans_of_crashed_runs() -> None:
    """End the Ray processes an embedded run whose driver was killed left behind (only provable orphans)."""
    ended = end_orphans(find_orphans())
    if ended:
        print(f"batchtrack: {describe_orphans(ended)}", file=sys.stderr, flush=True)


@contextmanager
def _unit_blocks() -> Iterator[None]:
    """Ray Data settings of the pipeline: one unit per block, no progress bars in logs (the job shows its own)."""
    # Ray Data warns once that its bars are off and how to turn them on; the job's own progress replaces them.
    log_once("ray_data_progress_manager_disabled")
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.target_max_block_size, ctx.enable_progress_bars)
    ctx.target_max_block_size = UNIT_BLOCK_BYTES
    ctx.enable_progress_bars = False
    try:
        yield
    finally:
        ctx.target_max_block_size, ctx.enable_progress_bars = saved


def actor_settings(cfg: JobConfig, model: ResolvedModel, pool: PoolSize | None = None) -> ActorSettings:
    """What every actor of the job shares: the resolved model and the job's output, pool and decoding settings."""
    pool = pool or pool_size(cfg.actors, {})
    return ActorSettings(
        model=model,
        output=cfg.output,
        storage_options=dict(cfg.storage_options),
        pointer_dtype=cfg.out.pointer_dtype,
        compression=cfg.out.compression,
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
        prefetch_frames=cfg.actors.prefetch_frames,
        prefetch_bytes=int(cfg.actors.prefetch_mib * 2**20),
        unit=cfg.unit,
    )


def track_units(
    parts: Sequence[ListingPart],
    context: PlanContext,
    cfg: JobConfig,
    model: ResolvedModel,
    size: PoolSize | None = None,
    tally: ray.actor.ActorHandle | None = None,
) -> Iterator[UnitSummary]:
    """The streaming pipeline: listing parts (or joined partitions) → units → actor pool; yields one summary per
    unit as it finishes.

    `model`: what the actors build (`trackers.resolve_model`).
    `size`: the pool (default: `cfg.actors` on the running Ray cluster's resources); `tally`: a `JobTally`
    the listing tasks count their units and parts (or partitions) into, and the actors their commits.
    """
    actors = cfg.actors
    size = size or pool_size(actors, ray.cluster_resources())
    pool = (
        ActorPoolStrategy(size=size.min_actors, max_tasks_in_flight_per_actor=UNITS_IN_FLIGHT_PER_ACTOR)
        if size.fixed
        else ActorPoolStrategy(
            min_size=size.min_actors,
            max_size=size.max_actors,
            max_tasks_in_flight_per_actor=UNITS_IN_FLIGHT_PER_ACTOR,
        )
    )
    context_ref = ray.put(context)
    items: list[dict[str, Any]] = (
        [{"partition": p} for p in range(len(context.joined))]
        if context.joined
        else [{"part": json.dumps({"kind": p.kind, "uri": p.uri})} for p in parts]
    )
    with _unit_blocks():
        units = ray.data.from_items(items, override_num_blocks=len(items)).flat_map(
            _plan_rows, fn_kwargs={"context": [context_ref], "tally": tally}, num_cpus=0
        )
        tracked = units.map_batches(
            UnitTracker,
            batch_size=1,
            batch_format="numpy",
            compute=pool,
            num_cpus=size.num_cpus,
            num_gpus=size.num_gpus,
            fn_constructor_kwargs={
                "settings": actor_settings(cfg, model, pool=size),
                "tally": tally,
            },
            # Ray Data's default is to restart forever (-1); pass only another bound (a Ray remote arg: Ray Data
            # takes them as keyword arguments, and refuses a `ray_remote_args=` keyword for actors).
            **({} if actors.max_restarts == -1 else {"max_restarts": actors.max_restarts}),
        )
        for batch in tracked.iter_batches(batch_size=None, batch_format="numpy"):
            for text in np.asarray(batch["summary"]).tolist():
                yield UnitSummary(**json.loads(str(text)))


def plan_settings(cfg: JobConfig, model: ResolvedModel) -> PlanSettings:
    """The model key and modes every unit shares, from the job's resolved model."""
    return PlanSettings(
        model=ModelKey(model.name, model.checkpoint_hash),
        clip=cfg.clip,
        auto_key=auto_mode_key(model.auto) if model.auto is not None else None,
        no_auto_reason=model.no_auto_reason,
        seed=cfg.seed,
        concepts=cfg.text,
        sample_fps=cfg.sample.fps,
        concept_key=concept_mode_key(model.concept),
    )


def _joined_prompts(
    cfg: JobConfig,
    shards: Sequence[tuple[str, int]],
    parts: Sequence[ListingPart],
    settings: PlanSettings,
) -> JoinedPrompts:
    """The prompt manifest read, checked and joined with the corpus on the cluster.

    With automatic mode unavailable and no job-wide concepts, only prompted videos are tracked, so the manifest
    drives the job and the corpus is not listed (unless it is itself a manifest of videos: only reading it says
    which videos it holds).
    """
    assert cfg.prompts is not None
    scope = corpus_scope(parts)
    manifest_drives = settings.no_auto_reason is not None and not settings.concepts and scope is not None
    return join_prompts(shards, dict(cfg.storage_options), None if manifest_drives else parts, scope)


def _count_prompts(cfg: JobConfig, joined: JoinedPrompts, summary: JobSummary) -> None:
    """The joined manifest's counts into `summary`, with a warning for lines that name no video of the corpus."""
    stats = joined.stats
    summary.prompt_lines = stats.lines
    summary.unmatched_videos, summary.unmatched_lines = stats.unmatched_videos, stats.unmatched_lines
    summary.unmatched_examples = list(stats.examples)
    if stats.unmatched_lines:
        log.warning(
            "%d prompt line(s) name %d video(s) that are not in the corpus %s; they are not tracked (e.g. %s)",
            stats.unmatched_lines,
            stats.unmatched_videos,
            cfg.corpus,
            ", ".join(stats.examples[:3]),
        )


def run_job(cfg: JobConfig, model: ResolvedModel | None = None) -> JobSummary:
    """Run the whole batch job described by `cfg` and return its summary (also in `_manifest.json`).

    `model`: the job's model when the caller resolved it already (`trackers.resolve_model(cfg)`, as the CLI does
    before it imports Ray); by default it is resolved here, before Ray starts.
    """
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat()
    options = dict(cfg.storage_options)
    # Everything a user can get wrong is decided here, before Ray starts.
    parts = corpus_parts(cfg.corpus, options)
    shards = manifest_shards(cfg.prompts, options) if cfg.prompts else []
    model = resolve_model(cfg) if model is None else model
    settings = plan_settings(cfg, model)
    ensure_ray()
    summary = JobSummary(output=cfg.output)
    joined = _joined_prompts(cfg, shards, parts, settings) if shards else None
    if joined is not None:
        if joined.concept_lines:
            model = model.with_concepts(f"the text lines of the prompt manifest {cfg.prompts}")
        _count_prompts(cfg, joined, summary)
    summary.manifest_seconds = time.perf_counter() - started
    state = scan_output(cfg.output, options)
    context = PlanContext(settings, state, cfg.unit, cfg.retry_failed, options, joined.partitions if joined else ())
    log.info(
        "%d listing part(s); %d unit(s) committed by earlier runs (%d with failures)",
        len(parts),
        len(state.committed),
        len(state.failed),
    )
    size = pool_size(cfg.actors, ray.cluster_resources())
    listing_items = len(context.joined) or len(parts)  # what the listing tasks work through: partitions or parts
    tally = JobTally.remote(listing_items)
    with Progress(TallyReader(tally, listing_items), cfg.progress_seconds) as progress:
        progress.note(f"batchtrack: {size.describe()}; listing {listing_items} part(s) of {cfg.corpus}")
        for unit in track_units(parts, context, cfg, model, size=size, tally=tally):
            summary.add(unit)
            progress.add(unit)
    ray.kill(tally)
    summary.wall_seconds = time.perf_counter() - started

    write_manifest(
        cfg.output,
        {
            "config": cfg.redacted(),
            "versions": package_versions(),
            "counts": summary.counts(),
            "model": {"name": settings.model.name, "checkpoint_hash": settings.model.checkpoint_hash},
            "prompts": {
                "lines": summary.prompt_lines,
                "unmatched_videos": summary.unmatched_videos,
                "unmatched_lines": summary.unmatched_lines,
                "unmatched_examples": summary.unmatched_examples,
            },
            "started_at": started_at,
            "finished_at": datetime.now(timezone.utc).isoformat(),
        },
        options,
    )
    log.info("\n%s", summary.to_table())
    return summary
