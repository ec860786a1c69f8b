"""VideoTrackers: the concept loop an actor makes at its first concept video runs the job's concept settings."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from batchtrack.config import load_config
from batchtrack.model.modes.track_planning import TrackPlanningConfig
from batchtrack.pipeline.actor_settings import ActorSettings
from batchtrack.pipeline.job import actor_settings, plan_settings
from batchtrack.pipeline.pool import PoolSize
from batchtrack.pipeline.unit_processor import UnitProcessor
from batchtrack.trackers import build_trackers, resolve_model

MODEL = "sam3-test-tiny"


@pytest.mark.parametrize(
    ("concept", "expected"), [({}, 16), ({"recondition_every": 4}, 4), ({"recondition_every": 0}, 0)]
)
def test_the_actors_concept_loop_gets_the_jobs_recondition_interval(
    concept: dict[str, int], expected: int, tmp_path: Path
) -> None:
    """Config → resolved model → actor settings (pickled, as Ray ships them) → the actor's trackers → its loop."""
    cfg = load_config(
        None,
        corpus="/data",
        output=str(tmp_path),
        model={"name": MODEL, "random_weights": True},
        text=["shape"],
        concept=concept,
    )
    model = resolve_model(cfg)
    settings: ActorSettings = pickle.loads(pickle.dumps(actor_settings(cfg, model, pool=PoolSize(1, 1, 1.0, 0.0))))
    trackers = build_trackers(settings.model, "cpu")
    processor = UnitProcessor(trackers.prompted, settings, "cpu", None, trackers.auto)
    loop = processor.trackers.concept_loop()
    assert loop.config == TrackPlanningConfig(recondition_every=expected)  # SAM 3's other rules as they were
    assert processor.trackers.concept_loop() is loop, "made once, at the first concept video"
    # Planning keys concept videos by the setting only off its default (16).
    key = plan_settings(cfg, model).concept_key
    assert key == (None if expected == 16 else f'{{"recondition_every":{expected}}}')
