"""Tracker.track on the test-tiny config: streaming semantics, occlusion, reverse order, bounded memory."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from batchtrack.errors import PromptError
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.tracker.planning import FramePlan, KeyframeView
from batchtrack.model.tracker.tracker import NO_OBJECT_LOGIT, Tracker
from batchtrack.model.types import FrameResult, Prompt

H, W = 48, 64


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The suite shares 2 cores; one thread is faster for these tiny tensors and keeps timings stable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tracker() -> Tracker:
    torch.manual_seed(0)
    return build_tracker("test-tiny", device="cpu")


def _frame(t: int, height: int = H, width: int = W) -> np.ndarray:
    """A textured background with a bright square moving right by 2 px a frame."""
    rng = np.random.default_rng(1000 + t)
    img = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    x = 8 + 2 * t
    img[16:32, x : x + 16] = (230, 40, 40)
    return img


def _frames(indices: range) -> list[tuple[int, np.ndarray]]:
    return [(t, _frame(t)) for t in indices]


def _box(frame: int, obj: int = 1) -> Prompt:
    return Prompt(frame, obj, box=np.array([6, 14, 26, 34], dtype=np.float32))


def test_results_come_in_input_order_with_video_resolution_tensors(tracker: Tracker) -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[30:40, 40:56] = True
    prompts = [
        _box(0, 1),
        Prompt(0, 2, points=np.array([[48.0, 20.0]], dtype=np.float32), point_labels=np.array([1], dtype=np.int32)),
        Prompt(0, 3, mask=mask),
    ]
    results = list(tracker.track(_frames(range(6)), prompts))
    assert [r.frame_index for r in results] == list(range(6))
    for r in results:
        assert r.object_ids == [1, 2, 3]
        assert r.mask_logits.shape == (3, H, W) and r.mask_logits.dtype == torch.float32
        assert r.object_score_logits.shape == (3,) and r.iou_predictions.shape == (3,)
        assert r.object_pointers.shape == (3, 256)
        assert torch.isfinite(r.mask_logits).all()
    # A mask prompt is used as the output on its frame: +10 inside, -10 outside, blurred only at the
    # edge by the trip through the 16 x 16 low-res grid of test-tiny.
    first = results[0]
    assert first.object_score_logits[2] == 10.0 and first.iou_predictions[2] == 1.0
    out = first.mask_logits[2] > 0
    target = torch.from_numpy(mask)
    assert (out & target).sum() / (out | target).sum() > 0.8
    assert first.mask_logits[2].max() == pytest.approx(10.0) and first.mask_logits[2].min() == pytest.approx(-10.0)


def test_object_prompted_on_frame_5_appears_from_frame_5(tracker: Tracker) -> None:
    results = list(tracker.track(_frames(range(2, 10)), [_box(3, 1), _box(5, 2)]))
    ids = {r.frame_index: r.object_ids for r in results}
    assert ids == {2: [], 3: [1], 4: [1], 5: [1, 2], 6: [1, 2], 7: [1, 2], 8: [1, 2], 9: [1, 2]}
    assert results[0].mask_logits.shape == (0, H, W)


def test_reverse_equals_forward_on_the_time_reversed_clip(tracker: Tracker) -> None:
    n = 9
    reverse = list(tracker.track([(t, _frame(t)) for t in reversed(range(n))], [_box(n - 1)], reverse=True))
    # The same pixels in forward order, renumbered so the prompted frame is frame 0.
    forward = list(tracker.track([(n - 1 - t, _frame(t)) for t in reversed(range(n))], [_box(0)]))
    assert [r.frame_index for r in reverse] == list(reversed(range(n)))
    for r, f in zip(reverse, forward, strict=True):
        assert r.frame_index == n - 1 - f.frame_index
        torch.testing.assert_close(r.mask_logits, f.mask_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(r.object_pointers, f.object_pointers, atol=1e-5, rtol=0)
        torch.testing.assert_close(r.object_score_logits, f.object_score_logits, atol=1e-5, rtol=0)


def test_reverse_tracks_the_frames_before_the_prompt(tracker: Tracker) -> None:
    # Guard against a reverse pass that ignores direction: the same frames forward give other results.
    frames = _frames(range(8))
    fwd = {r.frame_index: r for r in tracker.track(frames, [_box(4)])}
    rev = {r.frame_index: r for r in tracker.track(list(reversed(frames)), [_box(4)], reverse=True)}
    assert set(fwd) == set(range(8)) and set(rev) == set(range(8))
    assert [t for t in range(8) if fwd[t].object_ids] == [4, 5, 6, 7]
    assert [t for t in range(8) if rev[t].object_ids] == [0, 1, 2, 3, 4]
    torch.testing.assert_close(fwd[4].mask_logits, rev[4].mask_logits)  # the conditioning frame itself


def test_occluded_object_gets_no_obj_ptr_and_comes_back(tracker: Tracker) -> None:
    bias = tracker.sam_mask_decoder.pred_obj_score_head.layers[2].bias
    saved = bias.detach().clone()
    no_obj_ptr = tracker.no_obj_ptr.detach()[0]
    results: list[FrameResult] = []
    try:
        with torch.no_grad():
            bias.fill_(50.0)  # visible on the prompted frame
            for r in tracker.track(_frames(range(8)), [_box(0)]):
                results.append(r)
                if r.frame_index == 0:
                    bias.fill_(-50.0)  # frames 1-3: the decoder says "not there"
                elif r.frame_index == 3:
                    bias.fill_(50.0)  # frames 4-7: back
    finally:
        with torch.no_grad():
            bias.copy_(saved)
    for r in results[1:4]:
        assert r.object_score_logits[0] < 0
        assert torch.equal(r.object_pointers[0], no_obj_ptr)
        assert torch.all(r.mask_logits == NO_OBJECT_LOGIT)
    for r in results[4:]:
        assert r.object_score_logits[0] > 0
        assert not torch.equal(r.object_pointers[0], no_obj_ptr)
        assert not torch.all(r.mask_logits == NO_OBJECT_LOGIT)


def test_memory_bank_stays_bounded_over_50_frames(tracker: Tracker) -> None:
    bank = tracker.new_bank(num_frames=50)
    cfg = tracker.config
    frames = _frames(range(50))
    seen = 0
    for r in tracker.track(frames, [_box(0, 1), _box(10, 2)], bank=bank):
        for oid in r.object_ids:
            assert bank.num_spatial_frames(oid) <= 1 + cfg.num_maskmem - 1
            assert bank.num_pointers(oid) <= cfg.max_obj_ptrs_in_encoder
        seen += 1
    assert seen == 50
    assert bank.num_spatial_frames(1) == cfg.num_maskmem
    assert bank.num_pointers(1) == cfg.max_obj_ptrs_in_encoder


def test_frames_are_pulled_lazily_with_bounded_look_ahead(tracker: Tracker) -> None:
    pulled: list[int] = []

    def source() -> Iterator[tuple[int, np.ndarray]]:
        for t in range(20):
            pulled.append(t)
            yield t, _frame(t)

    stream = tracker.track(source(), [_box(0)])
    for r in stream:
        assert max(pulled) - r.frame_index < tracker.config.encoder_batch_size
        if r.frame_index == 9:
            break
    assert max(pulled) < 9 + tracker.config.encoder_batch_size


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    import os

    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def test_memory_does_not_grow_with_clip_length(tracker: Tracker) -> None:
    height, width = 360, 640
    base = _frame(0, height, width)

    def source() -> Iterator[tuple[int, np.ndarray]]:
        for t in range(300):
            yield t, np.roll(base, 2 * t, axis=1)

    box = np.array([8, 16, 40, 48], dtype=np.float32)
    prompts = [Prompt(0, 1, box=box), Prompt(0, 2, box=box + 100)]
    rss_at_50 = 0
    for r in tracker.track(source(), prompts):
        if r.frame_index == 50:
            rss_at_50 = _rss_bytes()
        last = r.frame_index
    growth = _rss_bytes() - rss_at_50
    assert last == 299
    assert growth < 50 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB between frame 50 and 300"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (Prompt(0, 1), "needs points, a box or a mask"),
        (Prompt(0, 1, points=np.zeros((1, 2), np.float32)), "points and point_labels must be given together"),
        (
            Prompt(0, 1, points=np.zeros((1, 2), np.float32), point_labels=np.array([2])),
            r"point_labels must be 0 \(background\) or 1",
        ),
        (Prompt(0, 1, box=np.zeros(3, np.float32)), "box must be 4 finite numbers"),
        (
            Prompt(0, 1, box=np.zeros(4, np.float32), mask=np.zeros((H, W), bool)),
            "a mask cannot be combined with points or a box",
        ),
    ],
)
def test_invalid_prompts_are_rejected_with_a_reason(tracker: Tracker, prompt: Prompt, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        next(tracker.track(_frames(range(2)), [prompt]))


def test_mask_prompt_of_the_wrong_size_is_rejected(tracker: Tracker) -> None:
    with pytest.raises(PromptError, match=r"mask shape \(10, 10\) differs from the frame size \(48, 64\)"):
        list(tracker.track(_frames(range(2)), [Prompt(0, 1, mask=np.ones((10, 10), bool))]))


def _sam3_tiny(**changes: bool) -> Tracker:
    from dataclasses import replace

    from batchtrack.model.configs import get_config

    torch.manual_seed(0)
    return build_tracker(replace(get_config("sam3-test-tiny"), **changes), device="cpu")


def _rect(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


@pytest.mark.parametrize("sam3_rule", [True, False])
def test_sam3_mask_prompt_is_the_output_at_video_resolution_and_the_later_mask_takes_shared_pixels(
    sam3_rule: bool,
) -> None:
    tracker = _sam3_tiny(mask_prompt_at_video_res=sam3_rule)
    first, second = _rect(8, 8, 32, 40), _rect(20, 24, 44, 60)  # overlap: rows 20-32, columns 24-40
    prompts = [Prompt(0, 1, mask=first), Prompt(0, 2, mask=second)]
    result = next(iter(tracker.track([(0, _frame(0))], prompts, num_frames=1)))
    fg = result.mask_logits > 0
    assert torch.equal(result.object_score_logits, torch.tensor([10.0, 10.0]))  # mask prompts: present, +10
    assert bool(fg[1, 26, 30])  # the later mask keeps the shared pixels ...
    assert bool(fg[0, 26, 30]) != sam3_rule  # ... and takes them from the earlier one under SAM 3's rule only
    own = torch.from_numpy(first & ~second if sam3_rule else first)
    assert (fg[0] & own).sum() / (fg[0] | own).sum() > 0.8  # the prompt itself, through the low-res grid
    if sam3_rule:
        # +-1024 logits at video resolution (SAM 2.1's rule gives +-10 on the model's input grid).
        assert result.mask_logits.max() == 1024.0 and result.mask_logits.min() == -1024.0


@pytest.mark.parametrize("sam3_rule", [True, False])
def test_sam3_mask_correction_conditions_every_live_object_on_that_frame(sam3_rule: bool) -> None:
    tracker = _sam3_tiny(correction_conditions_all_objects=sam3_rule)
    prompts = [Prompt(0, 1, mask=_rect(8, 8, 24, 24)), Prompt(0, 2, box=np.array([30.0, 20.0, 60.0, 44.0]))]
    correction = Prompt(2, 1, mask=_rect(8, 12, 24, 28))
    bank = tracker.new_bank(num_frames=4)
    frames = [(t, _frame(t)) for t in range(4)]
    results = list(tracker.track(frames, [*prompts, correction], num_frames=4, bank=bank))
    assert [r.object_ids for r in results] == [[1, 2]] * 4
    assert bank.num_cond_frames(1) == 2  # the corrected object: frames 0 and 2 either way
    assert bank.num_cond_frames(2) == (2 if sam3_rule else 1)  # the other live object: frame 2 too under SAM 3


@pytest.mark.parametrize("sam3_rule", [True, False])
def test_sam3_click_correction_on_a_tracked_frame_reads_the_tracked_mask(sam3_rule: bool) -> None:
    """The correction's decoder pass gets the object's tracked logits as mask input under SAM 3's rule only, so
    the corrected frame differs between the two rules and the frames before it do not."""
    frames = [(t, _frame(t)) for t in range(4)]
    correction = Prompt(2, 1, points=np.array([[20.0, 24.0]]), point_labels=np.array([1]))
    runs = [
        list(_sam3_tiny(correction_reads_tracked_mask=rule).track(frames, [_box(0), correction], num_frames=4))
        for rule in (sam3_rule, not sam3_rule)
    ]
    assert all(torch.equal(a.mask_logits, b.mask_logits) for a, b in zip(runs[0][:2], runs[1][:2], strict=True))
    assert not torch.equal(runs[0][2].mask_logits, runs[1][2].mask_logits)


class _Planner:
    def __init__(self, plan: FramePlan) -> None:
        self.plan_ = plan

    def wants(self, frame_index: int) -> bool:
        return frame_index == 1

    def plan(self, view: KeyframeView) -> FramePlan:
        return self.plan_


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (FramePlan(recondition=[Prompt(1, 7, mask=np.ones((H, W), bool))]), r"re-conditioned objects \[7\] are not"),
        (FramePlan(recondition=[Prompt(1, 1, mask=np.ones((H, W), bool))], remove=[1]), r"objects \[1\] are not"),
        (FramePlan(recondition=[Prompt(1, 1, box=np.array([0.0, 0, 9, 9]))]), r"must be a mask on frame 1"),
    ],
)
def test_a_reconditioning_entry_must_be_a_mask_of_a_live_kept_object(
    tracker: Tracker, plan: FramePlan, message: str
) -> None:
    with pytest.raises(PromptError, match=message):
        list(tracker.track(_frames(range(3)), [_box(0)], planner=_Planner(plan)))


class _BornTogetherThenReconditioned:
    """Starts objects 1 and 2 together on frame 0 (one cohort in SAM 3's video loop), object 3 on frame 1, and
    re-conditions object 1 on frame 3."""

    def wants(self, frame_index: int) -> bool:
        return frame_index in (0, 1, 3)

    def plan(self, view: KeyframeView) -> FramePlan:
        t = view.frame_index
        if t == 0:
            return FramePlan(prompts=[Prompt(0, 1, mask=_rect(8, 8, 24, 24)), Prompt(0, 2, mask=_rect(28, 36, 44, 60))])
        if t == 1:
            return FramePlan(prompts=[Prompt(1, 3, mask=_rect(26, 4, 44, 20))])
        return FramePlan(recondition=[Prompt(t, 1, mask=_rect(8, 10, 24, 26))])


@pytest.mark.parametrize("cohorts", [True, False])
def test_reconditioning_an_object_conditions_the_objects_born_with_it(cohorts: bool) -> None:
    tracker = _sam3_tiny(video_loop_cohorts=cohorts)
    bank = tracker.new_bank(num_frames=5)
    frames = [(t, _frame(t)) for t in range(5)]
    results = list(tracker.track(frames, [], num_frames=5, bank=bank, planner=_BornTogetherThenReconditioned()))
    assert [r.object_ids for r in results] == [[1, 2], [1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3]]
    assert bank.num_cond_frames(1) == 2  # frames 0 and 3
    assert bank.num_cond_frames(2) == (2 if cohorts else 1)  # its cohort mate: frame 3 too
    assert bank.num_cond_frames(3) == 1  # born on another frame: not a mate
    assert bank.cohort_mates(1) == ([2] if cohorts else [])
