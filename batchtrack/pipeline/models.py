"""Which tracker an actor runs: SAM 2.1-style models from batchtrack.model, classical baselines from eval."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import metadata
from typing import Any, Protocol

import fsspec
import numpy as np

from batchtrack.config import ModelConfig
from batchtrack.errors import ConfigError
from batchtrack.model.types import FrameResult, Prompt

BASELINE_PREFIX = "baseline-"


class FrameTracker(Protocol):
    """What the pipeline needs from a tracker (batchtrack.model's Tracker and the baselines both fit)."""

    def track(
        self, frames: Iterable[tuple[int, np.ndarray]], prompts: Sequence[Prompt], *, reverse: bool = False
    ) -> Iterator[FrameResult]: ...


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
