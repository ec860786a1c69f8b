"""Parity with the official SAM 2.1 video predictor (sam2==1.1.0, a test-only oracle).

Same random weights (saved by the official builder, loaded strictly into ours through the
checkpoint file), same JPEG frames, same prompts; per frame we compare the video-resolution mask
logits, the object-score logits and the object pointers of every object.

Tolerance: 1e-3 absolute on all three. What remains is the frame resize: the oracle resizes with
PIL (fixed-point bicubic on uint8), we with torch's antialiased bicubic, which differs by at most
one grey level; with identical input tensors the two agree to ~1e-6.

Oracle settings (reference/sam-trackers.md §6): `fill_hole_area = 0` on both sides (the official
skips hole filling on CPU anyway) and its memory attention casts the bf16 memory to fp32 on CPU;
both sides still round stored memory to bf16. Each oracle session adds all prompts before
`propagate_in_video`, which is the behaviour `Tracker.track` reproduces for objects prompted on
the frame where they join. An object joining later is compared with an oracle session of its own
(the official tracks objects independently), and reverse tracking with a separate session.

The long run (24 frames, 3 objects, a correction click for object 1 on frame 12) goes past the bank's
limits (6 recent memories, 15 pointers) and gives object 1 two conditioning frames. It is compared where
streaming and the official predictor agree: the official session tracks frames 0-11 from the first prompts,
receives the click on frame 12 (not yet tracked, so it is decoded without memory, as ours does) and resumes
from there. They differ by design elsewhere: re-propagating from frame 0 after the click lets the official
frames 1-11 attend to frame 12's memory (streaming cannot see a later prompt), and a click on a frame the
official predictor has already tracked is decoded with memory and the previous mask as input (interactive
refinement), while a streaming pass decodes a prompted frame from the prompt alone. Every comparison first
asserts that the objects are present (object score > 0, non-empty mask) on most frames, so agreement between
two absent objects' constant outputs cannot pass for parity.

The model runs at image_size 256 (hydra override `++model.image_size=256` for the oracle, the same
field for ours; every code path is the one of 1024, on a 16 x 16 feature grid) to keep CPU time
down; one shorter run at SAM 2.1's native 1024 is marked slow. (At 512 the same tests passed too.)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

# A missing oracle fails collection (CI must not go green without it) unless skipping is asked for.
if importlib.util.find_spec("sam2") is None and os.environ.get("PARITY_ALLOW_NO_ORACLE") == "1":
    pytest.skip("sam2 (the test-only oracle) is not installed; PARITY_ALLOW_NO_ORACLE=1", allow_module_level=True)

from PIL import Image as PIL_Image
from sam2.build_sam import build_sam2_video_predictor  # `make oracle` installs it

from batchtrack.model.configs import get_config
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.loading.checkpoint import load_state_dict_file, load_strict
from batchtrack.model.tracker.tracker import Tracker
from batchtrack.model.types import FrameResult, Prompt

pytestmark = pytest.mark.parity

OFFICIAL_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
TOLERANCE = 1e-3
SIZE = 256
NUM_FRAMES = 8
HEIGHT, WIDTH = 120, 160
# The long run: past the bank's limits (6 recent memories, 15 pointers), with a correction click.
LONG_FRAMES = 24
CORRECTION_FRAME = 12
MIN_PRESENT = 0.75  # fraction of compared frames on which each object must be present

OracleFrame = tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]  # ids, logits (N,H,W), scores (N,), ptrs (N,C)


def _draw_frame(t: int) -> np.ndarray:
    """Gradient background with noise, a red disc moving right and a green block moving left."""
    rng = np.random.default_rng(t)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    img = np.stack([xx * 1.5, yy * 2.0, (xx + yy) * 0.8], axis=-1) + rng.normal(0, 10, (HEIGHT, WIDTH, 3))
    img[(xx - (40 + 5 * t)) ** 2 + (yy - 50) ** 2 < 15**2] = (220, 30, 30)
    img[80:105, 100 - 3 * t : 130 - 3 * t] = (30, 200, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_long_frame(t: int) -> np.ndarray:
    """Three objects over 24 frames: a red disc moving right, a green block moving left, a blue square sinking."""
    rng = np.random.default_rng(100 + t)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    img = np.stack([xx * 1.5, yy * 2.0, (xx + yy) * 0.8], axis=-1) + rng.normal(0, 10, (HEIGHT, WIDTH, 3))
    img[(xx - (25 + 3 * t)) ** 2 + (yy - 45) ** 2 < 14**2] = (220, 30, 30)
    img[85:108, 125 - 2 * t : 152 - 2 * t] = (30, 200, 40)
    img[8 + 2 * t : 30 + 2 * t, 100:122] = (40, 40, 210)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_clip(folder: Path, num_frames: int, draw: Callable[[int], np.ndarray]) -> tuple[Path, list[np.ndarray]]:
    """A JPEG folder for the oracle and the decoded pixels of the same files for us."""
    for t in range(num_frames):
        PIL_Image.fromarray(draw(t)).save(folder / f"{t:05d}.jpg", quality=100)
    return folder, [np.array(PIL_Image.open(folder / f"{t:05d}.jpg").convert("RGB")) for t in range(num_frames)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    return _write_clip(tmp_path_factory.mktemp("frames"), NUM_FRAMES, _draw_frame)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    return _write_clip(tmp_path_factory.mktemp("long_frames"), LONG_FRAMES, _draw_long_frame)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random SAM 2.1 tiny weights as the official builder makes them, saved the way Meta ships them."""
    torch.manual_seed(0)
    model = build_sam2_video_predictor(OFFICIAL_CONFIG, ckpt_path=None, device="cpu")
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def _oracle(checkpoint: Path, size: int) -> Any:
    pred = build_sam2_video_predictor(
        OFFICIAL_CONFIG, ckpt_path=str(checkpoint), device="cpu", hydra_overrides_extra=[f"++model.image_size={size}"]
    )
    pred.fill_hole_area = 0
    attend = pred.memory_attention.forward

    def attend_fp32(curr: Any, memory: torch.Tensor, curr_pos: Any = None, memory_pos: Any = None, **kw: Any) -> Any:
        # On CPU without autocast the official bf16 memory cannot meet fp32 weights (§6 workaround).
        return attend(curr=curr, memory=memory.float(), curr_pos=curr_pos, memory_pos=memory_pos.float(), **kw)

    pred.memory_attention.forward = attend_fp32
    return pred


def _ours(checkpoint: Path, size: int) -> Tracker:
    config = dataclasses.replace(get_config("sam2.1_hiera_tiny"), image_size=size, fill_hole_area=0)
    tracker = Tracker(config)
    load_strict(tracker, load_state_dict_file(checkpoint), str(checkpoint))
    return tracker.eval()


def _add_prompts(pred: Any, state: dict[str, Any], prompts: list[Prompt]) -> None:
    for p in prompts:
        if p.mask is not None:
            pred.add_new_mask(state, p.frame_index, p.object_id, p.mask)
        else:
            pred.add_new_points_or_box(
                state, p.frame_index, p.object_id, points=p.points, labels=p.point_labels, box=p.box
            )


def _collect(
    pred: Any, state: dict[str, Any], start: int | None, max_frames: int | None, reverse: bool = False
) -> dict[int, OracleFrame]:
    """Propagate and keep every frame's mask logits, object score logits and object pointers per object."""
    out: dict[int, OracleFrame] = {}
    for frame, ids, logits in pred.propagate_in_video(
        state, start_frame_idx=start, max_frame_num_to_track=max_frames, reverse=reverse
    ):
        outputs = []
        for idx in range(len(ids)):
            per_obj = state["output_dict_per_obj"][idx]
            outputs.append(per_obj["cond_frame_outputs"].get(frame) or per_obj["non_cond_frame_outputs"][frame])
        scores = torch.stack([o["object_score_logits"][0, 0] for o in outputs])
        pointers = torch.stack([o["obj_ptr"][0] for o in outputs])
        out[frame] = (list(ids), logits[:, 0].clone(), scores.clone(), pointers.clone())
    return out


def _run_oracle(
    pred: Any, folder: Path, prompts: list[Prompt], reverse: bool, max_frames: int | None = None
) -> dict[int, OracleFrame]:
    with torch.inference_mode():
        state = pred.init_state(str(folder))
        _add_prompts(pred, state, prompts)
        return _collect(pred, state, start=None, max_frames=max_frames, reverse=reverse)


def _assert_objects_present(oracle: dict[int, OracleFrame], label: str) -> None:
    """Fail unless every object is present (object score > 0) with a non-empty mask on most frames: the
    outputs of absent objects are constants (no-object pointer, -1024 logits) that agree trivially."""
    ids = oracle[min(oracle)][0]
    for row, obj in enumerate(ids):
        present = [
            float(scores[row]) > 0 and bool((logits[row] > 0).any())
            for frame_ids, logits, scores, _ in oracle.values()
            if frame_ids == ids
        ]
        fraction = sum(present) / len(present)
        assert fraction >= MIN_PRESENT, f"{label}: object {obj} present on only {fraction:.0%} of compared frames"


def _compare(ours: dict[int, FrameResult], oracle: dict[int, OracleFrame], label: str) -> float:
    """Largest difference over all compared values; fails with the frame and object when above tolerance."""
    _assert_objects_present(oracle, label)
    worst = 0.0
    for frame, (ids, logits, scores, pointers) in sorted(oracle.items()):
        result = ours[frame]
        rows = [result.object_ids.index(o) for o in ids]
        for name, got, want in (
            ("mask logits", result.mask_logits[rows], logits),
            ("object score logits", result.object_score_logits[rows], scores),
            ("object pointers", result.object_pointers[rows], pointers),
        ):
            assert got.shape == want.shape, f"{label} frame {frame} {name}: shape {got.shape} vs {want.shape}"
            diff = (got - want.float()).abs()
            per_obj = diff.reshape(len(ids), -1).amax(dim=1)
            worst = max(worst, float(per_obj.max()))
            assert float(per_obj.max()) <= TOLERANCE, (
                f"{label} frame {frame} {name}: max |diff| per object {dict(zip(ids, per_obj.tolist(), strict=True))}"
            )
    print(f"{label}: largest |ours - official| over {len(oracle)} frames = {worst:.2e}")
    return worst


def _box(frame: int, obj: int) -> Prompt:
    return Prompt(frame, obj, box=np.array([20, 30, 62, 70], dtype=np.float32))


def _points(frame: int, obj: int, xy: list[list[float]], labels: list[int]) -> Prompt:
    return Prompt(frame, obj, points=np.array(xy, dtype=np.float32), point_labels=np.array(labels, dtype=np.int32))


def _mask(frame: int, obj: int) -> Prompt:
    m = np.zeros((HEIGHT, WIDTH), dtype=bool)
    shift = 3 * frame
    m[80:105, 100 - shift : 130 - shift] = True
    return Prompt(frame, obj, mask=m)


def _track(
    tracker: Tracker, frames: list[np.ndarray], prompts: list[Prompt], reverse: bool, clip_length: int = NUM_FRAMES
) -> dict[int, FrameResult]:
    order = list(reversed(range(len(frames)))) if reverse else list(range(len(frames)))
    stream = tracker.track([(t, frames[t]) for t in order], prompts, reverse=reverse, num_frames=clip_length)
    return {r.frame_index: r for r in stream}


def test_official_checkpoint_loads_strictly_into_build_tracker(checkpoint: Path) -> None:
    tracker = build_tracker("sam2.1_hiera_tiny", checkpoint=checkpoint, device="cpu")
    official = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    ours = tracker.state_dict()
    assert set(ours) == set(official)
    for key, value in official.items():
        assert torch.equal(ours[key], value), key


def test_forward_propagation_matches_official(checkpoint: Path, clip: tuple[Path, list[np.ndarray]]) -> None:
    folder, frames = clip
    first = [
        _box(0, 1),  # a box = 2 points: single-mask output with the stability fallback
        _points(0, 2, [[115, 92], [60, 20]], [1, 0]),  # 2 clicks: single-mask output
        _mask(0, 3),  # mask prompt: used as output, pointer from a decoder pass
    ]
    late = [_points(3, 4, [[55, 50]], [1])]  # one click: multimask output; joins on frame 3
    ours = _track(_ours(checkpoint, SIZE), frames, first + late, reverse=False)
    assert [ours[t].object_ids for t in range(NUM_FRAMES)] == [[1, 2, 3]] * 3 + [[1, 2, 3, 4]] * 5

    oracle = _oracle(checkpoint, SIZE)
    _compare(ours, _run_oracle(oracle, folder, first, reverse=False), "objects 1-3")
    late_oracle = _run_oracle(oracle, folder, late, reverse=False)
    assert sorted(late_oracle) == list(range(3, NUM_FRAMES))
    _compare(ours, late_oracle, "object 4 (joins on frame 3)")


def test_reverse_propagation_matches_official(checkpoint: Path, clip: tuple[Path, list[np.ndarray]]) -> None:
    folder, frames = clip
    last = NUM_FRAMES - 1
    prompts = [_box(last, 1), _points(last, 2, [[115, 92]], [1])]
    ours = _track(_ours(checkpoint, SIZE), frames, prompts, reverse=True)
    oracle = _run_oracle(_oracle(checkpoint, SIZE), folder, prompts, reverse=True)
    assert sorted(oracle) == list(range(NUM_FRAMES))
    _compare(ours, oracle, "reverse")


@pytest.mark.slow
def test_native_1024_matches_official(checkpoint: Path, clip: tuple[Path, list[np.ndarray]]) -> None:
    folder, frames = clip
    prompts = [_box(0, 1), _mask(0, 2)]
    # Four frames of the eight-frame clip: both sides normalise pointer distances by the clip length.
    ours = _track(_ours(checkpoint, 1024), frames[:4], prompts, reverse=False, clip_length=NUM_FRAMES)
    oracle = _run_oracle(_oracle(checkpoint, 1024), folder, prompts, reverse=False, max_frames=3)
    assert sorted(oracle) == [0, 1, 2, 3]
    _compare(ours, oracle, "1024")



def _run_oracle_with_correction(
    pred: Any, folder: Path, first: list[Prompt], correction: Prompt
) -> dict[int, OracleFrame]:
    """The official predictor the way a streaming pass sees a correction: frames before it tracked from the
    first prompts only, the click added on a frame not yet tracked, then propagation resumed from there."""
    with torch.inference_mode():
        state = pred.init_state(str(folder))
        _add_prompts(pred, state, first)
        out = _collect(pred, state, start=0, max_frames=correction.frame_index - 1)
        _add_prompts(pred, state, [correction])
        out.update(_collect(pred, state, start=correction.frame_index, max_frames=None))
    return out


def test_long_clip_with_a_later_correction_click_matches_official(
    checkpoint: Path, long_clip: tuple[Path, list[np.ndarray]]
) -> None:
    folder, frames = long_clip
    first = [
        _points(0, 1, [[25, 45]], [1]),  # one click: multimask output
        Prompt(0, 2, box=np.array([124, 84, 152, 108], dtype=np.float32)),
        _points(0, 3, [[110, 18], [60, 100]], [1, 0]),
    ]
    # A second positive and a negative click on object 1 where the disc is on the correction frame.
    x = 25 + 3 * CORRECTION_FRAME
    correction = _points(CORRECTION_FRAME, 1, [[x, 45], [x + 30, 45]], [1, 0])
    ours = _track(_ours(checkpoint, SIZE), frames, [*first, correction], reverse=False, clip_length=LONG_FRAMES)
    oracle = _run_oracle_with_correction(_oracle(checkpoint, SIZE), folder, first, correction)
    assert sorted(oracle) == list(range(LONG_FRAMES))
    _compare(ours, oracle, "24 frames, 3 objects, correction on frame 12")
    assert ours[CORRECTION_FRAME].object_ids == [1, 2, 3]
