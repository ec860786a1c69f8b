"""Memory attention: the current frame's features attend to themselves and to the memory bank.
Attribute names match `memory_attention.*` in SAM 2.1 checkpoints.

Letters: B objects, C channels (256), M memory channels (64), h x w the feature grid, L = h*w query
tokens, K memory tokens = (spatial memory frames) * L + 4 * (object pointers).

Positions enter through 2-D axial RoPE on queries and on the spatial memory keys (the same table
for every memory frame); the object-pointer tokens at the end of the memory get no rotation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.model.nn.layers import Attention

# The input features get a tenth of their sine position encoding before the first layer.
INPUT_POS_SCALE = 0.1


class AxialRope:
    """2-D axial rotary encoding for an h x w token grid (token t at x = t mod w, y = t div w).

    Channels are rotated in adjacent pairs (2i, 2i+1); the first half of the pairs turn with x and
    the second half with y, at frequencies 1 / theta ** (4k / head_dim).
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        if head_dim % 4 != 0:
            raise ValueError(f"RoPE head dim must be a multiple of 4, got {head_dim}")
        self.head_dim = head_dim
        self.theta = theta
        self._cache: dict[tuple[int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def table(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin, each (L, head_dim / 2)."""
        key = (height, width, device)
        if key not in self._cache:
            quarter = self.head_dim // 4
            freqs = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 4)[:quarter].float() / self.head_dim))
            t = torch.arange(height * width, dtype=torch.float32)
            angles_x = torch.outer(t % width, freqs)  # (L, D/4)
            angles_y = torch.outer(torch.div(t, width, rounding_mode="floor"), freqs)  # (L, D/4)
            angles = torch.cat([angles_x, angles_y], dim=-1)  # (L, D/2)
            self._cache[key] = (torch.cos(angles).to(device), torch.sin(angles).to(device))
        return self._cache[key]

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, heads, N, D) with N a multiple of L; cos / sin (L, D/2) repeat along N."""
        b, heads, n, d = x.shape
        reps = n // cos.shape[0]
        pairs = x.float().reshape(b, heads, reps, cos.shape[0], d // 2, 2)  # (B, heads, N/L, L, D/2, 2)
        real, imag = pairs[..., 0], pairs[..., 1]
        out = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
        return out.reshape(b, heads, n, d).type_as(x)


class RoPEAttention(Attention):
    """Attention with axial RoPE on the queries and on all but the last `num_k_exclude_rope` keys."""

    def __init__(self, dim: int, num_heads: int, rope_theta: float, kv_in_dim: int | None = None) -> None:
        super().__init__(dim, num_heads, kv_in_dim=kv_in_dim)
        self.rope = AxialRope(self.internal_dim // num_heads, rope_theta)

    def forward(  # type: ignore[override]
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        grid: tuple[int, int],
        num_k_exclude_rope: int = 0,
    ) -> torch.Tensor:
        q = self.split_heads(self.q_proj(q))  # (B, heads, L, D)
        k = self.split_heads(self.k_proj(k))  # (B, heads, K, D)
        v = self.split_heads(self.v_proj(v))
        cos, sin = self.rope.table(grid[0], grid[1], q.device)
        q = AxialRope.rotate(q, cos, sin)
        num_rope = k.shape[-2] - num_k_exclude_rope
        if num_rope > 0:
            k = torch.cat([AxialRope.rotate(k[:, :, :num_rope], cos, sin), k[:, :, num_rope:]], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(self.merge_heads(out))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm: RoPE self-attention → RoPE cross-attention to memory (keys carry memory pos) → MLP."""

    def __init__(self, dim: int, mem_dim: int, num_heads: int, dim_feedforward: int, rope_theta: float) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(dim, num_heads, rope_theta)
        self.cross_attn_image = RoPEAttention(dim, num_heads, rope_theta, kv_in_dim=mem_dim)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        grid: tuple[int, int],
        num_obj_ptr_tokens: int,
    ) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y, grid)
        y = self.norm2(x)
        x = x + self.cross_attn_image(y, memory + memory_pos, memory, grid, num_obj_ptr_tokens)
        y = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(y)))


class MemoryAttention(nn.Module):
    def __init__(
        self, dim: int, mem_dim: int, num_layers: int, num_heads: int, dim_feedforward: int, rope_theta: float
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(dim, mem_dim, num_heads, dim_feedforward, rope_theta) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        grid: tuple[int, int],
        num_obj_ptr_tokens: int,
    ) -> torch.Tensor:
        """curr, curr_pos (B, L, C); memory, memory_pos (B, K, M) → memory-conditioned features (B, L, C)."""
        x = curr + INPUT_POS_SCALE * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, grid, num_obj_ptr_tokens)
        return self.norm(x)
