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


def load_state_dict_file(path: str | Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The state dict stored in `path` (.pt/.pth as saved by SAM 2 — `{"model": state_dict}` — or .safetensors).

    `mmap`: map a .pt's tensors from the file instead of reading them, so names and shapes cost no more
    than the pickle's size (a file saved in torch's legacy format cannot be mapped and is read whole).
    """
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
        obj = _torch_load(path, mmap)
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


def _torch_load(path: Path, mmap: bool) -> object:
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # a legacy (non-zip) file cannot be mapped; anything else is the file's fault
                raise
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict_shapes(path: str | Path) -> dict[str, torch.Tensor]:
    """The names and shapes of the tensors in a checkpoint, without reading their data.

    A .safetensors file gives them in its header (as meta tensors); a .pt is memory-mapped. The driver of a
    job checks a multi-GB checkpoint against its model this way in about a second.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return load_state_dict_file(path, mmap=True)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: torch.empty(handle.get_slice(key).get_shape(), device="meta") for key in handle.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as exc:  # a truncated or foreign file: safetensors raises its own SafetensorError
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from exc


def describe_differences(error: CheckpointError, what: str, listed: int = 3) -> str:
    """One line for a user: `what`, how many keys differ, the first `listed` of them, and how many more.

    >>> error = CheckpointError("...", missing=["a.w", "b.w"], unexpected=["c.w"], mismatched=["d.w (...)"])
    >>> describe_differences(error, "checkpoint x.pt does not fit model 'm'", listed=2)
    "checkpoint x.pt does not fit model 'm': 4 keys differ: missing a.w, b.w and 2 more"
    """
    named = [("missing", k) for k in error.missing] + [("unexpected", k) for k in error.unexpected]
    named += [("mis-shaped", k) for k in error.mismatched]
    if not named:
        return f"{what}: {error}"
    parts: list[str] = []
    for index, (label, key) in enumerate(named[:listed]):
        parts.append(key if index and named[index - 1][0] == label else f"{label} {key}")
    shown = ", ".join(parts)
    rest = len(named) - listed
    return f"{what}: {len(named)} keys differ: {shown}{f' and {rest} more' if rest > 0 else ''}"


def _listing(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    more = f", ... ({len(keys) - _LISTED} more)" if len(keys) > _LISTED else ""
    return f"{len(keys)} {label}: {shown}{more}"


def check_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming missing, unexpected and mis-shaped keys; return quietly if all match."""
    what = f"checkpoint {source} does not match {type(module).__name__}"
    _raise_on_differences(module.state_dict(), state_dict, what)


def _raise_on_differences(expected: Mapping[str, torch.Tensor], read: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError(`what`: …) naming missing, unexpected and mis-shaped keys of `read`; quiet if all match."""
    missing = [k for k in expected if k not in read]
    unexpected = [k for k in read if k not in expected]
    mismatched = [
        f"{k} (file {tuple(read[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in read and tuple(read[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    listed = [
        _listing(label, keys)
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", mismatched))
        if keys
    ]
    raise CheckpointError(
        f"{what}: " + "; ".join(listed), missing=missing, unexpected=unexpected, mismatched=mismatched
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


# --- SAM 3 -------------------------------------------------------------------------------------------
# Meta's sam3.pt holds the whole model: `detector.*` (image side, text encoder, fusion encoder, DETR decoder,
# segmentation and geometry heads, scoring) and `tracker.*` (SAM 2.1's modules under SAM 3's names). A Tracker
# holds the image side and the tracker; a ConceptTracker (concept_tracker.py) also the text encoder and the
# detector head. The renames are this table, applied to whole prefixes (never substrings) and tested in both
# directions; each row is (Meta's prefix, ours, part), the first matching row wins.
SAM3_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("detector.backbone.vision_backbone.", "image_encoder.", "vision"),
    ("detector.backbone.language_backbone.", "text_encoder.", "detector"),
    ("detector.", "detector.", "detector"),  # the head: fusion encoder, DETR decoder, scoring, seg + geometry heads
    ("tracker.transformer.encoder.", "memory_attention.", "tracker"),
    ("tracker.maskmem_backbone.", "memory_encoder.", "tracker"),
    ("tracker.", "", "tracker"),
)
# Within the decoder's two-way transformer layers SAM 3 names the MLP's linears lin1 / lin2 (SAM 2.1: layers.0 / 1).
_SAM3_TWO_WAY_LAYERS = "sam_mask_decoder.transformer.layers."
SAM3_MLP_NAMES: tuple[tuple[str, str], ...] = ((".mlp.lin1.", ".mlp.layers.0."), (".mlp.lin2.", ".mlp.layers.1."))
SAM3_DETECTOR_PREFIX = "detector."
SAM3_PARTS: tuple[str, ...] = ("vision", "tracker", "detector")
# What a plain Tracker holds (a ConceptTracker holds all of SAM3_PARTS).
SAM3_TRACKER_PARTS: tuple[str, ...] = ("vision", "tracker")
SAM3_BUILT_PARTS = SAM3_TRACKER_PARTS  # former name of SAM3_TRACKER_PARTS, kept for its callers


def _swap_mlp_name(key: str, pairs: tuple[tuple[str, str], ...]) -> str:
    if not key.startswith(_SAM3_TWO_WAY_LAYERS):
        return key
    for old, new in pairs:
        if old in key:
            return key.replace(old, new, 1)
    return key


def sam3_part(key: str) -> str | None:
    """Which SAM 3 part a Meta key belongs to ('vision', 'tracker', 'detector'), None if it is not SAM 3's."""
    for meta, _, part in SAM3_PREFIXES:
        if key.startswith(meta):
            return part
    return "detector" if key.startswith(SAM3_DETECTOR_PREFIX) else None


def sam3_key_to_ours(key: str) -> str:
    """Meta's SAM 3 key → the state-dict key of a (Concept)Tracker (ValueError for keys of no SAM 3 part)."""
    for meta, ours, _ in SAM3_PREFIXES:
        if key.startswith(meta):
            return _swap_mlp_name(ours + key[len(meta) :], tuple((o, n) for o, n in SAM3_MLP_NAMES))
    raise ValueError(f"{key!r} is not a key of SAM 3")


def our_key_to_sam3(key: str) -> str:
    """A (Concept)Tracker's state-dict key → Meta's SAM 3 key (the inverse of `sam3_key_to_ours`)."""
    key = _swap_mlp_name(key, tuple((n, o) for o, n in SAM3_MLP_NAMES))
    for meta, ours, _ in SAM3_PREFIXES:
        if ours and key.startswith(ours):
            return meta + key[len(ours) :]
    return "tracker." + key


def check_sam3_parts(parts: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """The SAM 3 parts a load reads: all of them by default; ConfigError-free validation, CheckpointError if unknown."""
    if parts is None:
        return SAM3_PARTS
    unknown = [p for p in parts if p not in SAM3_PARTS]
    if unknown or not parts:
        raise CheckpointError(f"parts {list(parts)!r}: each must be one of {list(SAM3_PARTS)}")
    return tuple(parts)


def sam3_state_dict_to_ours(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    parts: tuple[str, ...] | list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Meta's SAM 3 state dict → `module`'s, checked strictly in Meta's names.

    `parts` restricts what is read: the keys of a SAM 3 part left out are ignored, by request. The default
    reads every part: a ConceptTracker reads a whole sam3.pt; a plain Tracker (no detector) given a file with
    detector keys raises naming them. Keys of no SAM 3 part, keys of a requested part the module lacks,
    missing keys and shape mismatches raise CheckpointError naming them.
    """
    wanted = check_sam3_parts(parts)
    expected = {our_key_to_sam3(k): v for k, v in module.state_dict().items()}
    held = {sam3_part(k) for k in expected}
    not_held = [k for k in state_dict if sam3_part(k) in wanted and sam3_part(k) not in held]
    if not_held:
        raise CheckpointError(
            f"checkpoint {source}: this {type(module).__name__} does not hold SAM 3's detector (text encoder, "
            f"fusion encoder, DETR decoder, heads); "
            + _listing("keys of it", not_held)
            + "; build it with the detector (build_tracker with a checkpoint and parts=None, a ConceptTracker) "
            "or load the image side and tracker alone with parts=('vision', 'tracker')",
            unexpected=not_held,
        )
    read = {k: v for k, v in state_dict.items() if sam3_part(k) in wanted or sam3_part(k) is None}
    expected = {k: v for k, v in expected.items() if sam3_part(k) in wanted}
    read = _rope_tables_for_this_grid(expected, read)
    hint = "; a checkpoint without the detector loads with parts=('vision', 'tracker')" if "detector" in wanted else ""
    _raise_on_differences(expected, read, f"checkpoint {source} does not match SAM 3 ({', '.join(wanted)}){hint}")
    return {sam3_key_to_ours(k): v for k, v in read.items()}


# The PE ViT's RoPE tables: state-dict keys, but computed from the token grid (image size / patch), not learned.
SAM3_ROPE_TABLE_SUFFIX = ".attn.freqs_cis"


def _rope_tables_for_this_grid(
    expected: Mapping[str, torch.Tensor], read: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """`read` with each RoPE table computed for another grid replaced by the module's own (built for its size).

    Meta's sam3.pt stores the trunk's `freqs_cis` for the 72 x 72 grid of 1008 px; a global block's table has
    one row per token of the grid, so at another `image_size` its shape differs. The table is a function of
    the grid alone (pe_vit.axial_rope_table), so the module's table, built for the configured size, is the right
    one. Only a table with the same head dimension and a square row count is swapped: anything else (a
    different trunk) stays for the strict check to name.
    """
    out = dict(read)
    for key, stored in read.items():
        own = expected.get(key)
        if not key.endswith(SAM3_ROPE_TABLE_SUFFIX) or own is None or own.shape == stored.shape:
            continue
        rows = stored.shape[0] if stored.ndim == 2 else 0
        if own.ndim == 2 and stored.shape[1] == own.shape[1] and rows > 0 and int(rows**0.5) ** 2 == rows:
            out[key] = own
    return out


def load_sam3_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    parts: tuple[str, ...] | list[str] | None = None,
) -> None:
    """Copy Meta's SAM 3 `state_dict` (the requested parts) into `module`; see `sam3_state_dict_to_ours`.

    Every key of `module` must be covered: a module with the vision and tracker parts needs both.
    """
    module.load_state_dict(check_sam3_state_dict(module, state_dict, source, parts), strict=True)


def check_sam3_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    parts: tuple[str, ...] | list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """`state_dict` in `module`'s names once it fits (see `load_sam3_strict`); CheckpointError naming what does not."""
    ours = sam3_state_dict_to_ours(module, state_dict, source, parts)
    absent = [our_key_to_sam3(k) for k in module.state_dict() if k not in ours]
    if absent:
        raise CheckpointError(
            f"checkpoint {source}: parts {list(check_sam3_parts(parts))} leave the model's "
            + _listing("keys unloaded", absent),
            missing=absent,
        )
    return ours


# SAM 3's text encoder (model/text_encoder.py) keeps Meta's names below this prefix: loading is a prefix strip.
SAM3_TEXT_ENCODER_PREFIX = "detector.backbone.language_backbone."


def load_sam3_text_encoder(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy the `detector.backbone.language_backbone.*` keys of Meta's SAM 3 state dict into a TextEncoder.

    Keys outside that prefix (the rest of sam3.pt) are ignored; below it, missing, unexpected and mis-shaped
    keys raise CheckpointError naming them (in Meta's names) before anything is copied.
    """
    read = {k: v for k, v in state_dict.items() if k.startswith(SAM3_TEXT_ENCODER_PREFIX)}
    expected = {SAM3_TEXT_ENCODER_PREFIX + k: v for k, v in module.state_dict().items()}
    _raise_on_differences(expected, read, f"checkpoint {source} does not match SAM 3's text encoder")
    module.load_state_dict({k[len(SAM3_TEXT_ENCODER_PREFIX) :]: v for k, v in read.items()}, strict=True)


# SAM 3's detector head (model/detector.py, ConceptDetector) keeps Meta's names below `detector.`, apart from
# the image side and the text encoder, which it does not hold.
_SAM3_NOT_HEAD = ("detector.backbone.",)


def load_sam3_detector_head(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy the detector head's keys of Meta's SAM 3 state dict (`detector.*` but `detector.backbone.*`) into a
    ConceptDetector; other keys are ignored, and below that prefix missing, unexpected and mis-shaped keys raise
    CheckpointError naming them (in Meta's names) before anything is copied."""
    read = {
        k: v for k, v in state_dict.items() if k.startswith(SAM3_DETECTOR_PREFIX) and not k.startswith(_SAM3_NOT_HEAD)
    }
    expected = {SAM3_DETECTOR_PREFIX + k: v for k, v in module.state_dict().items()}
    _raise_on_differences(expected, read, f"checkpoint {source} does not match SAM 3's detector head")
    module.load_state_dict({k[len(SAM3_DETECTOR_PREFIX) :]: v for k, v in read.items()}, strict=True)
