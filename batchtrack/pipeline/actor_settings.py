"""ActorSettings: what every tracker actor of a job shares, made once on the driver (`job.actor_settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchtrack.config import UnitConfig
from batchtrack.trackers import ResolvedModel


@dataclass(frozen=True)
class ActorSettings:
    """What every UnitTracker of a job shares (picklable; passed as a constructor argument)."""

    model: ResolvedModel  # decided on the driver (`trackers.resolve_model`): the actor builds exactly this
    output: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    pointer_dtype: str = "float16"
    compression: str = "zstd"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    prefetch_frames: int = 8
    prefetch_bytes: int | None = None  # bound on the bytes of frames decoded ahead (4K frames are 24 MiB)
    unit: UnitConfig = field(default_factory=UnitConfig)

    @property
    def threads(self) -> int:
        """Threads this actor's CPUs allow: torch's intra-op pool, and each video's decoder."""
        return max(1, int(self.num_cpus))
