"""The job's tally: a small Ray actor the listing tasks and the tracker actors report to, for the driver's progress.

Listing tasks count the units they plan and the parts they finish; tracker actors report each unit as they commit
it, ahead of its summary reaching the driver through Ray Data's output stream (which lagged commits by 30-45 s
on a busy 2-core node). The driver reads it without blocking (`TallyReader`).
"""

from __future__ import annotations

from dataclasses import replace

import ray

from batchtrack.pipeline.progress import Counts, Listing, Tally
from batchtrack.pipeline.unit_summary import UnitSummary


@ray.remote(num_cpus=0)
class JobTally:
    """How far the job has got, for the driver's progress: units the listing tasks planned and parts they
    finished; units the actors committed, counted once each (a retried unit reports again)."""

    def __init__(self, parts: int) -> None:
        self._units = 0
        self._parts_done = 0
        self._parts = parts
        self._committed = Counts()
        self._seen: set[str] = set()

    def listed(self) -> None:
        self._units += 1

    def part_done(self) -> None:
        self._parts_done += 1

    def committed(self, unit: UnitSummary) -> None:
        if unit.unit_id not in self._seen:
            self._seen.add(unit.unit_id)
            self._committed.add(unit)

    def tally(self) -> Tally:
        return Tally(Listing(self._units, self._parts_done, self._parts), replace(self._committed))


class TallyReader:
    """The tally's latest answer, read without blocking the progress display: one request in flight at a time."""

    def __init__(self, tally: ray.actor.ActorHandle, parts: int) -> None:
        self._tally = tally
        self._last = Tally(Listing(parts=parts))
        self._pending: ray.ObjectRef | None = None

    def __call__(self) -> Tally:
        if self._pending is None:
            self._pending = self._tally.tally.remote()
        ready, _ = ray.wait([self._pending], timeout=0)
        if ready:
            self._last = ray.get(self._pending)
            self._pending = self._tally.tally.remote()
        return self._last
