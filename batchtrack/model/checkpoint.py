"""Checkpoint files: read official SAM 2.1 `.pt` and `.safetensors` state dicts, load them strictly, save ours.

Strict means every key of the module is in the file with the same shape and nothing else is: the
differences are listed by name in a `CheckpointError` before anything is copied into the module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file as _load_safetensors
from safetensors.torch import save_file as _save_safetensors
from torch import nn

from batchtrack.errors import CheckpointError

_LISTED = 20  # keys named per category in an error message


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict stored in `path` (.pt/.pth as saved by SAM 2 — `{"model": state_dict}` — or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".pt", ".pth"):
        raise CheckpointError(f"checkpoint {path}: unknown file type {suffix!r}; expected .pt, .pth or .safetensors")
    try:
        if suffix == ".safetensors":
            return _load_safetensors(str(path), device="cpu")
        # weights_only: a checkpoint is data; never run pickled code from it.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:
        # A truncated, corrupt or foreign file: torch's weights_only unpickler surfaces garbage as any of
        # UnpicklingError, EOFError, IndexError, RuntimeError...; all of them mean "not a readable checkpoint".
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(
            f"checkpoint {path} does not hold a state dict (a mapping of names to tensors, optionally under 'model')"
        )
    return dict(obj)


def _listing(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    more = f", ... ({len(keys) - _LISTED} more)" if len(keys) > _LISTED else ""
    return f"{len(keys)} {label}: {shown}{more}"


def check_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming missing, unexpected and mis-shaped keys; return quietly if all match."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = [
        _listing(label, keys)
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", mismatched))
        if keys
    ]
    raise CheckpointError(
        f"checkpoint {source} does not match {type(module).__name__}: " + "; ".join(parts),
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
    )


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy `state_dict` into `module` after checking names and shapes (see `check_state_dict`)."""
    check_state_dict(module, state_dict, source)
    module.load_state_dict(state_dict, strict=True)


def save_safetensors(module: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write `module`'s state dict to a .safetensors file (CPU copies, so tied tensors are stored apart)."""
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in module.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _save_safetensors(tensors, str(path), metadata=dict(metadata or {}))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (the checkpoint hash recorded in job outputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
