"""SAM 3's image side and tracker against the official sam3==0.1.4 (the test-only oracle), on CPU.

The oracle is assembled from its own classes with the arguments of `sam3.model_builder.build_tracker(
with_backbone=True)` except for size: 224 px input (grid 16, 2 x 2 windows of 8), a 4-block, 128-wide PE
ViT and `pretrain_img_size` 112, so that one module builds in about a second instead of the full model's
~10 s and 4-5 GB. Its seeded random weights are written as Meta's sam3.pt layout (`detector.backbone.
vision_backbone.*`, `tracker.*`) and loaded through `build_tracker(..., parts=("vision", "tracker"))`.
CPU patches (sam3_oracle.py) wrap the oracle's calls only.

Memory selection (`use_memory_selection`, SAM 3's default in `build_sam3_video_model`) is off in the oracle
fixture and in CONFIG; test_memory_selection_* turns it on on both sides with a threshold inside the range the
criterion takes on its clip, so that tracked frames both pass and fail.

Mask prompts follow SAM 3's `add_new_mask` (config `mask_prompt_at_video_res`): the prompted frame's output and
memory are the mask itself as +-1024 logits at video resolution (a later mask takes its pixels from earlier ones),
and the pointer's decoder pass reads the unthresholded mask at 16 x the grid. A mask correction on a frame already
tracked conditions every object there (`correction_conditions_all_objects`, SAM 3's add_all_frames_to_correct_as_cond
with its consolidation). test_mask_prompts_* compares both against the official session tracking up to the
correction frame, receiving the mask there, and resuming from it (what a streaming pass sees).
A point correction on a frame already tracked (test_point_correction_*) is decoded without memory (SAM 3's
add_new_points has use_prev_mem_frame=False) but with the object's tracked low-res logits there, clamped to +-32, as
the decoder's mask input (config `correction_reads_tracked_mask`); the frame then conditions every object.
`clear_non_cond_mem_around_input` (on in SAM 3, for sessions of one object) only empties the per-object output dicts,
which the official batched propagation and a mask prompt never read; a point correction reads its frame's tracked
mask there, so in a one-object session a second correction within num_maskmem frames of an earlier prompt gets no
mask input in SAM 3 but the tracked one here (not compared).

Not compared: the detector (not built here).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

# A missing oracle fails collection (CI must not go green without it) unless skipping is asked for.
if importlib.util.find_spec("sam3") is None and os.environ.get("PARITY_ALLOW_NO_ORACLE") == "1":
    pytest.skip("sam3 (the test-only oracle) is not installed; PARITY_ALLOW_NO_ORACLE=1", allow_module_level=True)
if importlib.util.find_spec("sam3") is None:
    raise ImportError("the SAM 3 oracle is not installed: run `make oracle` (or PARITY_ALLOW_NO_ORACLE=1 to skip)")

from batchtrack.model.configs import PEViTConfig, TrackerConfig, get_config
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.loading.checkpoint import load_state_dict_file, save_safetensors
from batchtrack.model.nn.preprocess import preprocess_frames
from batchtrack.model.tracker.planning import FramePlan, KeyframeView
from batchtrack.model.tracker.tracker import Tracker
from batchtrack.model.types import FrameResult, Prompt

from .sam3_oracle import cpu_patches, meta_state_dict, official_tracker, oracle_modules, perturb_for_comparison
from .sam3_video_oracle import reference_connected_components

pytestmark = pytest.mark.parity

IMAGE_SIZE = 224
GRID = IMAGE_SIZE // 14
TRUNK = PEViTConfig(embed_dim=128, depth=4, num_heads=4, window_size=8, global_att_blocks=(1, 3), pretrain_img_size=112)
# Memory selection off here, as in the oracle's default fixture; test_memory_selection_* turns it on on both sides.
CONFIG: TrackerConfig = replace(
    get_config("sam3"), name="sam3-parity", image_encoder=TRUNK, image_size=IMAGE_SIZE, memory_selection=False
)
FEATURE_ATOL = 1e-4
# Measured: logits 2.8e-7, scores 1.2e-7, pointers 2.2e-7 (fp32 on CPU, bf16-rounded memories on both sides).
LOGIT_ATOL = 1e-4
POINTER_ATOL = 1e-5
NUM_FRAMES, HEIGHT, WIDTH = 6, 96, 128


@pytest.fixture(scope="module")
def oracle() -> SimpleNamespace:
    ns = oracle_modules()
    with pytest.MonkeyPatch.context() as mp, cpu_patches(mp):
        torch.manual_seed(0)
        model = official_tracker(ns, IMAGE_SIZE, TRUNK).eval()
    perturb_for_comparison(model)
    return SimpleNamespace(ns=ns, model=model)


@pytest.fixture(scope="module")
def checkpoint(oracle: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sam3") / "sam3_small.pt"
    torch.save({"model": meta_state_dict(oracle.model)}, path)
    return path


@pytest.fixture(scope="module")
def ours(checkpoint: Path) -> Tracker:
    return build_tracker(CONFIG, checkpoint=checkpoint, device="cpu", parts=("vision", "tracker"))


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    # A textured frame drifting a few pixels per frame, so consecutive frames differ but stay related.
    return [np.roll(base, shift=(2 * i, 3 * i), axis=(0, 1)) for i in range(NUM_FRAMES)]


def _prompts() -> list[Prompt]:
    # Points and boxes only: SAM 3's add_new_mask differs from SAM 2.1's (see the module docstring).
    return [
        Prompt(frame_index=0, object_id=1, points=np.array([[40.0, 30.0]]), point_labels=np.array([1])),
        Prompt(frame_index=0, object_id=2, box=np.array([10.0, 20.0, 70.0, 80.0])),
        Prompt(
            frame_index=0, object_id=3, points=np.array([[90.0, 60.0], [20.0, 10.0]]), point_labels=np.array([1, 0])
        ),
    ]


def test_official_sam3_layout_loads_strictly_from_pt_and_safetensors(
    checkpoint: Path, ours: Tracker, tmp_path: Path
) -> None:
    file_sd = load_state_dict_file(checkpoint)
    assert any(k.startswith("detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis") for k in file_sd)
    st = tmp_path / "sam3_small.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in file_sd.items()}, str(st))
    again = build_tracker(CONFIG, checkpoint=st, device="cpu", parts=("vision", "tracker"))
    for (k, a), b in zip(ours.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    save_safetensors(ours, tmp_path / "ours.safetensors")  # complex64 RoPE tables round-trip through safetensors


def test_backbone_trunk_and_both_necks_match_official(oracle: SimpleNamespace, ours: Tracker) -> None:
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp, cpu_patches(mp):
        official = oracle.model.backbone.forward_image(images)
        official_trunk = oracle.model.backbone.vision_backbone.trunk(images)[-1]
    with torch.no_grad():
        trunk = ours.image_encoder.trunk(images)
        dual = ours.image_encoder.forward_dual(images)
    diffs = {"trunk": (trunk - official_trunk).abs().max().item()}
    branches = (
        ("detector", dual.detector, official["backbone_fpn"], official["vision_pos_enc"]),
        (
            "tracker",
            dual.tracker,
            official["sam2_backbone_out"]["backbone_fpn"],
            official["sam2_backbone_out"]["vision_pos_enc"],
        ),
    )
    for name, mine, fpn, pos in branches:
        assert len(mine.backbone_fpn) == len(fpn) == 3
        for level, (a, b) in enumerate(zip(mine.backbone_fpn, fpn, strict=True)):
            assert a.shape == b.shape
            diffs[f"{name}.{level}"] = (a - b).abs().max().item()
        for level, (a, b) in enumerate(zip(mine.vision_pos_enc, pos, strict=True)):
            diffs[f"{name}.pos{level}"] = (a - b).abs().max().item()
    print("SAM 3 backbone max |diff|:", diffs)
    assert trunk.abs().max() > 0.1  # the compared maps carry signal
    assert max(diffs.values()) < FEATURE_ATOL, diffs


def _add_oracle_prompts(pred: Any, state: dict[str, Any], prompts: list[Prompt]) -> None:
    for p in prompts:
        if p.mask is not None:
            pred.add_new_mask(state, p.frame_index, p.object_id, torch.from_numpy(p.mask))
        else:
            # SAM 3's predictor takes coordinates relative to the frame (it ignores normalize_coords).
            scale = np.array([WIDTH, HEIGHT], dtype=np.float32)
            pts = None if p.points is None else np.asarray(p.points, dtype=np.float32) / scale
            labels = None if p.point_labels is None else np.asarray(p.point_labels, dtype=np.int32)
            box = None if p.box is None else np.asarray(p.box, dtype=np.float32) / np.tile(scale, 2)
            pred.add_new_points_or_box(
                state, p.frame_index, p.object_id, points=pts, labels=labels, box=box, rel_coordinates=True
            )


def _propagate_oracle(pred: Any, state: dict[str, Any], start: int, max_frames: int) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for frame, ids, _, video_masks, obj_scores in pred.propagate_in_video(
        state,
        start_frame_idx=start,
        max_frame_num_to_track=max_frames,
        reverse=False,
        tqdm_disable=True,
        propagate_preflight=True,
    ):
        per = [state["output_dict_per_obj"][i] for i in range(len(ids))]
        outs = [o["cond_frame_outputs"].get(frame) or o["non_cond_frame_outputs"][frame] for o in per]
        pointers = torch.stack([o["obj_ptr"][0] for o in outs]).float()
        out[frame] = (list(ids), video_masks[:, 0].float().clone(), obj_scores[:, 0].float().clone(), pointers)
    return out


def _run_oracle(
    oracle: SimpleNamespace,
    images: torch.Tensor,
    prompts: list[Prompt],
    scores: dict[int, float] | None = None,
    correction: Prompt | None = None,
) -> dict[int, Any]:
    """Per frame (ids, video-res logits, object scores, pointers); `scores` receives each tracked frame's
    memory-selection criterion (`eff_iou_score`) when the oracle computes it. A `correction` is added once the
    session has tracked up to its frame, and tracking resumes from that frame (what a streaming pass sees)."""
    pred = oracle.model
    num_frames = images.shape[0]
    with torch.inference_mode(), pytest.MonkeyPatch.context() as mp, cpu_patches(mp):
        state = pred.init_state(video_height=HEIGHT, video_width=WIDTH, num_frames=num_frames)
        state["images"] = images
        _add_oracle_prompts(pred, state, prompts)
        if correction is None:
            out = _propagate_oracle(pred, state, 0, num_frames)
        else:
            out = _propagate_oracle(pred, state, 0, correction.frame_index)
            _add_oracle_prompts(pred, state, [correction])
            out.update(_propagate_oracle(pred, state, correction.frame_index, num_frames))
        if scores is not None:
            for frame, frame_out in state["output_dict"]["non_cond_frame_outputs"].items():
                if "eff_iou_score" in frame_out:
                    scores[frame] = float(frame_out["eff_iou_score"])
    return out


def _max_differences(
    results: list[FrameResult], expected: dict[int, Any], mask_prompted: frozenset[tuple[int, int]] = frozenset()
) -> dict[str, float]:
    """Largest |ours - official| of mask logits, object scores and pointers; asserts the objects are present.

    mask_prompted: (frame, object) pairs whose output is a mask prompt itself (+-1024 logits by design)."""
    worst = {"logits": 0.0, "scores": 0.0, "pointers": 0.0}
    for r in results:
        ids, logits, scores, pointers = expected[r.frame_index]
        assert r.object_ids == ids == [1, 2, 3]
        # Objects are present: positive scores, non-empty masks, and predicted masks are not the -1024 "absent" fill.
        assert (r.object_score_logits > 0).all() and (scores > 0).all(), (r.frame_index, scores)
        assert (r.mask_logits.flatten(1) > 0).any(dim=1).all() and (logits.flatten(1) > 0).any(dim=1).all()
        for i, oid in enumerate(r.object_ids):
            if (r.frame_index, oid) not in mask_prompted:
                assert (r.mask_logits[i] > -100).all(), (r.frame_index, oid)
        worst["logits"] = max(worst["logits"], (r.mask_logits - logits).abs().max().item())
        worst["scores"] = max(worst["scores"], (r.object_score_logits - scores).abs().max().item())
        worst["pointers"] = max(worst["pointers"], (r.object_pointers - pointers).abs().max().item())
    return worst


def test_tracking_three_objects_over_six_frames_matches_official(
    oracle: SimpleNamespace, ours: Tracker, clip: list[np.ndarray]
) -> None:
    prompts = _prompts()
    images = preprocess_frames(np.stack(clip), IMAGE_SIZE, "cpu", CONFIG.image_mean, CONFIG.image_std)
    expected = _run_oracle(oracle, images, prompts)
    results = list(ours.track(list(enumerate(clip)), prompts, num_frames=NUM_FRAMES))
    assert [r.frame_index for r in results] == list(range(NUM_FRAMES))
    worst = _max_differences(results, expected)
    print("SAM 3 tracker max |diff| over 6 frames x 3 objects:", worst)
    assert worst["logits"] < LOGIT_ATOL and worst["scores"] < LOGIT_ATOL and worst["pointers"] < POINTER_ATOL, worst


SELECTION_FRAMES = 8
# Random heads with forced presence give a flat criterion (measured 0.234-0.247 on this clip, every frame far above
# SAM 3's 0.01), so the threshold sits inside that range: some tracked frames pass and some fail (asserted), with
# margins of >= 4e-4 against differences of ~1e-7 between the two implementations.
SELECTION_THRESHOLD = 0.2405


def test_memory_selection_over_eight_frames_matches_official(oracle: SimpleNamespace, checkpoint: Path) -> None:
    """SAM 3's use_memory_selection: frames failing object score x IoU are not read as memories or pointers."""
    rng = np.random.default_rng(4)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames = [np.roll(base, shift=(2 * i, 3 * i), axis=(0, 1)) for i in range(SELECTION_FRAMES)]
    # Frames unlike the prompted one (flat, inverted, dark) so that the criterion varies from frame to frame.
    frames[3] = np.full_like(base, 128)
    frames[5] = 255 - frames[5]
    frames[6] = frames[6] // 8
    prompts = _prompts()
    images = preprocess_frames(np.stack(frames), IMAGE_SIZE, "cpu", CONFIG.image_mean, CONFIG.image_std)
    criterion: dict[int, float] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(oracle.model, "use_memory_selection", True)
        mp.setattr(oracle.model, "mf_threshold", SELECTION_THRESHOLD)
        expected = _run_oracle(oracle, images, prompts, criterion)
    config = replace(CONFIG, memory_selection=True, memory_selection_threshold=SELECTION_THRESHOLD)
    tracker = build_tracker(config, checkpoint=checkpoint, device="cpu", parts=("vision", "tracker"))
    results = list(tracker.track(list(enumerate(frames)), prompts, num_frames=SELECTION_FRAMES))
    passed = sorted(f for f, v in criterion.items() if v > SELECTION_THRESHOLD)
    failed = sorted(f for f, v in criterion.items() if v <= SELECTION_THRESHOLD)
    print("memory selection criterion per tracked frame:", {f: round(v, 4) for f, v in sorted(criterion.items())})
    # Both kinds of frame occur before the last ones, so the selection changed what later frames read (without it
    # every tracked frame is read).
    assert passed and failed and min(failed) < SELECTION_FRAMES - 2 and min(passed) < SELECTION_FRAMES - 2, criterion
    worst = _max_differences(results, expected)
    print(f"SAM 3 tracker with memory selection, max |diff| over {SELECTION_FRAMES} frames x 3 objects:", worst)
    assert worst["logits"] < LOGIT_ATOL and worst["scores"] < LOGIT_ATOL and worst["pointers"] < POINTER_ATOL, worst


MASK_FRAMES, CORRECTION_FRAME = 8, 4


def _rectangle(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def test_mask_prompts_and_a_mask_correction_match_official(oracle: SimpleNamespace, ours: Tracker) -> None:
    """SAM 3's mask rule: two overlapping masks (the later takes the shared pixels) and a box on frame 0, then a
    mask correction of object 1 on frame 4 after it was tracked there, which conditions all three objects."""
    rng = np.random.default_rng(6)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames = [np.roll(base, shift=(2 * i, 3 * i), axis=(0, 1)) for i in range(MASK_FRAMES)]
    first = [
        Prompt(frame_index=0, object_id=1, mask=_rectangle(20, 20, 60, 70)),
        Prompt(frame_index=0, object_id=2, mask=_rectangle(45, 50, 85, 115)),  # overlaps object 1's mask
        Prompt(frame_index=0, object_id=3, box=np.array([5.0, 5.0, 40.0, 35.0])),
    ]
    shift = (2 * CORRECTION_FRAME, 3 * CORRECTION_FRAME)
    correction = Prompt(
        frame_index=CORRECTION_FRAME,
        object_id=1,
        mask=_rectangle(20 + shift[0], 24 + shift[1], 56 + shift[0], 60 + shift[1]),
    )
    images = preprocess_frames(np.stack(frames), IMAGE_SIZE, "cpu", CONFIG.image_mean, CONFIG.image_std)
    expected = _run_oracle(oracle, images, first, correction=correction)
    results = list(ours.track(list(enumerate(frames)), [*first, correction], num_frames=MASK_FRAMES))
    assert sorted(expected) == [r.frame_index for r in results] == list(range(MASK_FRAMES))
    # The prompted frames' outputs are the masks themselves: object 2 keeps the shared pixels, object 1 loses them.
    on_frame0 = results[0].mask_logits > 0
    assert on_frame0[1, 50, 60] and not on_frame0[0, 50, 60] and on_frame0[0, 30, 30]
    # ... through the low-res grid and back (the official output is that round trip too), so up to its edges.
    corrected = results[CORRECTION_FRAME].mask_logits[0] > 0
    target = torch.from_numpy(correction.mask)
    assert (corrected & target).sum() / (corrected | target).sum() > 0.9
    prompted = frozenset({(0, 1), (0, 2), (CORRECTION_FRAME, 1)})
    worst = _max_differences(results, expected, prompted)
    print(f"SAM 3 tracker with mask prompts and a correction, max |diff| over {MASK_FRAMES} frames x 3 objects:", worst)
    assert worst["logits"] < LOGIT_ATOL and worst["scores"] < LOGIT_ATOL and worst["pointers"] < POINTER_ATOL, worst


def test_point_correction_on_a_tracked_frame_matches_official(
    oracle: SimpleNamespace, ours: Tracker, checkpoint: Path
) -> None:
    """SAM 3's add_new_points on a frame already tracked: the clicks are decoded without memory
    (use_prev_mem_frame=False, SAM 3's default) but with the object's tracked low-res logits there, clamped to
    +-32, as the decoder's mask input (iter_use_prev_mask_pred); the frame then conditions every object."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames = [np.roll(base, shift=(2 * i, 3 * i), axis=(0, 1)) for i in range(MASK_FRAMES)]
    prompts = _prompts()
    shift = np.array([3 * CORRECTION_FRAME, 2 * CORRECTION_FRAME], dtype=np.float64)  # (x, y) drift of the clip
    correction = Prompt(
        frame_index=CORRECTION_FRAME,
        object_id=2,
        points=np.array([[30.0, 40.0], [65.0, 75.0]]) + shift,
        point_labels=np.array([1, 0]),
    )
    images = preprocess_frames(np.stack(frames), IMAGE_SIZE, "cpu", CONFIG.image_mean, CONFIG.image_std)
    expected = _run_oracle(oracle, images, prompts, correction=correction)
    results = list(ours.track(list(enumerate(frames)), [*prompts, correction], num_frames=MASK_FRAMES))
    assert sorted(expected) == [r.frame_index for r in results] == list(range(MASK_FRAMES))
    worst = _max_differences(results, expected)
    print(f"SAM 3 tracker with a point correction on frame {CORRECTION_FRAME}, max |diff|:", worst)
    assert worst["logits"] < LOGIT_ATOL and worst["scores"] < LOGIT_ATOL and worst["pointers"] < POINTER_ATOL, worst
    # The tracked mask as mask input is what makes the difference (measured: logits 0.25, pointers 0.13 without).
    plain = replace(CONFIG, correction_reads_tracked_mask=False)
    tracker = build_tracker(plain, checkpoint=checkpoint, device="cpu", parts=("vision", "tracker"))
    without = list(tracker.track(list(enumerate(frames)), [*prompts, correction], num_frames=MASK_FRAMES))
    assert _max_differences(without, expected)["logits"] > 1e-2


def _official_reconditioning(
    oracle: SimpleNamespace, images: torch.Tensor, prompts: list[Prompt], detection: np.ndarray
) -> tuple[dict[int, Any], dict[str, Any]]:
    """The official session of the objects `prompts` start (one tracker state), tracked to CORRECTION_FRAME, where
    object 1 takes `detection` with add_new_mask + propagate_in_video_preflight (conditioning frame of the whole
    state, pointer from the mask); then, as _tracker_update_memories does, that frame's memory is re-encoded from the
    propagated low-res masks (_run_memory_encoder, not from points, after the loop's hole filling (16), resized
    straight to the memory size, with an area-based object score) and tracking goes on. Outputs on the frame are the
    propagated (filled) ones, as SAM 3's build_outputs writes them. Returns the per-frame expectations and the state."""
    pred = oracle.model
    utils = oracle.ns.tracker_utils
    import sam3.perflib.connected_components as cc

    with torch.inference_mode(), pytest.MonkeyPatch.context() as mp, cpu_patches(mp):
        state = pred.init_state(video_height=HEIGHT, video_width=WIDTH, num_frames=MASK_FRAMES)
        state["images"] = images
        _add_oracle_prompts(pred, state, prompts)
        expected = _propagate_oracle(pred, state, 0, CORRECTION_FRAME)
        tracked = state["output_dict"]["non_cond_frame_outputs"][CORRECTION_FRAME]
        mp.setattr(cc, "connected_components", reference_connected_components)
        low_res = utils.fill_holes_in_mask_scores(tracked["pred_masks"].clone(), 16, True, True)  # (N, 1, h, w)
        pred.add_new_mask(state, CORRECTION_FRAME, 1, torch.from_numpy(detection))
        pred.propagate_in_video_preflight(state, run_mem_encoder=True)
        side = tuple(pred.maskmem_backbone.mask_downsampler.interpol_size)
        high = torch.nn.functional.interpolate(low_res, size=side, mode="bilinear", align_corners=False)
        score = torch.where((high > 0).any(dim=(-1, -2)), 10.0, -10.0)
        n = low_res.shape[0]
        features, _ = pred._run_memory_encoder(state, CORRECTION_FRAME, n, high, score, is_mask_from_pts=False)
        state["output_dict"]["cond_frame_outputs"][CORRECTION_FRAME]["maskmem_features"] = features
        after = _propagate_oracle(pred, state, CORRECTION_FRAME, MASK_FRAMES)
    ids, _, scores, _ = expected[CORRECTION_FRAME]
    logits = torch.nn.functional.interpolate(low_res, size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False)[:, 0]
    expected.update(after)
    expected[CORRECTION_FRAME] = (ids, logits, scores, after[CORRECTION_FRAME][3])
    return expected, state


class _Recondition:
    """A FramePlanner that re-conditions `object_id` on `frame_index` with `mask` (as concept mode does), or, with
    `as_prompt`, gives the mask as a plain mask prompt (memory and output from the mask)."""

    def __init__(self, frame_index: int, object_id: int, mask: np.ndarray, as_prompt: bool = False) -> None:
        self.frame_index, self.object_id, self.mask, self.as_prompt = frame_index, object_id, mask, as_prompt

    def wants(self, frame_index: int) -> bool:
        return frame_index == self.frame_index

    def plan(self, view: KeyframeView) -> FramePlan:
        prompt = Prompt(frame_index=view.frame_index, object_id=self.object_id, mask=self.mask)
        return FramePlan(prompts=[prompt]) if self.as_prompt else FramePlan(recondition=[prompt])


def test_reconditioning_matches_official_add_new_mask_with_memory_from_the_propagated_mask(
    oracle: SimpleNamespace, ours: Tracker
) -> None:
    """Concept mode's re-conditioning at the tracker level (a video-level run needs the detector, too slow on CPU):
    the official session tracks one box-prompted object to frame 4, takes a detection's mask there with add_new_mask
    + propagate_in_video_preflight (conditioning frame, pointer from the mask), then, as _tracker_update_memories
    does, re-encodes that frame's memory from the propagated low-res masks (_run_memory_encoder, not from points,
    resized straight to the memory size, with an area-based object score, after the loop's hole filling) and
    tracks on. Outputs on
    the frame are the propagated ones (SAM 3's build_outputs); the pointer is the mask's."""
    rng = np.random.default_rng(8)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames = [np.roll(base, shift=(2 * i, 3 * i), axis=(0, 1)) for i in range(MASK_FRAMES)]
    prompts = [Prompt(frame_index=0, object_id=1, box=np.array([10.0, 20.0, 70.0, 80.0]))]
    detection = _rectangle(20 + 2 * CORRECTION_FRAME, 14 + 3 * CORRECTION_FRAME, 78, 84 + 3 * CORRECTION_FRAME)
    images = preprocess_frames(np.stack(frames), IMAGE_SIZE, "cpu", CONFIG.image_mean, CONFIG.image_std)
    expected, _ = _official_reconditioning(oracle, images, prompts, detection)

    def run(planner: _Recondition) -> list[FrameResult]:
        return list(ours.track(list(enumerate(frames)), prompts, num_frames=MASK_FRAMES, planner=planner))

    results = run(_Recondition(CORRECTION_FRAME, 1, detection))
    worst = {"logits": 0.0, "scores": 0.0, "pointers": 0.0}
    for r in results:
        e_ids, e_logits, e_scores, e_pointers = expected[r.frame_index]
        assert r.object_ids == e_ids == [1] and (r.object_score_logits > 0).all() and (e_scores > 0).all()
        assert (r.mask_logits > 0).any() and (r.mask_logits > -100).all()
        worst["logits"] = max(worst["logits"], (r.mask_logits - e_logits).abs().max().item())
        worst["scores"] = max(worst["scores"], (r.object_score_logits - e_scores).abs().max().item())
        worst["pointers"] = max(worst["pointers"], (r.object_pointers - e_pointers).abs().max().item())
    print("SAM 3 re-conditioning on frame 4, max |diff| over 8 frames:", worst)
    assert worst["logits"] < LOGIT_ATOL and worst["scores"] < LOGIT_ATOL and worst["pointers"] < POINTER_ATOL, worst
    # The pointer changed on the frame, and memory from the propagated mask is what later frames read: with the
    # detection as a plain mask prompt (memory from the mask), the frames after it differ.
    assert (results[CORRECTION_FRAME].object_pointers - expected[CORRECTION_FRAME - 1][3]).abs().max() > 1e-2
    plain = run(_Recondition(CORRECTION_FRAME, 1, detection, as_prompt=True))
    later = max((a.mask_logits - b.mask_logits).abs().max().item() for a, b in zip(plain[5:], results[5:], strict=True))
    assert later > 10 * LOGIT_ATOL, later  # measured 8e-3


class _CohortRecondition:
    """A FramePlanner that starts `masks` (object id -> mask) together on frame 0, one cohort as SAM 3's video loop
    adds a frame's new objects to one tracker state, and re-conditions `object_id` on `frame_index` with `mask`."""

    def __init__(self, masks: dict[int, np.ndarray], frame_index: int, object_id: int, mask: np.ndarray) -> None:
        self.masks, self.frame_index, self.object_id, self.mask = masks, frame_index, object_id, mask

    def wants(self, frame_index: int) -> bool:
        return frame_index in (0, self.frame_index)

    def plan(self, view: KeyframeView) -> FramePlan:
        if view.frame_index == 0:
            return FramePlan(prompts=[Prompt(frame_index=0, object_id=o, mask=m) for o, m in self.masks.items()])
        return FramePlan(recondition=[Prompt(frame_index=view.frame_index, object_id=self.object_id, mask=self.mask)])


def test_reconditioning_an_object_conditions_its_cohort_as_the_official_tracker_state_does(
    oracle: SimpleNamespace, checkpoint: Path
) -> None:
    """Two objects born together share one official tracker state. Re-conditioning one of them (add_new_mask +
    propagate_in_video_preflight) consolidates the state's frame: it becomes a conditioning frame of the other one
    too, with that object's propagated output and pointer. Memory of both is then re-encoded from the propagated
    masks (_tracker_update_memories; its shrink suppression off on both sides, a rule of its own). Ours keeps the
    cohort (TrackerConfig.video_loop_cohorts); with it off the mate's frame stays a tracked one and later frames
    differ."""
    rng = np.random.default_rng(8)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames = [np.roll(base, shift=(2 * i, 3 * i), axis=(0, 1)) for i in range(MASK_FRAMES)]
    masks = {1: _rectangle(20, 10, 70, 60), 2: _rectangle(30, 70, 80, 120)}
    detection = _rectangle(20 + 2 * CORRECTION_FRAME, 10 + 3 * CORRECTION_FRAME, 74, 64 + 3 * CORRECTION_FRAME)
    images = preprocess_frames(np.stack(frames), IMAGE_SIZE, "cpu", CONFIG.image_mean, CONFIG.image_std)
    prompts = [Prompt(frame_index=0, object_id=o, mask=m) for o, m in masks.items()]
    expected, state = _official_reconditioning(oracle, images, prompts, detection)
    per_object = state["output_dict_per_obj"]  # by object index: objects 1 and 2 are 0 and 1
    assert all(CORRECTION_FRAME in per_object[i]["cond_frame_outputs"] for i in (0, 1))  # the mate's, too

    def run(cohorts: bool) -> list[FrameResult]:
        config = replace(CONFIG, video_loop_shrink_suppression=False, video_loop_cohorts=cohorts)
        tracker = build_tracker(config, checkpoint=checkpoint, device="cpu", parts=("vision", "tracker"))
        planner = _CohortRecondition(masks, CORRECTION_FRAME, 1, detection)
        return list(tracker.track(list(enumerate(frames)), [], num_frames=MASK_FRAMES, planner=planner))

    results = run(cohorts=True)
    worst = {"logits": 0.0, "scores": 0.0, "pointers": 0.0}
    for r in results[1:]:  # frame 0 outputs the mask prompts themselves
        e_ids, e_logits, e_scores, e_pointers = expected[r.frame_index]
        assert r.object_ids == e_ids == [1, 2] and (r.object_score_logits > 0).all() and (e_scores > 0).all()
        assert (r.mask_logits.flatten(1) > 0).any(dim=1).all()
        worst["logits"] = max(worst["logits"], (r.mask_logits - e_logits).abs().max().item())
        worst["scores"] = max(worst["scores"], (r.object_score_logits - e_scores).abs().max().item())
        worst["pointers"] = max(worst["pointers"], (r.object_pointers - e_pointers).abs().max().item())
    print("SAM 3 cohort re-conditioning on frame 4, max |diff| over frames 1-7 x 2 objects:", worst)
    assert worst["logits"] < LOGIT_ATOL and worst["scores"] < LOGIT_ATOL and worst["pointers"] < POINTER_ATOL, worst
    alone = run(cohorts=False)
    later = max(
        (a.mask_logits - expected[a.frame_index][1]).abs().max().item() for a in alone[CORRECTION_FRAME + 1 :]
    )
    print("with cohorts off, max |diff| of the logits after frame 4:", later)
    # Random heads read memory weakly, so the mate's frame read as a tracked one moves later logits by little
    # (measured 2.2e-5), but by far more than ours differs from the official state with cohorts (2.9e-7).
    assert later > 20 * worst["logits"], (later, worst)
