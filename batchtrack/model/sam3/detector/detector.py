"""SAM 3's concept detector head: every instance of a noun phrase (and/or exemplar boxes) in one image.

    image features (neck's detector branch) ─┐
    text features + exemplar tokens (prompt) ─┴─ fusion encoder ── DETR decoder ── boxes, scores, presence
                                                      └──────────── segmentation head ── mask logits

The head takes the image side's features and the text encoder's features as tensors; it owns neither
(`ConceptTracker` composes them, sharing one trunk with the tracker). Prompts are batched: prompt i pairs
image `image_ids[i]` with phrase i, so N phrases on one frame are one batch. A query's final score is the
oracle's: sigmoid(query logit) x sigmoid(presence logit), as a logit clamped to +-10; a detection is a query
whose score passes the threshold (0.5 in SAM 3's video model), after mask NMS. Attribute names are Meta's
keys below `detector.` (transformer.encoder, transformer.decoder, dot_prod_scoring, segmentation_head,
geometry_encoder), so the state dict loads with no renaming.

Letters: B images, N prompts, Q queries, D d_model, L text tokens, P prompt tokens (L + exemplar tokens),
H x W the coarsest kept grid (stride 14), h x w the finest (stride 3.5), Y decoder layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from batchtrack.model.configs import DetectorConfig
from batchtrack.model.nn.boxes import cxcywh_to_xyxy, inverse_sigmoid
from batchtrack.model.nn.masks import mask_nms
from batchtrack.model.sam3.detector.detr_decoder import DetrDecoder
from batchtrack.model.sam3.detector.dot_product_scoring import DotProductScoring
from batchtrack.model.sam3.detector.fusion_encoder import FusionEncoder
from batchtrack.model.sam3.detector.geometry_encoder import Exemplars, GeometryEncoder
from batchtrack.model.sam3.detector.segmentation_head import SegmentationHead
from batchtrack.model.sam3.text.text_encoder import TextFeatures
from batchtrack.model.tracker.image_encoder import ImageFeatures

_SCORE_CLAMP = 10.0  # the combined score's logit range
DEFAULT_SCORE_THRESHOLD = 0.5  # SAM 3 video: score_threshold_detection
DEFAULT_NMS_IOU = 0.1  # SAM 3 video: det_nms_thresh (mask IoU)


@dataclass
class DetectorOutput:
    """Raw outputs for N prompts, every query, batch first. Boxes normalised to the model input (the frame)."""

    boxes: torch.Tensor  # (N, Q, 4) x0, y0, x1, y1 of the last layer
    query_logits: torch.Tensor  # (N, Q) dot-product logit of the last layer (instance of the prompt?)
    presence_logits: torch.Tensor  # (N,) last layer's presence token logit (concept in the image?)
    scores: torch.Tensor  # (N, Q) combined logit: logit(sigmoid(query) x sigmoid(presence)), clamped to +-10
    mask_logits: torch.Tensor  # (N, Q, h, w) at the finest neck level (stride 3.5: 288 x 288 at 1008 px)
    semantic_logits: torch.Tensor  # (N, 1, h, w)
    layer_boxes: torch.Tensor  # (Y, N, Q, 4) cx, cy, w, h after each decoder layer
    layer_query_logits: torch.Tensor  # (Y, N, Q)
    layer_presence_logits: torch.Tensor  # (Y, N)
    memory: torch.Tensor  # (N, HW, D) fusion encoder output
    queries: torch.Tensor  # (N, Q, D) last layer's normalised queries


@dataclass
class Detections:
    """One frame's detections for N concepts: the queries whose score passed, NMS-filtered, best first.

    Boxes are x0, y0, x1, y1 normalised to [0, 1] of the frame: the model input is the frame resized to a
    square without padding, so multiplying by (width, height, width, height) gives frame pixels.
    """

    concept: torch.Tensor  # (K,) int64: which prompt (row of the text features) each detection answers
    query: torch.Tensor  # (K,) int64: the decoder query it came from
    boxes: torch.Tensor  # (K, 4) normalised x0, y0, x1, y1
    scores: torch.Tensor  # (K,) probabilities sigmoid(combined logit), each > the threshold
    mask_logits: torch.Tensor  # (K, h, w) low-resolution mask logits (h = w = image_size / 3.5)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def for_concept(self, index: int) -> Detections:
        keep = self.concept == index
        return Detections(
            self.concept[keep], self.query[keep], self.boxes[keep], self.scores[keep], self.mask_logits[keep]
        )


class DetectorTransformer(nn.Module):
    """Holds the fusion encoder and the DETR decoder under Meta's names (`transformer.encoder`, `.decoder`)."""

    def __init__(self, config: DetectorConfig, d_model: int) -> None:
        super().__init__()
        self.encoder = FusionEncoder(config, d_model)
        self.decoder = DetrDecoder(config, d_model)


def combined_score(query_logits: torch.Tensor, presence_logits: torch.Tensor) -> torch.Tensor:
    """logit(sigmoid(query) x sigmoid(presence)) clamped to +-10: (..., Q) and (...) -> (..., Q)."""
    joint = query_logits.sigmoid() * presence_logits.sigmoid()[..., None]
    return inverse_sigmoid(joint).clamp(min=-_SCORE_CLAMP, max=_SCORE_CLAMP)


class ConceptDetector(nn.Module):
    """The detector head: image features + prompts -> `DetectorOutput` (raw) or `Detections` (thresholded)."""

    def __init__(self, config: DetectorConfig, d_model: int) -> None:
        super().__init__()
        self.config = config
        self.d_model = d_model
        self.transformer = DetectorTransformer(config, d_model)
        self.dot_prod_scoring = DotProductScoring(d_model, config.scoring_mlp_dim)
        self.segmentation_head = SegmentationHead(d_model, config.num_heads, config.pixel_decoder_convs)
        self.geometry_encoder = GeometryEncoder(config, d_model)

    def forward(
        self,
        features: ImageFeatures,
        text: TextFeatures,
        image_ids: torch.Tensor | None = None,
        exemplars: Exemplars | None = None,
    ) -> DetectorOutput:
        """`features`: the neck's detector branch for B images (finest level first); `text`: N phrases.

        `image_ids` (N,) picks each prompt's image (default: all prompts on image 0 when B is 1, else prompt i
        on image i). `exemplars`: boxes / points per prompt (default none: text-only prompts).
        """
        prompt_text = text.features.transpose(0, 1)  # (N, L, D)
        text_padding = text.padding_mask  # (N, L)
        n = prompt_text.shape[0]
        levels = features.backbone_fpn
        batch = levels[-1].shape[0]
        if image_ids is None:
            if batch not in (1, n):
                raise ValueError(f"{n} prompts on {batch} images: pass image_ids to pair them")
            image_ids = torch.zeros(n, dtype=torch.long) if batch == 1 else torch.arange(n)
        image_ids = image_ids.to(levels[-1].device)
        grid = (levels[-1].shape[-2], levels[-1].shape[-1])
        image = levels[-1][image_ids].flatten(2).transpose(1, 2)  # (N, HW, D)
        image_pos = features.vision_pos_enc[-1][image_ids].flatten(2).transpose(1, 2)  # (N, HW, D)
        if exemplars is None:
            exemplars = Exemplars.none(n, image.device)
        geometry = self.geometry_encoder(exemplars, image, image_pos, grid)
        prompt = torch.cat([prompt_text, geometry.tokens], dim=1)  # (N, P, D)
        prompt_padding = torch.cat([text_padding, geometry.padding], dim=1)  # (N, P)

        memory = self.transformer.encoder(image, image_pos, prompt, prompt_padding)  # (N, HW, D)
        decoded = self.transformer.decoder(memory, image_pos, grid, prompt, prompt_padding)
        query_logits = self.dot_prod_scoring(decoded.queries, prompt, prompt_padding)  # (Y, N, Q)
        # One image's levels serve all its prompts by broadcasting; several images are gathered per prompt.
        fine = levels[:-1] if batch == 1 else [level[image_ids] for level in levels[:-1]]
        segmentation = self.segmentation_head(fine, memory, grid, decoded.queries[-1], prompt, prompt_padding)
        scores = combined_score(query_logits[-1], decoded.presence_logits[-1])
        return DetectorOutput(
            boxes=cxcywh_to_xyxy(decoded.boxes[-1]),
            query_logits=query_logits[-1],
            presence_logits=decoded.presence_logits[-1],
            scores=scores,
            mask_logits=segmentation.mask_logits,
            semantic_logits=segmentation.semantic_logits,
            layer_boxes=decoded.boxes,
            layer_query_logits=query_logits,
            layer_presence_logits=decoded.presence_logits,
            memory=memory,
            queries=decoded.queries[-1],
        )

    @torch.no_grad()
    def detect(
        self,
        features: ImageFeatures,
        text: TextFeatures,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        nms_iou_threshold: float | None = DEFAULT_NMS_IOU,
        exemplars: Exemplars | None = None,
    ) -> Detections:
        """Detections of N concepts (the rows of `text`) on one frame (`features` of a batch of 1).

        A query is kept when sigmoid(combined score) > `score_threshold`; then, per concept, greedy NMS on
        mask IoU (masks > 0) drops a detection overlapping a better one by more than `nms_iou_threshold`
        (None: no NMS). SAM 3's video defaults: 0.5 and 0.1.
        """
        if features.backbone_fpn[-1].shape[0] != 1:
            raise ValueError(f"detect takes one frame's features, got {features.backbone_fpn[-1].shape[0]}")
        out = self(features, text, exemplars=exemplars)
        probs = out.scores.sigmoid()  # (N, Q)
        concept, query = torch.nonzero(probs > score_threshold, as_tuple=True)
        if nms_iou_threshold is not None and concept.numel() > 0:
            keep = []
            for c in concept.unique().tolist():
                idx = torch.nonzero(concept == c, as_tuple=True)[0]
                masks = out.mask_logits[c, query[idx]] > 0
                kept = mask_nms(masks=masks, scores=probs[c, query[idx]], iou_threshold=nms_iou_threshold)
                keep.append(idx[torch.tensor(kept, dtype=torch.long, device=idx.device)])
            # Kept queries in query order, as SAM 3's video loop reads them (new objects are numbered in this order).
            order = torch.sort(torch.cat(keep)).values
            concept, query = concept[order], query[order]
        return Detections(
            concept=concept,
            query=query,
            boxes=out.boxes[concept, query],
            scores=probs[concept, query],
            mask_logits=out.mask_logits[concept, query],
        )
