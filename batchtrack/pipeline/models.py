"""Which tracker an actor runs: SAM 2.1-style models from batchtrack.model, classical baselines from eval.

Automatic mode (clips without prompts) wraps a loaded SAM 2.1-style tracker in `AutoTracker`; the
classical baselines only propagate given masks and cannot find objects, so they have no automatic mode.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import fsspec
import numpy as np

from batchtrack.config import AutoConfig, ModelConfig
from batchtrack.errors import ConfigError
from batchtrack.model.types import FrameResult, Prompt

if TYPE_CHECKING:
    from batchtrack.model.association import AssociationHead

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


def build_auto_tracker(
    tracker: FrameTracker,
    auto: AutoConfig,
    model_name: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> FrameTracker:
    """`tracker` wrapped for automatic mode with the job's `auto` thresholds (a SAM 2.1-style tracker only).

    With `auto.association == "learned"` the association head is loaded from `auto.association_head`, or
    from the file shipped for `model_name` (see `association_head_uri`).
    """
    from batchtrack.model.auto import AutoTrackConfig, AutoTracker
    from batchtrack.model.tracker import Tracker

    if not isinstance(tracker, Tracker):
        raise ConfigError(f"automatic mode needs a SAM 2.1-style tracker, got {type(tracker).__name__}")
    head = None
    if auto.association == "learned":
        uri = association_head_uri(model_name or "", auto, storage_options)
        head = load_head(uri, tracker.config.d_model, storage_options).to(tracker.device)
    return AutoTracker(tracker, AutoTrackConfig.from_auto(auto), head)


def shipped_association_head(model_name: str) -> Path | None:
    """The association head shipped for `model_name` (batchtrack/weights/MODEL.association.safetensors), if any."""
    from batchtrack.model.build import WEIGHTS_DIR

    path = WEIGHTS_DIR / f"{model_name}.association.safetensors"
    return path if path.is_file() else None


def association_head_uri(model_name: str, auto: AutoConfig, storage_options: Mapping[str, Any] | None = None) -> str:
    """Where the learned association head comes from: `auto.association_head`, else the model's shipped file.

    Raises ConfigError when neither exists.
    """
    if auto.association_head is not None:
        fs, path = fsspec.core.url_to_fs(auto.association_head, **dict(storage_options or {}))
        if not fs.isfile(path):
            raise ConfigError(f"auto.association_head {auto.association_head} does not exist")
        return auto.association_head
    shipped = shipped_association_head(model_name)
    if shipped is None:
        raise ConfigError(
            f"auto.association='learned' needs association-head weights: model {model_name!r} ships none "
            f"(no batchtrack/weights/{model_name}.association.safetensors); set auto.association_head or use "
            "auto.association='iou'"
        )
    return str(shipped)


def load_head(uri: str, dim: int, storage_options: Mapping[str, Any] | None = None) -> AssociationHead:
    """An `AssociationHead` of width `dim` with the weights at `uri` (a local path or any fsspec URI)."""
    from batchtrack.model.association import AssociationHead, load_association_head

    head = AssociationHead(dim)
    if Path(uri).is_file():
        return load_association_head(uri, head)
    with fsspec.open(uri, "rb", **dict(storage_options or {})) as handle, tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "association_head.safetensors"
        local.write_bytes(handle.read())
        return load_association_head(local, head)


def check_auto_config(auto: AutoConfig, model_name: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Raise ConfigError for automatic-mode settings the job cannot run (checked before any actor starts)."""
    if auto.association == "learned":
        association_head_uri(model_name, auto, storage_options)


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
