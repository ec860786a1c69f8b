"""SAM 3's text encoder: a causal CLIP-style transformer over a phrase's tokens, resized to the detector's width.

Token ids (see tokenizer.py) are embedded, given learned positions, passed through pre-norm residual blocks
with causal self-attention (a token sees itself and the tokens before it, so padding after the end token
never changes the phrase's features), normalised, and projected per token from `width` to `d_model` by the
`resizer`. Nothing is pooled: the detector's fusion encoder attends to every token.

State-dict keys are those of Meta's sam3.pt with the prefix `detector.backbone.language_backbone.` removed
(`encoder.token_embedding.weight`, `encoder.transformer.resblocks.0.attn.in_proj_weight`, ..., `resizer.bias`),
so loading Meta's weights is a prefix strip (`load_sam3_text_encoder` in checkpoint.py).

Shape letters: B phrases, L tokens (the context length or less), W the transformer width, C = d_model,
H heads, D = W / H channels per head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.errors import ConfigError
from batchtrack.model.sam3.text.tokenizer import PAD_ID, SAM3_CONTEXT_LENGTH, Tokenizer, default_tokenizer

CLIP_VOCAB_SIZE = 49408


@dataclass(frozen=True)
class TextEncoderConfig:
    """Sizes of the text encoder. The defaults are SAM 3's (`sam3.model_builder._create_text_encoder`, 354 M)."""

    width: int = 1024  # transformer channels W
    heads: int = 16  # attention heads; width must be divisible by it
    layers: int = 24  # residual attention blocks
    context_length: int = SAM3_CONTEXT_LENGTH  # learned positions = the longest token sequence accepted
    vocab_size: int = CLIP_VOCAB_SIZE  # token embedding rows; the CLIP tokenizer's ids go up to 49,407
    d_model: int = 256  # output channels C after the resizer (the detector's width)
    mlp_ratio: float = 4.0  # hidden width of each block's MLP, as a multiple of width
    projection_dim: int = 512  # columns of CLIP's pooled-output projection: in the checkpoint, unused by SAM 3

    def __post_init__(self) -> None:
        sizes = {f: getattr(self, f) for f in ("width", "heads", "layers", "vocab_size", "d_model", "projection_dim")}
        bad = {f: v for f, v in sizes.items() if v < 1}
        if bad:
            raise ConfigError(f"text encoder sizes must be positive, got {bad}")
        if self.width % self.heads != 0:
            raise ConfigError(f"text encoder width {self.width} is not divisible by heads {self.heads}")
        if self.context_length < 2:
            raise ConfigError(f"text encoder context_length must be at least 2, got {self.context_length}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"text encoder mlp_ratio must be positive, got {self.mlp_ratio}")


SAM3_TEXT_ENCODER = TextEncoderConfig()
# For unit tests: the real vocabulary and context (so real tokenizer ids fit), everything else small.
TINY_TEXT_ENCODER = TextEncoderConfig(width=32, heads=2, layers=2, d_model=16, projection_dim=8)


@dataclass
class TextFeatures:
    """The text encoder's output for B phrases of L tokens, in the layout SAM 3's detector consumes.

    features: (L, B, C) float, sequence first — per-token features after `resizer` (C = d_model). This is the
        oracle's `language_features` / the fusion encoder's `prompt`; positions marked in `padding_mask` hold
        features too (of padding tokens) and must be masked by the consumer.
    padding_mask: (B, L) bool, True where the token id is 0 (padding) — the oracle's `language_mask`, the
        `key_padding_mask` convention of torch attention (True = ignore). Id 0 is also the token "!", which
        SAM 3 therefore masks too; this is kept for parity.
    token_embeddings: (L, B, W) float, sequence first — the token embeddings before positions and the
        transformer (the oracle's `language_embeds`); the detector does not read them.
    token_ids: (B, L) int64 — the ids encoded.
    """

    features: torch.Tensor
    padding_mask: torch.Tensor
    token_embeddings: torch.Tensor
    token_ids: torch.Tensor


class _SelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask; parameters named as torch's nn.MultiheadAttention's."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3W)
        qkv = qkv.view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, L, D)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)  # (B, H, L, D)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))  # (B, L, W)


class _ResidualBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.attn = _SelfAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _BlockStack(nn.Module):
    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            _ResidualBlock(config.width, config.heads, config.mlp_ratio) for _ in range(config.layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class CausalTextTransformer(nn.Module):
    """Token ids (B, L) → normalised per-token features (B, L, W): CLIP's text tower without its pooling."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.transformer = _BlockStack(config)
        self.ln_final = nn.LayerNorm(config.width)
        # CLIP projects the end token's feature with this; SAM 3 keeps every token instead and never uses it.
        # It is a parameter only so that Meta's checkpoint loads strictly.
        self.text_projection = nn.Parameter(torch.empty(config.width, config.projection_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=config.width**-0.5)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        n = token_ids.shape[1]
        x = self.token_embedding(token_ids) + self.positional_embedding[:n]  # (B, L, W)
        return self.ln_final(self.transformer(x))  # (B, L, W)


class TextEncoder(nn.Module):
    """Phrases or token ids → `TextFeatures` (SAM 3's `VETextEncoder`, loadable from Meta's keys).

    >>> enc = TextEncoder(TINY_TEXT_ENCODER).eval()
    >>> out = enc.encode_text(["a dog", "a red car"])
    >>> tuple(out.features.shape), tuple(out.padding_mask.shape)
    ((32, 2, 16), (2, 32))
    """

    def __init__(self, config: TextEncoderConfig = SAM3_TEXT_ENCODER, tokenizer: Tokenizer | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = CausalTextTransformer(config)
        self.resizer = nn.Linear(config.width, config.d_model)
        # Not a module and not in the state dict; the shared default one is read on first use.
        self._tokenizer = tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = default_tokenizer()
        return self._tokenizer

    def forward(self, token_ids: torch.Tensor) -> TextFeatures:
        """`token_ids` (B, L) int64 with L <= context_length, 0-padded as the tokenizer makes them."""
        if token_ids.dim() != 2 or token_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"token_ids must be a (B, L) integer tensor, got {tuple(token_ids.shape)} {token_ids.dtype}"
            )
        if token_ids.shape[1] > self.config.context_length:
            raise ValueError(
                f"token_ids has {token_ids.shape[1]} tokens; the text encoder holds {self.config.context_length}"
            )
        token_ids = token_ids.to(device=self.resizer.weight.device, dtype=torch.long)
        embeddings = self.encoder.token_embedding(token_ids)  # (B, L, W)
        tokens = self.encoder(token_ids)  # (B, L, W)
        return TextFeatures(
            features=self.resizer(tokens.transpose(0, 1)),  # (L, B, C)
            padding_mask=token_ids == PAD_ID,  # (B, L)
            token_embeddings=embeddings.transpose(0, 1),  # (L, B, W)
            token_ids=token_ids,
        )

    def encode_text(self, texts: Sequence[str]) -> TextFeatures:
        """Tokenize `texts` at this encoder's context length and encode them."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a sequence of phrases, not a single string")
        return self(self.tokenizer(list(texts), context_length=self.config.context_length))
