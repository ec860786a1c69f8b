"""Build a tracker (or just its image encoder) by model name, load weights strictly, place it on a device."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from batchtrack.errors import ConfigError
from batchtrack.model.configs import RANDOM_BY_DESIGN, PEViTConfig, TrackerConfig, get_config
from batchtrack.model.loading.checkpoint import (
    SAM3_PARTS,
    SAM3_TRACKER_PARTS,
    check_sam3_state_dict,
    check_state_dict,
    load_sam3_strict,
    load_state_dict_file,
    load_strict,
    read_state_dict_shapes,
)
from batchtrack.model.tracker.image_encoder import ImageEncoder

if TYPE_CHECKING:
    from batchtrack.model.tracker.tracker import Tracker

RANDOM_WEIGHTS_SEED = 0
T = TypeVar("T")
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
_IMAGE_ENCODER_PREFIX = "image_encoder."


def default_device() -> torch.device:
    """CUDA when a GPU is visible, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def shipped_weights(name: str) -> Path | None:
    """The weights file shipped inside the package for `name` (only tiny-synthetic has one), if present."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def needs_weights(name: str) -> bool:
    """Whether `name` may only run with real weights: neither shipped nor random by design (test-tiny)."""
    return shipped_weights(name) is None and name not in RANDOM_BY_DESIGN


def _resolve_checkpoint(name: str, checkpoint: str | Path | None, random_weights: bool) -> Path | None:
    """The weights file to load, or None for random weights (only when asked for or by design)."""
    if checkpoint is not None:
        if random_weights:
            raise ConfigError(f"model {name!r}: give a checkpoint or random_weights=True, not both")
        return Path(checkpoint)
    if random_weights:
        return None
    if needs_weights(name):
        # Random weights of a real model track noise; a job must never write that silently.
        raise ConfigError(
            f"model {name!r} ships no weights: pass checkpoint=PATH (Meta's .pt or a .safetensors file), "
            "or random_weights=True for tests and benchmarks"
        )
    return shipped_weights(name)


def _seeded(factory: Callable[[TrackerConfig], T], config: TrackerConfig) -> T:
    """`factory(config)` initialised from a fixed seed without touching the caller's RNG state.

    Requested random weights are the same in every actor and every run, so a clip's rows do not depend
    on which actor tracked it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return factory(config)


def build_image_encoder(
    config: TrackerConfig | str,
    checkpoint: str | Path | None = None,
    device: torch.device | str | None = None,
) -> ImageEncoder:
    """The image encoder alone, in eval mode; `checkpoint` is a whole-tracker file whose `image_encoder.*` is used.

    Without a checkpoint the weights are PyTorch's default initialisation (pos embeddings zero, as SAM 2).
    """
    config = get_config(config) if isinstance(config, str) else config
    if isinstance(config.image_encoder, PEViTConfig):
        raise ConfigError(f"model {config.name!r}: build_image_encoder covers SAM 2.1; use build_tracker for SAM 3")
    encoder = ImageEncoder(config.image_encoder)
    if checkpoint is not None:
        full = load_state_dict_file(checkpoint)
        subset = {k[len(_IMAGE_ENCODER_PREFIX) :]: v for k, v in full.items() if k.startswith(_IMAGE_ENCODER_PREFIX)}
        load_strict(encoder, subset, f"{checkpoint} (image_encoder.*)")
    return encoder.to(device or default_device()).eval()


def _builds_detector(config: TrackerConfig, path: Path | None, parts: Sequence[str] | None) -> bool:
    """Whether a SAM 3 build includes the detector: when `parts` names it, or a checkpoint is read whole."""
    wanted = parts if parts is not None else (SAM3_PARTS if path is not None else SAM3_TRACKER_PARTS)
    if "detector" not in wanted:
        return False
    if config.detector is None:
        raise ConfigError(f"model {config.name!r} has no detector config: load parts=('vision', 'tracker')")
    return True


def _sam3_tracker(config: TrackerConfig) -> Tracker:
    """SAM 3's tracker without the detector: the tracker on SAM 3's image encoder (PE ViT trunk + dual neck)."""
    from batchtrack.model.sam3.dual_neck import Sam3ImageEncoder
    from batchtrack.model.tracker.tracker import Tracker

    assert isinstance(config.image_encoder, PEViTConfig)
    return Tracker(config, image_encoder=Sam3ImageEncoder(config.image_encoder, config.image_size))


def _tracker_factory(config: TrackerConfig, path: Path | None, parts: Sequence[str] | None) -> Callable[..., Tracker]:
    from batchtrack.model.tracker.tracker import Tracker

    sam3 = isinstance(config.image_encoder, PEViTConfig)
    if parts is not None and not sam3:
        raise ConfigError(f"model {config.name!r}: parts= applies to SAM 3 checkpoints only")
    if sam3 and _builds_detector(config, path, parts):
        from batchtrack.model.sam3.concept_tracker import ConceptTracker

        return ConceptTracker
    return _sam3_tracker if sam3 else Tracker


def new_tracker(config: TrackerConfig | str, *, parts: Sequence[str] | None = None) -> Tracker:
    """A tracker of `config` as initialised (nothing loaded, the caller's RNG and default device), in train mode.

    The parts are the ones `build_tracker` builds without a checkpoint: SAM 2.1's Hiera encoder, or SAM 3's
    image encoder and, when `parts` names "detector", the detector (a ConceptTracker). For training, tests and
    state-dict checks; a tracker to run comes from `build_tracker`.
    """
    config = get_config(config) if isinstance(config, str) else config
    return _tracker_factory(config, None, parts)(config)


def check_checkpoint(
    config: TrackerConfig | str, checkpoint: str | Path, *, parts: Sequence[str] | None = None
) -> None:
    """Raise CheckpointError when `checkpoint` would not load into the tracker `build_tracker` makes of `config`.

    Reads only names and shapes (`read_state_dict_shapes`) and builds the model on the meta device, so no
    weight is read or allocated: a job's driver checks a checkpoint in about a second, before Ray starts.
    """
    config = get_config(config) if isinstance(config, str) else config
    path = Path(checkpoint)
    factory = _tracker_factory(config, path, parts)
    shapes = read_state_dict_shapes(path)
    with torch.device("meta"):
        model = factory(config)
    if isinstance(config.image_encoder, PEViTConfig):
        check_sam3_state_dict(model, shapes, str(path), None if parts is None else list(parts))
    else:
        check_state_dict(model, shapes, str(path))


def build_tracker(
    config: TrackerConfig | str,
    checkpoint: str | Path | None = None,
    device: torch.device | str | None = None,
    *,
    random_weights: bool = False,
    parts: Sequence[str] | None = None,
) -> Tracker:
    """A ready-to-run tracker: config looked up by name (or given), weights loaded strictly, eval mode, on `device`.

    Weights come from `checkpoint` (an official SAM 2.1 `.pt` or a `.safetensors` file, a local path; see
    batchtrack.io.checkpoint_cache for URIs) or, when it is None, from the file shipped for the model
    (batchtrack/weights/NAME.safetensors). A model that ships none (the sam2.1_hiera_* sizes) raises
    ConfigError unless `random_weights=True`, which is meant for tests and benchmarks; `test-tiny` is random
    by design. `device` defaults to CUDA when available, else CPU.

    SAM 3 (`"sam3"`): the checkpoint is Meta's sam3.pt (or a .safetensors with the same keys). `parts` names
    the SAM 3 parts built and read: with a checkpoint, by default all ("vision", "tracker", "detector"): the
    result is a ConceptTracker (the tracker plus text encoder and detector head on the same image encoder)
    and a whole sam3.pt loads with nothing missing or unexpected; `parts=("vision", "tracker")` builds a plain
    Tracker and ignores the detector's keys on purpose. Random weights build the tracker alone unless `parts`
    names "detector". `parts` is an error for SAM 2.1 models.
    """
    config = get_config(config) if isinstance(config, str) else config
    path = _resolve_checkpoint(config.name, checkpoint, random_weights)
    sam3 = isinstance(config.image_encoder, PEViTConfig)
    factory = _tracker_factory(config, path, parts)
    model = _seeded(factory, config) if random_weights else factory(config)
    if path is not None and sam3:
        load_sam3_strict(model, load_state_dict_file(path), str(path), None if parts is None else list(parts))
    elif path is not None:
        load_strict(model, load_state_dict_file(path), str(path))
    return model.to(device or default_device()).eval()
