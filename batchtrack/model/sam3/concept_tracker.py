"""SAM 3 whole: the tracker and the concept detector on one image encoder (PE ViT trunk + dual neck).

`ConceptTracker` is a `Tracker` (every tracking method unchanged) that also holds SAM 3's text encoder and
detector head. The trunk runs once per frame for both: `encode_frames` gives both neck branches of one trunk
pass, and it reuses the tracker's own pass when the frame was just encoded by it: the trunk's output for the
last batch it ran on is kept (one batch: the tracker encodes `encoder_batch_size` frames ahead), so the
concept loop's detector, called from the tracker's planner hook on a frame the tracker has encoded, runs only
the detector's neck branch and head. State-dict keys map to
Meta's sam3.pt by checkpoint.SAM3_PREFIXES (`text_encoder.` ↔ `detector.backbone.language_backbone.`,
`detector.` ↔ `detector.`), so a whole sam3.pt loads strictly with nothing missing or unexpected.

Letters: B frames, N phrases, H x W frame size, S model input side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from batchtrack.errors import ConfigError
from batchtrack.model.configs import DetectorConfig, PEViTConfig, TrackerConfig
from batchtrack.model.nn.preprocess import preprocess_frames
from batchtrack.model.sam3.detector.detector import (
    DEFAULT_NMS_IOU,
    DEFAULT_SCORE_THRESHOLD,
    ConceptDetector,
    Detections,
)
from batchtrack.model.sam3.detector.geometry_encoder import Exemplars
from batchtrack.model.sam3.dual_neck import DualFeatures, Sam3ImageEncoder
from batchtrack.model.sam3.text.text_encoder import TextEncoder, TextEncoderConfig, TextFeatures
from batchtrack.model.tracker.tracker import Tracker


def text_encoder_config(detector: DetectorConfig, d_model: int) -> TextEncoderConfig:
    """The text encoder's sizes for a detector whose width is `d_model`."""
    return TextEncoderConfig(
        width=detector.text_width, heads=detector.text_heads, layers=detector.text_layers, d_model=d_model
    )


class ConceptTracker(Tracker):
    """SAM 3's tracker + text encoder + detector head, one image encoder (`image_encoder`) shared by both."""

    def __init__(self, config: TrackerConfig) -> None:
        if config.detector is None or not isinstance(config.image_encoder, PEViTConfig):
            raise ConfigError(f"model {config.name!r} has no SAM 3 detector to build (config.detector is None)")
        super().__init__(config, image_encoder=Sam3ImageEncoder(config.image_encoder, config.image_size))
        d_model = config.image_encoder.d_model
        self.text_encoder = TextEncoder(text_encoder_config(config.detector, d_model))
        self.detector = ConceptDetector(config.detector, d_model)
        # (normalised images, trunk maps) of the trunk's last batch, whoever ran it (tracker or detector).
        self._last_trunk: tuple[torch.Tensor, torch.Tensor] | None = None
        assert isinstance(self.image_encoder, Sam3ImageEncoder)
        self.image_encoder.trunk.register_forward_hook(self._remember_trunk)

    def _remember_trunk(self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self._last_trunk = (args[0].detach(), output.detach())

    def _recent_trunk(self, images: torch.Tensor) -> torch.Tensor | None:
        """The kept trunk maps of `images` (B, 3, S, S) when the last trunk batch holds every one of them."""
        if self._last_trunk is None:
            return None
        seen, maps = self._last_trunk
        rows = []
        for image in images:
            match = [i for i in range(seen.shape[0]) if torch.equal(seen[i], image)]
            if not match:
                return None
            rows.append(match[0])
        return maps[rows]  # (B, C, G, G)

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray | torch.Tensor) -> DualFeatures:
        """RGB uint8 frames (B, H, W, 3) -> both neck branches of one trunk pass (detector and tracker).

        The trunk runs unless these frames were in its last batch (then that pass is reused)."""
        encoder = self.image_encoder
        assert isinstance(encoder, Sam3ImageEncoder)
        images = preprocess_frames(
            frames, self.config.image_size, self.device, self.config.image_mean, self.config.image_std
        )
        with self._autocast():
            trunk = self._recent_trunk(images)
            if trunk is None:
                trunk = encoder.trunk(images)  # (B, C, G, G)
            return DualFeatures(
                detector=encoder._branch(encoder.convs, trunk), tracker=encoder._branch(encoder.sam2_convs, trunk)
            )

    @torch.no_grad()
    def encode_text(self, phrases: Sequence[str]) -> TextFeatures:
        """N noun phrases -> their text features (encode once per prompt set, reuse on every frame)."""
        return self.text_encoder.encode_text(phrases)

    @torch.no_grad()
    def detect_concepts(
        self,
        frame: np.ndarray,
        text: TextFeatures | Sequence[str],
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        nms_iou_threshold: float | None = DEFAULT_NMS_IOU,
        exemplars: Exemplars | None = None,
    ) -> tuple[Detections, DualFeatures]:
        """Detect N concepts on one RGB uint8 frame (H, W, 3); also returns the frame's features (both branches)
        so the tracker can reuse the trunk pass. Boxes are normalised to the frame (see `Detections`)."""
        features = self.encode_frames(frame[None])
        if not isinstance(text, TextFeatures):
            text = self.encode_text(text)
        with self._autocast():
            detections = self.detector.detect(
                features.detector, text, score_threshold, nms_iou_threshold, exemplars=exemplars
            )
        return detections, features


class Sam3FrameDetector:
    """SAM 3's detector as a per-frame concept detector: `detect(frame_index, frame, concepts) -> Detections`.

    The shape `model.concept.ConceptLoop` asks of a detector. Text features are encoded once per concept list
    and reused on every frame. Called from the tracker's planner hook, it reuses the tracker's trunk pass of
    the frame (see the module docstring).
    """

    def __init__(
        self,
        model: ConceptTracker,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        nms_iou_threshold: float | None = DEFAULT_NMS_IOU,
    ) -> None:
        self.model = model
        self.score_threshold = score_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self._text: tuple[tuple[str, ...], TextFeatures] | None = None

    def _text_features(self, concepts: Sequence[str]) -> TextFeatures:
        key = tuple(concepts)
        if self._text is None or self._text[0] != key:
            self._text = (key, self.model.encode_text(key))
        return self._text[1]

    def detect(self, frame_index: int, frame: np.ndarray, concepts: Sequence[str]) -> Detections:
        detections, _ = self.model.detect_concepts(
            frame, self._text_features(concepts), self.score_threshold, self.nms_iou_threshold
        )
        return detections
