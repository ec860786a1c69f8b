"""SAM 3's detector on the tiny config: output shapes, detections, RoIAlign, whole-model strict loading by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from batchtrack.errors import CheckpointError, ConfigError
from batchtrack.model.configs import DetectorConfig, get_config
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.loading.checkpoint import our_key_to_sam3, sam3_key_to_ours, sam3_part
from batchtrack.model.nn.preprocess import preprocess_frames
from batchtrack.model.sam3.concept_tracker import ConceptTracker, Sam3FrameDetector
from batchtrack.model.sam3.detector.detector import ConceptDetector, Detections, combined_score
from batchtrack.model.sam3.detector.geometry_encoder import Exemplars, pack_valid_first, roi_align
from batchtrack.model.tracker.tracker import Tracker

TINY = get_config("sam3-test-tiny")
assert TINY.detector is not None
HEAD: DetectorConfig = TINY.detector


@pytest.fixture(scope="module")
def model() -> ConceptTracker:
    built = build_tracker("sam3-test-tiny", device="cpu", random_weights=True, parts=("vision", "tracker", "detector"))
    assert isinstance(built, ConceptTracker)
    return built


@pytest.fixture(scope="module")
def meta_file(model: ConceptTracker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sam3") / "sam3.pt"
    torch.save({"model": {our_key_to_sam3(k): v.clone() for k, v in model.state_dict().items()}}, path)
    return path


def _frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def test_output_has_per_query_boxes_scores_and_low_res_masks_for_each_phrase(model: ConceptTracker) -> None:
    features = model.encode_frames(_frame()[None])
    text = model.encode_text(["a dog", "a red car", "tree"])
    with torch.no_grad():
        out = model.detector(features.detector, text)
    q, grid = HEAD.num_queries, TINY.image_size // 14
    assert out.boxes.shape == (3, q, 4) and out.scores.shape == (3, q) and out.query_logits.shape == (3, q)
    assert out.presence_logits.shape == (3,)
    assert out.mask_logits.shape == (3, q, 4 * grid, 4 * grid)  # the finest neck level (stride 3.5)
    assert out.layer_boxes.shape == (HEAD.decoder_layers, 3, q, 4)
    assert out.memory.shape == (3, grid * grid, 256)
    # xyxy from refined sigmoid boxes; combined score = logit(sigmoid(query) x sigmoid(presence)), clamped.
    assert (out.boxes[..., 2:] >= out.boxes[..., :2]).all()
    assert torch.allclose(out.scores, combined_score(out.query_logits, out.presence_logits))
    assert out.scores.abs().max() <= 10.0
    # Phrases differ, so their scores do.
    assert not torch.allclose(out.scores[0], out.scores[1])


def test_exemplar_boxes_and_points_change_the_prompt_and_the_scores(model: ConceptTracker) -> None:
    features = model.encode_frames(_frame()[None]).detector
    text = model.encode_text(["a dog"])
    exemplars = Exemplars(
        boxes=torch.tensor([[[0.5, 0.5, 0.3, 0.4]]]),
        box_labels=torch.tensor([[1]]),
        box_padding=torch.tensor([[False]]),
        points=torch.tensor([[[0.2, 0.3]]]),
        point_labels=torch.tensor([[0]]),
        point_padding=torch.tensor([[False]]),
    )
    with torch.no_grad():
        plain = model.detector(features, text)
        with_boxes = model.detector(features, text, exemplars=exemplars)
    assert with_boxes.scores.shape == plain.scores.shape
    assert not torch.allclose(with_boxes.scores, plain.scores)


def test_detect_keeps_queries_above_the_threshold_and_names_their_concept(model: ConceptTracker) -> None:
    features = model.encode_frames(_frame()[None]).detector
    text = model.encode_text(["a dog", "a cat"])
    with torch.no_grad():
        probs = model.detector(features, text).scores.sigmoid()
    threshold = float(probs.median())
    found = model.detector.detect(features, text, score_threshold=threshold, nms_iou_threshold=None)
    assert isinstance(found, Detections)
    assert len(found) == int((probs > threshold).sum())
    assert set(found.concept.tolist()) <= {0, 1}
    assert torch.equal(found.scores, probs[found.concept, found.query])
    assert len(found.for_concept(0)) == int((probs[0] > threshold).sum())
    assert len(model.detector.detect(features, text, score_threshold=1.0)) == 0


def test_detect_takes_one_frame(model: ConceptTracker) -> None:
    features = model.encode_frames(np.stack([_frame(), _frame()])).detector
    with pytest.raises(ValueError, match="one frame"):
        model.detector.detect(features, model.encode_text(["a dog"]))


def test_frame_detector_reuses_text_features_and_returns_frame_detections(model: ConceptTracker) -> None:
    detector = Sam3FrameDetector(model, score_threshold=0.0, nms_iou_threshold=None)
    first = detector.detect(0, _frame(), ["a dog"])
    cached = detector._text
    detector.detect(1, _frame(), ["a dog"])
    assert detector._text is cached
    assert len(first) == HEAD.num_queries  # every query passes threshold 0
    assert first.mask_logits.shape[1:] == (4 * (TINY.image_size // 14),) * 2


def test_roi_align_averages_a_linear_ramp_to_its_cell_centres() -> None:
    """Bilinear samples of a linear map are exact, so each cell is the map's value at the cell's centre."""
    height, width = 12, 16
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    features = torch.stack([xs, 2 * ys + 1])[None]  # (1, 2, H, W)
    box = torch.tensor([[[2.0, 1.0, 12.5, 9.0]]])  # x0, y0, x1, y1 inside the map
    cells = roi_align(features, box, 7)[0]  # (2, 7, 7)
    centres_x = 2.0 + (torch.arange(7) + 0.5) * (10.5 / 7)
    centres_y = 1.0 + (torch.arange(7) + 0.5) * (8.0 / 7)
    assert torch.allclose(cells[0], centres_x[None].expand(7, 7), atol=1e-5)
    assert torch.allclose(cells[1], (2 * centres_y + 1)[:, None].expand(7, 7), atol=1e-5)


def test_roi_align_is_zero_far_outside_the_map() -> None:
    features = torch.ones(1, 1, 4, 4)
    assert roi_align(features, torch.tensor([[[10.0, 10.0, 14.0, 14.0]]]), 2).abs().max() == 0


def test_pack_valid_first_moves_each_rows_tokens_together() -> None:
    first = torch.tensor([[[1.0], [2.0]], [[3.0], [0.0]]])
    second = torch.tensor([[[5.0], [0.0]], [[6.0], [7.0]]])
    out, padding = pack_valid_first(
        first, torch.tensor([[False, False], [False, True]]), second, torch.tensor([[False, True], [False, False]])
    )
    assert out[0, :3, 0].tolist() == [1.0, 2.0, 5.0] and padding[0].tolist() == [False, False, False, True]
    assert out[1, :3, 0].tolist() == [3.0, 6.0, 7.0] and padding[1].tolist() == [False, False, False, True]


def test_concept_tracker_keys_are_metas_and_map_back(model: ConceptTracker) -> None:
    keys = list(model.state_dict())
    meta = [our_key_to_sam3(k) for k in keys]
    assert "detector.transformer.decoder.presence_token.weight" in meta
    assert "detector.geometry_encoder.boxes_pool_project.weight" in meta
    assert "detector.backbone.language_backbone.resizer.weight" in meta
    assert [sam3_key_to_ours(k) for k in meta] == keys
    assert {sam3_part(k) for k in meta} == {"vision", "tracker", "detector"}


def test_full_size_detector_has_metas_key_count() -> None:
    with torch.device("meta"):
        head = ConceptDetector(DetectorConfig(), 256)
    assert len(head.state_dict()) == 397  # sam3.pt's detector.* keys outside detector.backbone.


def test_whole_sam3_file_loads_strictly_into_a_concept_tracker(model: ConceptTracker, meta_file: Path) -> None:
    loaded = build_tracker("sam3-test-tiny", checkpoint=meta_file, device="cpu")
    assert isinstance(loaded, ConceptTracker)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # The tracker alone reads the same file, ignoring the detector's keys on request.
    plain = build_tracker("sam3-test-tiny", checkpoint=meta_file, device="cpu", parts=("vision", "tracker"))
    assert type(plain) is Tracker


def test_detector_key_differences_are_named(model: ConceptTracker, tmp_path: Path) -> None:
    sd = {our_key_to_sam3(k): v.clone() for k, v in model.state_dict().items()}
    del sd["detector.transformer.decoder.reference_points.weight"]
    sd["detector.transformer.decoder.bogus.weight"] = torch.zeros(1)
    sd["detector.dot_prod_scoring.hs_proj.bias"] = torch.zeros(3)
    path = tmp_path / "sam3.pt"
    torch.save({"model": sd}, path)
    pattern = (
        r"missing keys: detector.transformer.decoder.reference_points.weight.*"
        r"unexpected keys: detector.transformer.decoder.bogus.weight.*"
        r"mis-shaped keys: detector.dot_prod_scoring.hs_proj.bias \(file \(3,\), model \(256,\)\)"
    )
    with pytest.raises(CheckpointError, match=pattern):
        build_tracker("sam3-test-tiny", checkpoint=path, device="cpu")


def test_a_tracker_only_file_names_the_missing_detector_and_the_parts_way_out(tmp_path: Path) -> None:
    tracker = build_tracker("sam3-test-tiny", device="cpu")
    path = tmp_path / "tracker_only.pt"
    torch.save({"model": {our_key_to_sam3(k): v for k, v in tracker.state_dict().items()}}, path)
    with pytest.raises(CheckpointError, match=r"parts=\('vision', 'tracker'\).*missing keys: detector\."):
        build_tracker("sam3-test-tiny", checkpoint=path, device="cpu")
    assert type(build_tracker("sam3-test-tiny", checkpoint=path, device="cpu", parts=("vision", "tracker"))) is Tracker


def test_a_model_without_a_detector_config_cannot_build_one() -> None:
    from dataclasses import replace

    with pytest.raises(ConfigError, match="no detector config"):
        build_tracker(replace(TINY, detector=None), device="cpu", parts=("vision", "tracker", "detector"))


def test_detector_reuses_the_trackers_trunk_pass_of_a_frame(model: ConceptTracker) -> None:
    """The tracker encodes frames ahead in a batch; detecting on one of them then runs no trunk of its own."""
    frames = np.stack([_frame(), 255 - _frame(), _frame() // 2])
    calls: list[int] = []
    hook = model.image_encoder.trunk.register_forward_hook(lambda m, a, out: calls.append(out.shape[0]))
    try:
        images = preprocess_frames(frames, TINY.image_size, "cpu", TINY.image_mean, TINY.image_std)
        with torch.no_grad():
            model.image_encoder(images)  # what Tracker.track does with a batch of frames
        detector = Sam3FrameDetector(model, score_threshold=0.0, nms_iou_threshold=None)
        shared = detector.detect(1, frames[1], ["a dog"])
        assert calls == [3]  # the batch's pass only
        model._last_trunk = None
        fresh = detector.detect(1, frames[1], ["a dog"])
        assert calls == [3, 1]
    finally:
        hook.remove()
    assert torch.equal(shared.scores, fresh.scores) and torch.equal(shared.mask_logits, fresh.mask_logits)
