"""Which tracker an actor runs: SAM 2.1-style models from batchtrack.model, classical baselines from eval.

Automatic mode (clips without prompts) wraps a loaded SAM 2.1-style tracker in `AutoTracker`; the
classical baselines only propagate given masks and cannot find objects, so they have no automatic mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import metadata
from typing import Any, Protocol

import fsspec
import numpy as np

from batchtrack.config import AutoConfig, ModelConfig
from batchtrack.errors import ConfigError
from batchtrack.model.types import FrameResult, Prompt

BASELINE_PREFIX = "baseline-"


class FrameTracker(Protocol):
    """What the pipeline needs from a tracker (batchtrack.model's Tracker and the baselines both fit)."""

    def track(
        self, frames: Iterable[tuple[int, np.ndarray]], prompts: Sequence[Prompt], *, reverse: bool = False
    ) -> Iterator[FrameResult]: ...


def supports_auto(model_name: str) -> bool:
    """Whether `model_name` can track in automatic mode (propose objects itself): not the classical baselines."""
    return not model_name.startswith(BASELINE_PREFIX)


def auto_unavailable_reason(model_name: str, auto: AutoConfig) -> str | None:
    """Why clips without prompts cannot be tracked in automatic mode by this job, or None when they can."""
    if not auto.enabled:
        return "automatic mode is disabled (auto.enabled=false)"
    if not supports_auto(model_name):
        return (
            f"model {model_name!r} is a classical baseline: it only propagates prompted masks and cannot "
            "propose objects, so automatic mode needs a SAM 2.1-style model"
        )
    return None


def build_auto_tracker(tracker: FrameTracker, auto: AutoConfig) -> FrameTracker:
    """`tracker` wrapped for automatic mode with the job's `auto` thresholds (a SAM 2.1-style tracker only)."""
    from batchtrack.model.auto import AutoTrackConfig, AutoTracker
    from batchtrack.model.tracker import Tracker

    if not isinstance(tracker, Tracker):
        raise ConfigError(f"automatic mode needs a SAM 2.1-style tracker, got {type(tracker).__name__}")
    check_auto_config(auto)
    return AutoTracker(tracker, AutoTrackConfig.from_auto(auto))


def check_auto_config(auto: AutoConfig) -> None:
    """Raise ConfigError for automatic-mode settings the job cannot run (checked before any actor starts)."""
    if auto.association == "learned":
        raise ConfigError(
            "auto.association='learned' needs association-head weights, which the job config cannot name yet; "
            "use auto.association='iou'"
        )


def load_tracker(model_cfg: ModelConfig, device: str) -> FrameTracker:
    """Build the configured tracker on `device`; `baseline-*` names resolve to the classical baselines."""
    if model_cfg.name.startswith(BASELINE_PREFIX):
        from batchtrack.eval.baselines import build_baseline

        if model_cfg.checkpoint is not None:
            raise ConfigError(
                f"model.checkpoint is set but model.name={model_cfg.name!r} is a baseline, which has no weights"
            )
        return build_baseline(model_cfg.name)
    from batchtrack.model.build import build_tracker

    return build_tracker(model_cfg.name, checkpoint=model_cfg.checkpoint, device=device)


def checkpoint_hash(model_cfg: ModelConfig, storage_options: Mapping[str, Any] | None = None) -> str:
    """16 hex chars of SHA-256 over the checkpoint's bytes, or a tag of the shipped weights' version.

    Part of every clip id, so new weights never resume from old outputs.
    """
    if model_cfg.checkpoint is None:
        try:
            version = metadata.version("batchtrack")
        except metadata.PackageNotFoundError:  # running from a source tree that is not installed
            version = "source"
        return f"builtin-{version}"
    digest = hashlib.sha256()
    try:
        with fsspec.open(model_cfg.checkpoint, "rb", **dict(storage_options or {})) as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise ConfigError(f"model.checkpoint {model_cfg.checkpoint} does not exist") from exc
    return digest.hexdigest()[:16]
