"""Object pointers: a 256-d summary of the object from the decoder's chosen output token, with a
temporal position for memory attention.

Letters: B objects, P pointers, C pointer channels (256), M memory channels (64).

The tracker owns the parameters under their checkpoint names (`obj_ptr_proj`, `obj_ptr_tpos_proj`,
`no_obj_ptr`); this module builds them and holds the maths that uses them.
"""

from __future__ import annotations

import torch
from torch import nn

from batchtrack.model.nn.layers import MLP


def build_obj_ptr_proj(dim: int) -> MLP:
    """The 3-layer MLP from a SAM output token to an object pointer (`obj_ptr_proj`)."""
    return MLP(dim, dim, dim, 3)


def build_obj_ptr_tpos_proj(dim: int, mem_dim: int) -> nn.Linear:
    """Projects the pointers' 1-D temporal sine encoding to memory width (`obj_ptr_tpos_proj`)."""
    return nn.Linear(dim, mem_dim)


def sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(P,) positions → (P, dim): [sin of dim/2 frequencies | cos of the same], halves concatenated."""
    half = dim // 2
    freqs = torch.arange(half, dtype=torch.float32, device=positions.device)
    freqs = temperature ** (2 * (freqs // 2) / half)  # (dim/2,)
    angles = positions.unsqueeze(-1) / freqs  # (P, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def gate_pointer(pointer: torch.Tensor, visible: torch.Tensor, no_obj_ptr: torch.Tensor) -> torch.Tensor:
    """An occluded object's pointer is exactly `no_obj_ptr`. pointer (B, C), visible (B, 1) bool."""
    return torch.where(visible, pointer, no_obj_ptr.expand_as(pointer))


def pointer_tokens(
    pointers: torch.Tensor, offsets: list[int], max_offset: int, tpos_proj: nn.Module, mem_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn pointers into memory tokens for cross-attention.

    pointers (B, P, C); offsets: the P signed temporal distances (current frame - pointer frame, in
    processing direction); max_offset normalises them (SAM 2: min(clip length, 16) - 1).
    Each C-d pointer becomes C / M consecutive M-d tokens sharing one projected position.
    Returns tokens (B, P * C/M, M) and their positions (B, P * C/M, M).
    """
    b, p, c = pointers.shape
    split = c // mem_dim
    rel = torch.tensor(offsets, device=pointers.device) / max_offset  # (P,) float32
    pos = tpos_proj(sine_1d(rel, c).to(pointers.dtype))  # (P, M)
    pos = pos.repeat_interleave(split, dim=0).unsqueeze(0).expand(b, -1, -1)  # (B, P*C/M, M)
    tokens = pointers.reshape(b, p * split, mem_dim)  # (B, P*C/M, M)
    return tokens, pos
