"""The actor pool a job gets: by default it fills the node (CPUs / CPUs per actor, or one actor per GPU);
the flags override; an actor's torch threads are its CPUs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from batchtrack.config import ActorConfig, ModelConfig, load_config
from batchtrack.pipeline.actor import UnitTracker
from batchtrack.pipeline.actor_settings import ActorSettings
from batchtrack.pipeline.pool import pool_size
from batchtrack.trackers import ResolvedModel


def test_defaults_autoscale_up_to_the_cpus_of_a_multi_core_node() -> None:
    size = pool_size(ActorConfig(), {"CPU": 8.0, "memory": 1e10})
    assert (size.min_actors, size.max_actors, size.num_cpus, size.num_gpus) == (1, 8, 1.0, 0.0)
    assert not size.fixed
    assert pool_size(ActorConfig(num_cpus=2), {"CPU": 2.0}).max_actors == 1
    assert pool_size(ActorConfig(num_cpus=3), {"CPU": 8.0}).max_actors == 2


def test_a_gpu_node_gets_one_actor_per_gpu_on_the_gpu() -> None:
    size = pool_size(ActorConfig(), {"CPU": 32.0, "GPU": 4.0})
    assert (size.max_actors, size.num_gpus) == (4, 1.0)
    assert pool_size(ActorConfig(num_gpus=0), {"CPU": 32.0, "GPU": 4.0}).max_actors == 32  # asked for CPU actors
    assert pool_size(ActorConfig(num_gpus=0.5), {"CPU": 32.0, "GPU": 4.0}).max_actors == 8


def test_actors_max_actors_and_cpus_per_actor_override_the_node() -> None:
    assert pool_size(ActorConfig(num_actors=3), {"CPU": 64.0}).fixed
    assert pool_size(ActorConfig(num_actors=3), {"CPU": 64.0}).max_actors == 3
    bounded = pool_size(ActorConfig(max_actors=5), {"CPU": 64.0})
    assert (bounded.min_actors, bounded.max_actors) == (1, 5)
    ranged = pool_size(ActorConfig(num_actors=2, max_actors=6, num_cpus=4), {"CPU": 8.0})
    assert (ranged.min_actors, ranged.max_actors, ranged.num_cpus) == (2, 6, 4.0)


def test_a_node_smaller_than_one_actor_still_gets_one() -> None:
    assert pool_size(ActorConfig(num_cpus=4), {"CPU": 2.0}).max_actors == 1
    assert pool_size(ActorConfig(num_gpus=1), {"CPU": 8.0}).max_actors == 1  # queued until a GPU node joins


def test_cli_flags_reach_the_pool() -> None:
    from batchtrack.cli import _job_overrides, build_parser

    args = build_parser().parse_args(["run", "c", "o", "--actors", "1", "--cpus-per-actor", "1"])
    size = pool_size(load_config(None, **_job_overrides(args)).actors, {"CPU": 16.0})
    assert (size.min_actors, size.max_actors, size.num_cpus) == (1, 1, 1.0)


@pytest.fixture
def _restore_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("_restore_torch_threads")
def test_an_actor_runs_as_many_torch_threads_as_it_has_cpus(tmp_path: Path) -> None:
    model = ResolvedModel(ModelConfig(name="test-tiny"), "none")
    UnitTracker(ActorSettings(model=model, output=str(tmp_path), num_cpus=2))
    assert torch.get_num_threads() == 2
    UnitTracker(ActorSettings(model=model, output=str(tmp_path), num_cpus=1))
    assert torch.get_num_threads() == 1
