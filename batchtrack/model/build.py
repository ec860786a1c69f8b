"""Build a tracker (or just its image encoder) by model name, load weights strictly, place it on a device."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from batchtrack.model.checkpoint import load_state_dict_file, load_strict
from batchtrack.model.configs import TrackerConfig, get_config
from batchtrack.model.image_encoder import ImageEncoder

if TYPE_CHECKING:
    from batchtrack.model.tracker import Tracker

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
_IMAGE_ENCODER_PREFIX = "image_encoder."


def default_device() -> torch.device:
    """CUDA when a GPU is visible, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def shipped_weights(name: str) -> Path | None:
    """The weights file shipped inside the package for `name` (only tiny-synthetic has one), if present."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def _resolve_checkpoint(name: str, checkpoint: str | Path | None) -> Path | None:
    if checkpoint is not None:
        return Path(checkpoint)
    return shipped_weights(name)


def build_image_encoder(
    config: TrackerConfig | str,
    checkpoint: str | Path | None = None,
    device: torch.device | str | None = None,
) -> ImageEncoder:
    """The image encoder alone, in eval mode; `checkpoint` is a whole-tracker file whose `image_encoder.*` is used.

    Without a checkpoint the weights are PyTorch's default initialisation (pos embeddings zero, as SAM 2).
    """
    config = get_config(config) if isinstance(config, str) else config
    encoder = ImageEncoder(config.image_encoder)
    if checkpoint is not None:
        full = load_state_dict_file(checkpoint)
        subset = {k[len(_IMAGE_ENCODER_PREFIX) :]: v for k, v in full.items() if k.startswith(_IMAGE_ENCODER_PREFIX)}
        load_strict(encoder, subset, f"{checkpoint} (image_encoder.*)")
    return encoder.to(device or default_device()).eval()


def build_tracker(
    name: str,
    checkpoint: str | Path | None = None,
    device: torch.device | str | None = None,
) -> Tracker:
    """A ready-to-run tracker: config looked up by `name`, weights loaded strictly, eval mode, on `device`.

    Weights come from `checkpoint` (an official SAM 2.1 `.pt` or a `.safetensors` file) or, when it is None,
    from the file shipped for `name` (batchtrack/weights/NAME.safetensors) if there is one; otherwise the
    model keeps its random initialisation. `device` defaults to CUDA when available, else CPU.
    """
    config = get_config(name)
    if importlib.util.find_spec("batchtrack.model.tracker") is None:
        raise NotImplementedError(
            "batchtrack.model.tracker is not written yet; only build_image_encoder() is available"
        )
    from batchtrack.model.tracker import Tracker

    model = Tracker(config)
    path = _resolve_checkpoint(name, checkpoint)
    if path is not None:
        load_strict(model, load_state_dict_file(path), str(path))
    return model.to(device or default_device()).eval()
