"""Which tracker a job runs: a SAM 2.1-style model from batchtrack.model, or a classical baseline.

The driver decides it once, before Ray starts (`resolve_model`): the model and its weights (the checkpoint
fetched, checked against the model and hashed), whether automatic mode is available or why not, and whether
the actors need SAM 3's concept detector. The result, a `ResolvedModel`, is what planning keys its ids by
and what every actor builds (`build_trackers`) without deciding anything again.

Automatic mode (clips without prompts) wraps a loaded SAM 2.1-style tracker in `AutoTracker`; the
classical baselines (batchtrack.baselines) only propagate given masks and cannot find objects, so they
have no automatic mode.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import fsspec
import numpy as np

from batchtrack.config import AutoConfig, ConceptConfig, JobConfig, ModelConfig
from batchtrack.errors import ConfigError
from batchtrack.io.checkpoint_cache import CachedCheckpoint, fetch_checkpoint
from batchtrack.model.types import FrameResult, Prompt

if TYPE_CHECKING:
    from batchtrack.model.modes.association import AssociationHead
    from batchtrack.model.modes.concept import ConceptLoop
    from batchtrack.model.modes.track_planning import TrackPlanningConfig

BASELINE_PREFIX = "baseline-"
# How the job-wide concepts are named in an error when the config (not the CLI's --text flag) gave them.
TEXT_FROM_CONFIG = "--text (config key text)"


class FrameTracker(Protocol):
    """What the pipeline needs from a tracker (batchtrack.model's Tracker and the baselines both fit)."""

    def track(
        self, frames: Iterable[tuple[int, np.ndarray]], prompts: Sequence[Prompt], *, reverse: bool = False
    ) -> Iterator[FrameResult]: ...


@dataclass(frozen=True)
class ResolvedModel:
    """Which tracker a job runs and with what, decided once on the driver before Ray starts (`resolve_model`).

    Planning reads its name, weights hash and automatic-mode availability; each actor builds exactly this
    (`build_trackers`). Picklable: it travels to the actors inside their settings.
    """

    config: ModelConfig
    checkpoint_hash: str  # 16 hex chars of the checkpoint's SHA-256, or a tag of shipped or random weights
    checkpoint: CachedCheckpoint | None = None  # the checkpoint in the driver's node cache; None: none configured
    auto: AutoConfig | None = None  # automatic-mode settings; None when automatic mode is unavailable
    no_auto_reason: str | None = None  # why automatic mode is unavailable (videos without prompts are skipped)
    has_detector: bool = False  # the model carries a concept detector (SAM 3's text encoder and detector)
    detector: bool = False  # the job tracks concepts: actors build the model with its detector
    concept: ConceptConfig = field(default_factory=ConceptConfig)  # concept-mode loop settings (`concept_planning`)

    @property
    def name(self) -> str:
        return self.config.name

    def check_concepts(self, where: str) -> None:
        """Raise ConfigError (one line, naming `where`: the flag or the manifest) when concepts cannot be tracked."""
        if not self.has_detector:
            raise _no_detector(self.name, where)

    def with_concepts(self, where: str) -> ResolvedModel:
        """This model, built with its detector because `where` (e.g. the prompt manifest's text lines) has concepts."""
        self.check_concepts(where)
        return replace(self, detector=True)


@dataclass(frozen=True)
class ActorTrackers:
    """The trackers one actor runs: the prompted one, and the automatic one when the job has automatic mode."""

    prompted: FrameTracker
    auto: FrameTracker | None  # tracks videos planned in mode `auto`; None: the job has no automatic mode


def resolve_model(cfg: JobConfig, *, text_source: str = TEXT_FROM_CONFIG) -> ResolvedModel:
    """The job's model, decided once: raises ConfigError (CheckpointError for a checkpoint that does not fit)
    for anything the job cannot run, before any actor starts.

    `text_source` names the job-wide concepts in the error when the model has no detector (the CLI says --text).
    Fetching the checkpoint here, on the driver, also fills this node's cache.
    """
    model_cfg, options = cfg.model, dict(cfg.storage_options)
    check_model_weights(model_cfg)
    has_detector = has_concept_detector(model_cfg.name)
    if cfg.text and not has_detector:
        raise _no_detector(model_cfg.name, text_source)
    local = _checked_checkpoint(model_cfg, options)
    no_auto = auto_unavailable_reason(model_cfg.name, cfg.auto)
    if no_auto is None:
        check_auto_config(cfg.auto, model_cfg.name, options)
    return ResolvedModel(
        config=model_cfg,
        checkpoint_hash=weights_hash(model_cfg, local),
        checkpoint=local,
        auto=cfg.auto if no_auto is None else None,
        no_auto_reason=no_auto,
        has_detector=has_detector,
        detector=bool(cfg.text),
        concept=cfg.concept,
    )


def build_trackers(
    model: ResolvedModel, device: str, storage_options: Mapping[str, Any] | None = None
) -> ActorTrackers:
    """What an actor tracks with, built on `device` as `model` says.

    Files are located on this node: the checkpoint fetched into its cache, a learned association head read from
    `auto.association_head` or from this node's copy of the file shipped for the model.
    """
    tracker = load_tracker(model.config, device, storage_options, detector=model.detector)
    auto = None
    if model.auto is not None:
        auto = build_auto_tracker(tracker, model.auto, model.name, storage_options)
    return ActorTrackers(tracker, auto)


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
    from batchtrack.model.modes.auto import AutoTrackConfig, AutoTracker
    from batchtrack.model.tracker.tracker import Tracker

    if not isinstance(tracker, Tracker):
        raise ConfigError(f"automatic mode needs a SAM 2.1-style tracker, got {type(tracker).__name__}")
    head = None
    if auto.association == "learned":
        uri = association_head_uri(model_name or "", auto, storage_options)
        head = load_head(uri, tracker.config.d_model, storage_options).to(tracker.device)
    return AutoTracker(tracker, AutoTrackConfig.from_auto(auto), head)


def shipped_association_head(model_name: str) -> Path | None:
    """The association head shipped for `model_name` (batchtrack/weights/MODEL.association.safetensors), if any."""
    from batchtrack.model.loading.build import WEIGHTS_DIR

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
    from batchtrack.model.modes.association import AssociationHead, load_association_head

    head = AssociationHead(dim)
    if Path(uri).is_file():
        return load_association_head(uri, head)
    with fsspec.open(uri, "rb", **dict(storage_options or {})) as handle, tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "association_head.safetensors"
        local.write_bytes(handle.read())
        return load_association_head(local, head)


def has_concept_detector(model_name: str) -> bool:
    """Whether `model_name` carries a concept detector (SAM 3's text encoder + detector), needed by --text."""
    if model_name.startswith(BASELINE_PREFIX):
        return False
    from batchtrack.model.configs import get_config

    return getattr(get_config(model_name), "detector", None) is not None


def _no_detector(model_name: str, where: str) -> ConfigError:
    return ConfigError(
        f"{where} needs a model with a concept detector (--model sam3 or sam3-test-tiny); model {model_name!r} has none"
    )


def concept_planning(concept: ConceptConfig) -> TrackPlanningConfig:
    """SAM 3's video-loop rules (`TrackPlanningConfig`, SAM 3's defaults) with the job's `concept` settings."""
    from batchtrack.model.modes.track_planning import TrackPlanningConfig

    return TrackPlanningConfig(recondition_every=concept.recondition_every)


def build_concept_loop(tracker: FrameTracker, concept: ConceptConfig | None = None) -> ConceptLoop:
    """The concept-mode loop over a loaded SAM 3 model with its detector (a `ConceptTracker`), with the job's
    `concept` settings (default: SAM 3's)."""
    from batchtrack.model.modes.concept import ConceptLoop
    from batchtrack.model.sam3.concept_tracker import ConceptTracker, Sam3FrameDetector

    if not isinstance(tracker, ConceptTracker):
        raise ConfigError(f"concept mode needs a tracker with a concept detector, got {type(tracker).__name__}")
    return ConceptLoop(tracker, Sam3FrameDetector(tracker), concept_planning(concept or ConceptConfig()))


def check_auto_config(auto: AutoConfig, model_name: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Raise ConfigError for automatic-mode settings the job cannot run (checked before any actor starts)."""
    if auto.association == "learned":
        association_head_uri(model_name, auto, storage_options)


def check_model_weights(model_cfg: ModelConfig) -> None:
    """Raise ConfigError (one line, naming the flag) when the model would run on weights nobody asked for.

    Checked before any actor starts: a SAM 2.1 size without a checkpoint would otherwise track noise.
    """
    if model_cfg.name.startswith(BASELINE_PREFIX):
        if model_cfg.checkpoint is not None or model_cfg.random_weights:
            raise ConfigError(
                f"model.name={model_cfg.name!r} is a classical baseline, which has no weights: "
                "drop --checkpoint / --random-weights"
            )
        return
    from batchtrack.model.configs import get_config
    from batchtrack.model.loading.build import needs_weights

    get_config(model_cfg.name)  # an unknown name is named before anything else
    if model_cfg.checkpoint is None and not model_cfg.random_weights and needs_weights(model_cfg.name):
        raise ConfigError(
            f"model {model_cfg.name!r} ships no weights: give its checkpoint with --checkpoint PATH_OR_URI "
            "(model.checkpoint; Meta's .pt or a .safetensors), or --random-weights for tests and benchmarks"
        )


def fetch_model_checkpoint(
    model_cfg: ModelConfig, storage_options: Mapping[str, Any] | None = None
) -> CachedCheckpoint | None:
    """The configured checkpoint as a local file on this node (downloaded once into the node's cache), if any."""
    if model_cfg.checkpoint is None:
        return None
    return fetch_checkpoint(model_cfg.checkpoint, storage_options, model_cfg.cache_dir)


def load_tracker(
    model_cfg: ModelConfig,
    device: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    detector: bool = False,
) -> FrameTracker:
    """Build the configured tracker on `device`; `baseline-*` names resolve to the classical baselines.

    A checkpoint URI is read with `storage_options` (the job's) and cached on this node. image_size,
    encoder_batch_size and max_cond_frames of `model_cfg` reach the tracker's config. `detector`: SAM 3 with
    its text encoder and detector too (concept mode), read from the checkpoint or random with the rest.
    A model without the weights it needs is refused in the words of `check_model_weights`, also when a
    hand-made `ResolvedModel` (not one from `resolve_model`) reaches an actor.
    """
    check_model_weights(model_cfg)
    if model_cfg.name.startswith(BASELINE_PREFIX):
        from batchtrack.baselines import build_baseline

        return build_baseline(model_cfg.name)
    from batchtrack.model.configs import PEViTConfig, tracker_config
    from batchtrack.model.loading.build import build_tracker
    from batchtrack.model.loading.checkpoint import SAM3_PARTS, SAM3_TRACKER_PARTS

    config = tracker_config(
        model_cfg.name,
        image_size=model_cfg.image_size,
        encoder_batch_size=model_cfg.encoder_batch_size,
        max_cond_frames=model_cfg.max_cond_frames,
    )
    local = fetch_model_checkpoint(model_cfg, storage_options)
    # SAM 3: Meta's sam3.pt also holds the detector; it is built and read only for concept mode.
    sam3 = isinstance(config.image_encoder, PEViTConfig)
    parts = (SAM3_PARTS if detector else SAM3_TRACKER_PARTS) if sam3 and (local is not None or detector) else None
    return build_tracker(
        config,
        checkpoint=local.path if local is not None else None,
        device=device,
        random_weights=model_cfg.random_weights,
        parts=parts,
    )


def check_checkpoint_fits(model_cfg: ModelConfig, local: CachedCheckpoint) -> None:
    """Raise CheckpointError (one line: the first differing keys and how many more) when the checkpoint does not
    fit `model_cfg`'s model. Reads names and shapes only, so the driver refuses a wrong file before Ray starts
    instead of every actor failing on it."""
    from batchtrack.errors import CheckpointError
    from batchtrack.model.configs import PEViTConfig, tracker_config
    from batchtrack.model.loading.build import check_checkpoint
    from batchtrack.model.loading.checkpoint import SAM3_TRACKER_PARTS, describe_differences

    config = tracker_config(model_cfg.name, image_size=model_cfg.image_size, max_cond_frames=model_cfg.max_cond_frames)
    # SAM 3's detector keys are checked by the actors that build it (concept jobs); the tracker's are checked here.
    parts = SAM3_TRACKER_PARTS if isinstance(config.image_encoder, PEViTConfig) else None
    try:
        check_checkpoint(config, local.path, parts=parts)
    except CheckpointError as exc:
        what = f"checkpoint {local.uri} does not fit model {model_cfg.name!r}"
        raise CheckpointError(
            describe_differences(exc, what), missing=exc.missing, unexpected=exc.unexpected, mismatched=exc.mismatched
        ) from exc


def _checked_checkpoint(model_cfg: ModelConfig, storage_options: Mapping[str, Any]) -> CachedCheckpoint | None:
    """The configured checkpoint fetched into this node's cache and checked against the model, if any."""
    local = fetch_model_checkpoint(model_cfg, storage_options)
    if local is not None:
        check_checkpoint_fits(model_cfg, local)
    return local


def weights_hash(model_cfg: ModelConfig, local: CachedCheckpoint | None) -> str:
    """16 hex chars of SHA-256 over the checkpoint's bytes (`local`), or a tag of the shipped (or random) weights.

    Part of every clip id, so new weights never resume from old outputs.
    """
    if local is not None:
        return local.short_hash
    if model_cfg.random_weights:
        from batchtrack.model.loading.build import RANDOM_WEIGHTS_SEED

        # Requested random weights come from a fixed seed (model.build.RANDOM_WEIGHTS_SEED): same in every run.
        return f"random-{RANDOM_WEIGHTS_SEED}"
    try:
        version = metadata.version("batchtrack")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        version = "source"
    return f"builtin-{version}"


def checkpoint_hash(model_cfg: ModelConfig, storage_options: Mapping[str, Any] | None = None) -> str:
    """The weights hash of `model_cfg` (`weights_hash`), its checkpoint fetched and checked on this node.

    A missing checkpoint is a ConfigError, one that does not fit the model a CheckpointError.
    """
    check_model_weights(model_cfg)
    return weights_hash(model_cfg, _checked_checkpoint(model_cfg, dict(storage_options or {})))
