"""A differentiable unroll of the tracker over a short clip: what `Tracker.track` does, with gradients.

Frame 0 is prompted (a box, or a mask) for every object; frames 1..T-1 are tracked from the memory
bank. The unroll takes the tracker's public per-frame step (batchtrack.model.tracker.step: `encode` with the
config's normalisation, `attend_memory`, `decode`, pointer gating, `memorise` into the bounded `MemoryBank`), so
training trains exactly what inference runs. Differences in train mode are SAM 2's: the decoder's every candidate
mask is kept for the loss, the "dynamic multimask via stability" switch and hole filling are eval-only. In eval mode
the unroll reproduces `Tracker.track` (tests/unit/training/test_unroll.py pins this).

Letters: T frames, N objects, K = 1 + num_multimask_outputs decoder masks, M candidates trained on,
C channels, h x w the feature grid, S the model input side, H x W the video frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.model.loading.build import new_tracker
from batchtrack.model.modes.association import AssociationHead, association_loss
from batchtrack.model.nn.postprocess import fill_small_holes
from batchtrack.model.tracker.step import BOX_LABELS, ClipState, Decoded, FrameFeatures, ObjectPrompt, Rows, no_points
from batchtrack.model.tracker.tracker import Tracker
from batchtrack.training.data import ClipBatch, TrainingClip
from batchtrack.training.losses import LossTerms, LossWeights, frame_loss, mask_iou


def build_trainable(name: str, decoder_qk_tie_scale: float = 0.0) -> Tracker:
    """A freshly initialised tracker of config `name` in train mode (no shipped weights are loaded).

    With `decoder_qk_tie_scale` > 0 the decoder's cross-attentions start with key = query projection
    (see `tie_decoder_attention`).
    """
    tracker = new_tracker(name).train()
    if decoder_qk_tie_scale > 0:
        tie_decoder_attention(tracker, decoder_qk_tie_scale)
    return tracker


def tie_decoder_attention(tracker: Tracker, scale: float) -> None:
    """Initialise every token<->image cross-attention of the mask decoder with k_proj = q_proj (times `scale`).

    Queries and keys both carry the same random Fourier position encoding (prompt points on one side,
    the feature grid on the other). With W_k = W_q the attention logit contains pe(point) . W^T W . pe(x),
    which peaks where x is near the point: prompts attend to their own location from the first step.
    From PyTorch's default (independent) init this alignment has to be discovered, and on CPU budgets
    the decoder settled in the prompt-independent optimum (the same mask for every object) first.
    Only the starting point changes; both projections are trained freely afterwards.
    """
    transformer = tracker.sam_mask_decoder.transformer
    with torch.no_grad():
        for name, module in transformer.named_modules():
            if name.endswith(("cross_attn_token_to_image", "cross_attn_image_to_token")) or (
                name == "final_attn_token_to_image"
            ):
                module.q_proj.weight.mul_(scale)
                module.k_proj.weight.copy_(module.q_proj.weight)


@dataclass
class UnrolledFrame:
    """One frame of the unroll for all N objects of a clip."""

    candidates: torch.Tensor | None  # (N, M, 4h, 4w) decoder masks trained on; None on mask-prompted frames
    candidate_iou: torch.Tensor | None  # (N, M) their predicted IoUs
    object_score_logits: torch.Tensor  # (N,)
    low_res: torch.Tensor  # (N, 1, 4h, 4w) the chosen (object-score gated, eval: hole-filled) mask, as output
    iou: torch.Tensor  # (N,) predicted IoU of the chosen mask
    pointers: torch.Tensor  # (N, C)


@dataclass
class UnrollOutput:
    """The loss terms of a batch (means over clips and frames) and a detached quality figure."""

    terms: LossTerms
    mean_mask_iou: float  # IoU of the chosen masks with the ground truth, over visible objects and tracked frames
    prompted_mask_iou: float = float("nan")  # the same on the prompted (box / click) frames


class TrainingUnroll(nn.Module):
    """Wraps a `Tracker` so that one forward call runs (and scores) a batch of clips; DDP wraps this.

    With an `association_head`, every tracked frame also trains it (the association loss hook): each
    visible object is clicked once, as automatic mode's grid proposals are, and the head must match
    that proposal's decoder token to the object's pointer on the frame, or call it a new object when
    its track was left out.
    """

    def __init__(self, tracker: Tracker, association_head: AssociationHead | None = None) -> None:
        super().__init__()
        self.tracker = tracker
        self.association_head = association_head

    def forward(self, batch: ClipBatch, weights: LossWeights) -> UnrollOutput:
        device = self.tracker.device
        total = LossTerms.zeros(device)
        ious: list[torch.Tensor] = []
        prompted_ious: list[torch.Tensor] = []
        for clip in batch.clips:
            frames, features = self._run(clip)
            clip_terms = LossTerms.zeros(device)
            counted = 0
            for t, frame in enumerate(frames):
                if frame.candidates is None or frame.candidate_iou is None:
                    continue  # a mask prompt is its own output: nothing to learn on that frame
                target = clip.masks[t]  # (N, H, W)
                clip_terms = clip_terms + frame_loss(
                    frame.candidates, frame.candidate_iou, frame.object_score_logits, target, weights
                )
                counted += 1
                if t > 0 and self.association_head is not None:
                    clip_terms.association = clip_terms.association + self._association(clip, t, features[t], frame)
                with torch.no_grad():
                    visible = target.flatten(1).any(1)
                    chosen = F.interpolate(frame.low_res.detach(), size=target.shape[-2:], mode="bilinear")
                    (ious if t > 0 else prompted_ious).append(mask_iou(chosen[:, 0], target)[visible])
            total = total + clip_terms.scaled(1.0 / max(1, counted))
        total = total.scaled(1.0 / len(batch.clips))
        return UnrollOutput(terms=total, mean_mask_iou=_mean(ious), prompted_mask_iou=_mean(prompted_ious))

    # ------------------------------------------------------------------------------------------

    def unroll(self, clip: TrainingClip) -> list[UnrolledFrame]:
        """Run the tracker over the clip's T frames, prompting every object on frame 0."""
        return self._run(clip)[0]

    def _run(self, clip: TrainingClip) -> tuple[list[UnrolledFrame], list[FrameFeatures]]:
        tr = self.tracker
        t_frames, height, width = clip.frames.shape[0], clip.frames.shape[1], clip.frames.shape[2]
        bank = tr.new_bank(num_frames=t_frames)
        state = ClipState.start(height, width, bank)
        object_ids = list(range(len(clip.object_ids)))
        state.live = list(object_ids)
        features = tr.encode(clip.frames)

        out = []
        for t in range(t_frames):
            feat = features[t]
            if t == 0:
                frame, rows = self._prompted(feat, clip, object_ids)
            else:
                frame, rows = self._tracked(state, t, feat, object_ids)
            mem_source = rows.low_res
            if not self.training and tr.config.fill_hole_area > 0:
                # Inference outputs hole-filled masks, and encodes a prompted frame from its filled one.
                frame.low_res = fill_small_holes(rows.low_res, tr.config.fill_hole_area)
                mem_source = frame.low_res if t == 0 else rows.low_res
            tr.memorise(state, t, feat, rows, mem_source, rows.prompted)  # no re-conditioning in training
            bank.prune(t + 1)
            out.append(frame)
        return out, features

    def _decode(
        self, image: torch.Tensor, feat: FrameFeatures, coords: torch.Tensor, labels: torch.Tensor, multimask: bool
    ) -> Decoded:
        # SAM 2 picks a multimask output by stability in eval only; in train mode the loss picks among candidates.
        return self.tracker.decode(image, feat, coords, labels, multimask=multimask, stability=not self.training)

    def _frame(self, decoded: Decoded, rows: Rows, multimask: bool) -> UnrolledFrame:
        # SAM 2 trains the 3 multimask candidates when it outputs them, else the single mask 0.
        out, chosen = decoded.candidates, decoded.chosen
        first = 1 if multimask else 0
        last = out.masks.shape[1] if multimask else 1
        return UnrolledFrame(
            candidates=out.masks[:, first:last],
            candidate_iou=out.iou[:, first:last],
            object_score_logits=chosen.object_score_logits[:, 0],
            low_res=rows.low_res,
            iou=rows.iou,
            pointers=rows.pointers,
        )

    def _prompted(
        self, feat: FrameFeatures, clip: TrainingClip, object_ids: list[int]
    ) -> tuple[UnrolledFrame, Rows]:
        tr = self.tracker
        n = len(object_ids)
        if clip.prompt_masks is not None:
            prompts = [ObjectPrompt(oid, mask=clip.prompt_masks[oid].cpu().numpy()) for oid in object_ids]
            rows = tr.mask_as_output(feat, prompts)
            frame = UnrolledFrame(
                candidates=None,
                candidate_iou=None,
                object_score_logits=rows.scores[:, 0],
                low_res=rows.low_res,
                iou=rows.iou,
                pointers=rows.pointers,
            )
            return frame, rows
        height, width = clip.frames.shape[1], clip.frames.shape[2]
        # Video pixels -> model-input pixels, exactly as `Tracker.track` maps prompts.
        scale = torch.tensor([width, height], dtype=torch.float32, device=tr.device)
        if clip.prompt_points is not None:
            coords = clip.prompt_points.to(tr.device) / scale * tr.config.image_size  # (N, P, 2)
            labels = torch.ones(coords.shape[:2], dtype=torch.int32, device=tr.device)  # (N, P) positive clicks
        else:
            coords = clip.boxes.to(tr.device).reshape(n, 2, 2) / scale * tr.config.image_size  # (N, 2, 2)
            labels = torch.tensor(BOX_LABELS, dtype=torch.int32, device=tr.device).expand(n, -1)  # (N, 2)
        image = (feat.vision + tr.no_mem_embed.view(1, -1, 1, 1)).expand(n, -1, -1, -1)  # (N, C, h, w)
        # Inference's rule: multimask (3 candidates, the min-loss one trained) for <= 1 click, else mask 0.
        multimask = tr.uses_multimask(int(labels.shape[1]))
        decoded = self._decode(image, feat, coords, labels, multimask)
        rows = tr.rows_from_decoder(object_ids, decoded.chosen, prompted=True)
        return self._frame(decoded, rows, multimask), rows

    def _tracked(
        self, state: ClipState, frame_index: int, feat: FrameFeatures, object_ids: list[int]
    ) -> tuple[UnrolledFrame, Rows]:
        tr = self.tracker
        # Every object of a training clip joins on frame 0, so all share one bank selection.
        selection = state.bank.select(object_ids[0], frame_index)
        image = tr.attend_memory(state, feat, object_ids, selection)  # (N, C, h, w)
        coords, labels = no_points(len(object_ids), image.device)
        multimask = tr.uses_multimask(0)
        decoded = self._decode(image, feat, coords, labels, multimask)
        rows = tr.rows_from_decoder(object_ids, decoded.chosen, prompted=False)
        return self._frame(decoded, rows, multimask), rows

    def _association(
        self, clip: TrainingClip, t: int, feat: FrameFeatures, frame: UnrolledFrame
    ) -> torch.Tensor:
        """Association loss of frame t: click proposals of the visible objects against the frame's pointers."""
        tr = self.tracker
        head = self.association_head
        assert head is not None
        visible = clip.masks[t].flatten(1).any(1).nonzero()[:, 0]  # (P,) object indices
        if visible.numel() == 0:
            return frame.pointers.sum() * 0.0
        height, width = clip.frames.shape[1], clip.frames.shape[2]
        scale = torch.tensor([width, height], dtype=torch.float32, device=tr.device)
        coords = (clip.clicks[t, visible].to(tr.device) / scale * tr.config.image_size).unsqueeze(1)  # (P, 1, 2)
        labels = torch.ones(visible.numel(), 1, dtype=torch.int32, device=tr.device)  # (P, 1) positive clicks
        image = (feat.vision + tr.no_mem_embed.view(1, -1, 1, 1)).expand(visible.numel(), -1, -1, -1)
        chosen = self._decode(image, feat, coords, labels, multimask=tr.uses_multimask(1)).chosen
        n = frame.pointers.shape[0]
        left_out = int(clip.left_out[t])
        kept = [k for k in range(n) if k != left_out]
        column = {k: i for i, k in enumerate(kept)}
        targets = torch.tensor(
            [column.get(int(k), len(kept)) for k in visible], dtype=torch.long, device=tr.device
        )  # (P,): the object's own track, or "new" (len(kept)) when its track was left out
        logits = head(chosen.token, frame.pointers[kept])  # (P, len(kept) + 1)
        return association_loss(logits, targets)


def _mean(values: list[torch.Tensor]) -> float:
    joined = torch.cat(values) if values else torch.zeros(0)
    return float(joined.mean()) if joined.numel() else float("nan")


def video_logits(frame: UnrolledFrame, height: int, width: int) -> torch.Tensor:
    """(N, H, W) mask logits at video resolution, as `Tracker.track` reports them."""
    up = F.interpolate(frame.low_res, size=(height, width), mode="bilinear", align_corners=False)
    return up[:, 0]
