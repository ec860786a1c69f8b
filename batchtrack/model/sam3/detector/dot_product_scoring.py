"""SAM 3's query scoring: each decoder query's logit is its dot product with the mean-pooled prompt.

The prompt tokens pass through a residual MLP with a LayerNorm, are mean-pooled over the valid (unpadded)
tokens, and projected; the queries are projected to the same space; the scaled dot product, clamped to
+-12, is the query's "is this an instance of the prompt" logit. Attribute names are Meta's keys below
`detector.dot_prod_scoring.`.

Letters: Y decoder layers, N prompts, Q queries, P prompt tokens, D d_model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LOGIT_CLAMP = 12.0


class PromptMLP(nn.Module):
    """x + Linear(ReLU(Linear(x))), then LayerNorm (keys layers.0, layers.1, out_norm)."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(d_model, hidden), nn.Linear(hidden, d_model)])
        self.out_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_norm(x + self.layers[1](F.relu(self.layers[0](x))))


def mean_over_valid(tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """(N, P, D) tokens, (N, P) True = padding -> (N, D) mean of the valid tokens (zeros if none)."""
    valid = (~padding).to(tokens.dtype)[..., None]  # (N, P, 1)
    count = valid.sum(dim=1).clamp(min=1.0)  # (N, 1)
    return (tokens * valid).sum(dim=1) / count


class DotProductScoring(nn.Module):
    """(Y, N, Q, D) queries and an (N, P, D) prompt -> (Y, N, Q) logits."""

    def __init__(self, d_model: int, mlp_dim: int) -> None:
        super().__init__()
        self.prompt_mlp = PromptMLP(d_model, mlp_dim)
        self.prompt_proj = nn.Linear(d_model, d_model)
        self.hs_proj = nn.Linear(d_model, d_model)
        self.scale = 1.0 / math.sqrt(d_model)

    def forward(self, queries: torch.Tensor, prompt: torch.Tensor, prompt_padding: torch.Tensor) -> torch.Tensor:
        pooled = self.prompt_proj(mean_over_valid(self.prompt_mlp(prompt), prompt_padding))  # (N, D)
        logits = torch.matmul(self.hs_proj(queries), pooled[:, :, None])[..., 0] * self.scale  # (Y, N, Q)
        return logits.clamp(min=-_LOGIT_CLAMP, max=_LOGIT_CLAMP)
