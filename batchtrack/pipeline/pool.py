"""The size of the tracker actor pool: what the user asked for, else what the Ray cluster offers.

A job that names no pool size fills the machine it runs on: an autoscaling pool from one actor up to the
cluster's CPUs divided by the CPUs of an actor, or one actor per GPU when the cluster has GPUs. The cluster
is read once, when the job starts (`ray.cluster_resources()`); on an autoscaling cluster, whose nodes come
later, `actors.max_actors` says how far the pool may grow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from batchtrack.config import ActorConfig


@dataclass(frozen=True)
class PoolSize:
    """Bounds of the actor pool and the resources of one actor, all decided."""

    min_actors: int
    max_actors: int
    num_cpus: float
    num_gpus: float

    @property
    def fixed(self) -> bool:
        return self.min_actors == self.max_actors

    def describe(self) -> str:
        size = f"{self.min_actors}" if self.fixed else f"{self.min_actors}-{self.max_actors} (autoscaling)"
        device = f"{self.num_gpus:g} GPU + " if self.num_gpus else ""
        threads = max(1, int(self.num_cpus))
        return f"{size} tracker actor(s), each {device}{self.num_cpus:g} CPU (torch threads: {threads})"


def pool_size(actors: ActorConfig, resources: Mapping[str, float]) -> PoolSize:
    """The pool for `actors` on a cluster offering `resources` (as `ray.cluster_resources()` reports them).

    >>> pool_size(ActorConfig(), {"CPU": 8.0})
    PoolSize(min_actors=1, max_actors=8, num_cpus=1.0, num_gpus=0.0)
    >>> pool_size(ActorConfig(num_cpus=2), {"CPU": 16.0, "GPU": 2.0})
    PoolSize(min_actors=1, max_actors=2, num_cpus=2.0, num_gpus=1.0)
    >>> pool_size(ActorConfig(num_actors=3), {"CPU": 8.0})
    PoolSize(min_actors=3, max_actors=3, num_cpus=1.0, num_gpus=0.0)
    """
    gpus = float(resources.get("GPU", 0.0))
    num_gpus = actors.num_gpus if actors.num_gpus is not None else (1.0 if gpus >= 1 else 0.0)
    if actors.max_actors is not None:
        return PoolSize(actors.num_actors or 1, actors.max_actors, actors.num_cpus, num_gpus)
    if actors.num_actors is not None:
        return PoolSize(actors.num_actors, actors.num_actors, actors.num_cpus, num_gpus)
    return PoolSize(1, _capacity(resources, actors.num_cpus, num_gpus), actors.num_cpus, num_gpus)


def _capacity(resources: Mapping[str, float], num_cpus: float, num_gpus: float) -> int:
    """How many actors of this size fit in `resources` at once (at least one: Ray queues it until one fits)."""
    fits = math.floor(float(resources.get("CPU", 0.0)) / num_cpus + 1e-9)
    if num_gpus > 0:
        fits = min(fits, math.floor(float(resources.get("GPU", 0.0)) / num_gpus + 1e-9))
    return max(1, fits)
