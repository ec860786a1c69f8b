"""UnitProcessor: one work unit tracked video by video, written whole, then committed; testable without Ray.

Every clip of the unit ends as one clips/ row: ok, failed (with its stage, error class and message) or
skipped. The unit's masks/ and pointers/ files are written whole, then its clips/ file: the commit.

A unit that keeps killing its actor is bounded by its attempts record (`commit.Attempts`): each attempt is
recorded before it starts, and after a death each video is recorded before it is tracked, so the video that
was being tracked when the actor died gets a strike. A video with `unit.poison_strikes` strikes, or every video
of a unit past `unit.max_attempts`, becomes a `failed` row (stage `actor`) instead of being tracked again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace

import pyarrow as pa

from batchtrack.config import UnitConfig
from batchtrack.io.sink import join, unit_file, write_table
from batchtrack.model.modes.concept import ConceptLoop
from batchtrack.pipeline.actor_settings import ActorSettings
from batchtrack.pipeline.commit import (
    Attempts,
    ClipStatus,
    clear_attempts,
    commit_unit,
    read_attempts,
    write_attempts,
)
from batchtrack.pipeline.plan import WorkUnit
from batchtrack.pipeline.unit_summary import UnitSummary
from batchtrack.pipeline.video_downloads import VideoDownloads
from batchtrack.pipeline.video_run import VideoRun
from batchtrack.pipeline.video_trackers import VideoTrackers
from batchtrack.trackers import FrameTracker

log = logging.getLogger(__name__)

# Test hook: a video whose URI contains this text kills its actor process, as a decoder crash would.
CRASH_ENV = "TRACKER_TEST_CRASH_ON"  # not BATCHTRACK_*: those are config keys


class UnitProcessor:
    """Tracks work units with a given tracker and commits them. Used by UnitTracker; testable without Ray."""

    def __init__(
        self,
        tracker: FrameTracker,
        settings: ActorSettings,
        device: str,
        node_id: str | None,
        auto_tracker: FrameTracker | None = None,
        concept_loop: ConceptLoop | None = None,
    ) -> None:
        self.trackers = VideoTrackers(
            tracker,
            auto_tracker,
            concept_loop,
            auto_settings_given=settings.model.auto is not None,
            concept=settings.model.concept,
        )
        self.settings = settings
        self.device = device
        self.node_id = node_id

    def process(self, unit: WorkUnit, *, was_failed: bool = False) -> UnitSummary:
        """Track every video of `unit` in order, write its files whole, then commit it."""
        began = time.perf_counter()
        attempts = self._begin_attempt(unit)
        runs = self._track_videos(unit, attempts)
        statuses = self._write(unit, runs)
        output, options = self.settings.output, self.settings.storage_options
        commit_unit(output, unit.unit_id, statuses, options, self.settings.compression, was_failed=was_failed)
        clear_attempts(output, unit.unit_id, options)
        return UnitSummary.of(unit.unit_id, statuses, time.perf_counter() - began)

    def _begin_attempt(self, unit: WorkUnit) -> Attempts:
        """Record this attempt at `unit` (after a death: one more, with the earlier strikes) and return it."""
        output, options = self.settings.output, self.settings.storage_options
        previous = read_attempts(output, unit.unit_id, options)
        attempts = previous.after_death() if previous.started else Attempts(started=1)
        if previous.started:
            log.warning("unit %s: attempt %d after an earlier one died (%s)", unit.unit_id, attempts.started, previous)
        write_attempts(output, unit.unit_id, attempts, options)
        return attempts

    def _track_videos(self, unit: WorkUnit, attempts: Attempts) -> list[VideoRun]:
        """Each video of `unit` tracked in order, or recorded as given up when it (or the unit) kept killing actors."""
        output, options, limits = self.settings.output, self.settings.storage_options, self.settings.unit
        careful = attempts.started > 1  # record each video before it starts, to find one that kills the actor
        given_up = {
            index
            for index in range(len(unit.videos))
            if attempts.strikes.get(index, 0) >= limits.poison_strikes or attempts.started > limits.max_attempts
        }
        wanted = [None if i in given_up or v.mode == "skipped" else v.ref.uri for i, v in enumerate(unit.videos)]
        runs: list[VideoRun] = []
        with VideoDownloads(wanted, options) as downloads:
            for index, video in enumerate(unit.videos):
                run = VideoRun(unit, video, self.trackers, self.settings, self.device, self.node_id)
                runs.append(run)
                if index in given_up:
                    strikes = attempts.strikes.get(index, 0)
                    run.whole_video(
                        "failed",
                        "actor-died",
                        error_stage="actor",
                        error_class="ActorDied",
                        error_message=_death_message(attempts, strikes, limits),
                    )
                    continue
                if careful:
                    write_attempts(output, unit.unit_id, replace(attempts, current=index), options)
                _crash_if_asked(video.ref.uri)
                run.run(lambda index=index: downloads.get(index))
                downloads.done(index)
        return runs

    def _write(self, unit: WorkUnit, runs: list[VideoRun]) -> list[ClipStatus]:
        """Write the unit's masks/ and pointers/ files (when it has rows); the statuses with their write share."""
        settings = self.settings
        clips = [rows for run in runs for rows in run.rows]
        statuses = [status for run in runs for status in run.statuses]
        total = sum(len(rows) for rows in clips)
        if not total:
            return statuses
        began = time.perf_counter()
        files = {"masks_file": unit_file("masks", unit.unit_id), "pointers_file": unit_file("pointers", unit.unit_id)}
        masks = pa.concat_tables([rows.masks_table() for rows in clips])
        write_table(masks, join(settings.output, files["masks_file"]), settings.storage_options, settings.compression)
        pointers = pa.concat_tables([rows.pointers_table(settings.pointer_dtype) for rows in clips])
        write_table(
            pointers, join(settings.output, files["pointers_file"]), settings.storage_options, settings.compression
        )
        seconds = time.perf_counter() - began
        return [
            replace(s, write_seconds=seconds * s.mask_rows / total, **files) if s.status == "ok" and s.mask_rows else s
            for s in statuses
        ]


def _death_message(attempts: Attempts, strikes: int, limits: UnitConfig) -> str:
    if strikes >= limits.poison_strikes:
        return f"its actor process died {strikes} times while tracking this video (e.g. a decoder crash)"
    return f"the unit's actor died {attempts.started - 1} times before the unit could be committed"


def _crash_if_asked(uri: str) -> None:
    marker = os.environ.get(CRASH_ENV)
    if marker and marker in uri:
        log.error("%s=%s: killing this actor process on %s", CRASH_ENV, marker, uri)
        os._exit(13)
