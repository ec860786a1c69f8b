"""SAM mask decoder: a two-way transformer between output tokens and the image, then mask / IoU /
object-score heads. Attribute names match `sam_mask_decoder.*` in SAM 2.1 checkpoints.

Letters: B objects, T tokens (6 output tokens + sparse prompt tokens), C channels (256),
h x w the feature grid, K = 4 mask tokens (token 0 = single-mask output, 1..3 = multimask outputs).
The decoder predicts masks at 4h x 4w (stride 4, "low-res").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.model.nn.layers import MLP, Attention, LayerNorm2d


class TwoWayAttentionBlock(nn.Module):
    """Tokens self-attend, attend to the image, pass an MLP; then the image attends to the tokens.

    Normalisation comes after each residual. The first block has no position encoding in its
    self-attention and replaces the tokens by the attention output (no residual).
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _ReluMLP(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, queries + query_pe, queries))
        return queries, keys


class _ReluMLP(nn.Module):
    """Two Linear layers with ReLU (`mlp.layers.0/1`)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](F.relu(self.layers[0](x)))


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, downsample_rate, first=(i == 0)) for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe (B, C, h, w); tokens (B, T, C) → tokens (B, T, C), image tokens (B, hw, C)."""
        keys = image.flatten(2).permute(0, 2, 1)  # (B, hw, C)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)  # (B, hw, C)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attn = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


@dataclass
class DecoderOutput:
    """Everything the decoder predicts, for all K mask tokens."""

    masks: torch.Tensor  # (B, K, 4h, 4w) low-res mask logits
    iou: torch.Tensor  # (B, K) predicted IoU in [0, 1]
    mask_tokens: torch.Tensor  # (B, K, C) output tokens, the source of object pointers
    object_score_logits: torch.Tensor  # (B, 1); > 0 means the object is visible


@dataclass
class ChosenMask:
    """One mask per object after the multimask / stability choice."""

    low_res: torch.Tensor  # (B, 1, 4h, 4w)
    iou: torch.Tensor  # (B,)
    token: torch.Tensor  # (B, C) the output token the object pointer is made from
    object_score_logits: torch.Tensor  # (B, 1)


class MaskDecoder(nn.Module):
    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        num_multimask_outputs: int,
        iou_head_depth: int,
        iou_head_hidden_dim: int,
    ) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(depth, dim, num_heads, mlp_dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        # Project the stride-4 and stride-8 FPN levels; applied once per frame (see project_high_res).
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, True)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)

    def project_high_res(self, level0: torch.Tensor, level1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """FPN levels (B, C, 4h, 4w) and (B, C, 2h, 2w) → (B, C/8, 4h, 4w) and (B, C/4, 2h, 2w)."""
        return self.conv_s0(level0), self.conv_s1(level1)

    def forward(
        self,
        image: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
    ) -> DecoderOutput:
        """image (B, C, h, w), image_pe (1, C, h, w), sparse (B, P, C), dense (B, C, h, w),
        high_res = projected (feat_s0 (B, C/8, 4h, 4w), feat_s1 (B, C/4, 2h, 2w))."""
        b, c, h, w = image.shape
        output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)  # (B, T, C)
        src = image + dense
        pos = image_pe.expand(b, -1, -1, -1)  # (B, C, h, w)
        hs, src = self.transformer(src, pos, tokens)
        obj_token = hs[:, 0]  # (B, C)
        iou_token = hs[:, 1]  # (B, C)
        mask_tokens = hs[:, 2 : 2 + self.num_mask_tokens]  # (B, K, C)

        src = src.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
        feat_s0, feat_s1 = high_res
        up1, norm, act1, up2, act2 = self.output_upscaling
        up = act1(norm(up1(src) + feat_s1))  # (B, C/4, 2h, 2w)
        up = act2(up2(up) + feat_s0)  # (B, C/8, 4h, 4w)

        hyper = torch.stack(
            [mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (B, K, C/8)
        _, cu, hu, wu = up.shape
        masks = (hyper @ up.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)  # (B, K, 4h, 4w)
        return DecoderOutput(
            masks=masks,
            iou=self.iou_prediction_head(iou_token),
            mask_tokens=mask_tokens,
            object_score_logits=self.pred_obj_score_head(obj_token),
        )


def stability_scores(mask_logits: torch.Tensor, delta: float) -> torch.Tensor:
    """area(logit > delta) / area(logit > -delta) per mask: (B, ..., H, W) → (B, ...); 1 when both are empty."""
    flat = mask_logits.flatten(-2)
    inter = (flat > delta).sum(-1).float()
    union = (flat > -delta).sum(-1).float()
    return torch.where(union > 0, inter / union, 1.0)


def choose_mask(
    out: DecoderOutput, multimask: bool, stability_delta: float | None, stability_thresh: float
) -> ChosenMask:
    """Pick one mask per object, as SAM 2 does.

    multimask: the highest-IoU of masks 1..K-1, and its token for the pointer. Otherwise mask 0 and
    token 0; with `stability_delta` set, an unstable mask 0 is replaced by the best multimask mask
    (the pointer still comes from token 0).
    """
    b = out.masks.shape[0]
    rows = torch.arange(b, device=out.masks.device)
    multi_masks, multi_iou = out.masks[:, 1:], out.iou[:, 1:]  # (B, K-1, 4h, 4w), (B, K-1)
    best = torch.argmax(multi_iou, dim=-1)  # (B,)
    if multimask:
        return ChosenMask(
            low_res=multi_masks[rows, best].unsqueeze(1),
            iou=multi_iou[rows, best],
            token=out.mask_tokens[:, 1:][rows, best],
            object_score_logits=out.object_score_logits,
        )
    low_res, iou = out.masks[:, :1], out.iou[:, 0]
    if stability_delta is not None:
        stable = stability_scores(low_res[:, 0], stability_delta) >= stability_thresh  # (B,)
        low_res = torch.where(stable[:, None, None, None], low_res, multi_masks[rows, best].unsqueeze(1))
        iou = torch.where(stable, iou, multi_iou[rows, best])
    return ChosenMask(
        low_res=low_res, iou=iou, token=out.mask_tokens[:, 0], object_score_logits=out.object_score_logits
    )
