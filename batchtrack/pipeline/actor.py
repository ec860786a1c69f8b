"""UnitTracker: the Ray Data actor that tracks work units. One model per actor, loaded once.

A call gets work units (a JSON `unit` column) and returns one JSON `UnitSummary` per unit. The actor builds
the job's model (`trackers.build_trackers`: exactly the `ResolvedModel` the driver decided) at its first unit
to track, and hands each unit to its `UnitProcessor` (unit_processor.py), which tracks the unit's videos
(`VideoRun`) and commits it.

Resource and Ray system errors propagate so Ray restarts the actor and retries the unit; a unit that
keeps killing its actor is bounded by its attempts record (`commit.Attempts`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import ray
import torch

from batchtrack.pipeline.actor_settings import ActorSettings
from batchtrack.pipeline.plan import WorkUnit
from batchtrack.pipeline.unit_processor import UnitProcessor
from batchtrack.pipeline.unit_summary import UnitSummary
from batchtrack.trackers import build_trackers

if TYPE_CHECKING:
    from batchtrack.pipeline.metrics import TrackerMetrics

log = logging.getLogger(__name__)


def choose_device(num_gpus: float) -> str:
    """cuda when the actor was given a GPU and CUDA works; CPU (with a warning) when it was not there."""
    if num_gpus <= 0:
        return "cpu"
    if not torch.cuda.is_available():
        log.warning("actor requested num_gpus=%s but CUDA is not available; tracking on CPU", num_gpus)
        return "cpu"
    return "cuda"


class UnitTracker:
    """Ray Data callable class: loads the tracker once, at its first unit to track; `__call__` tracks a batch of units.

    Units an earlier run committed pass through without the model, so resuming a finished job loads no weights.
    """

    def __init__(self, settings: ActorSettings, tally: ray.actor.ActorHandle | None = None) -> None:
        # Size torch's intra-op pool to this actor's CPUs so actors on one node do not oversubscribe it.
        torch.set_num_threads(settings.threads)
        self.settings = settings
        self._tally = tally  # the job's JobTally: told of each unit at its commit, for the driver's progress
        self._processor: UnitProcessor | None = None
        self._metrics: TrackerMetrics | None = None

    @property
    def processor(self) -> UnitProcessor:
        if self._processor is None:
            settings = self.settings
            device = choose_device(settings.num_gpus)
            node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
            trackers = build_trackers(settings.model, device, settings.storage_options)
            self._processor = UnitProcessor(trackers.prompted, settings, device, node_id, trackers.auto)
        return self._processor

    @property
    def metrics(self) -> TrackerMetrics:
        if self._metrics is None:
            from batchtrack.pipeline.metrics import TrackerMetrics

            self._metrics = TrackerMetrics()
        return self._metrics

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        summaries = []
        for text, committed, was_failed in zip(batch["unit"], batch["committed"], batch["was_failed"], strict=True):
            unit = WorkUnit.from_json(str(text))
            if committed:
                summary = UnitSummary(unit.unit_id, videos=len(unit.videos), resumed=True)
            else:
                summary = self.processor.process(unit, was_failed=bool(was_failed))
                self.metrics.record(summary)
            if self._tally is not None:
                self._tally.committed.remote(summary)
            summaries.append(summary.to_json())
        return {"summary": np.asarray(summaries, dtype=object)}

