"""MemoryBank: SAM 2.1's memory selection rules, and a size that does not grow with the clip."""

from __future__ import annotations

import pytest
import torch

from batchtrack.model.tracker.memory_bank import MemoryBank

NUM_MASKMEM, MAX_PTRS = 7, 16


def _store(bank: MemoryBank, frame: int, cond: bool, obj: int = 1) -> None:
    bank.add(obj, frame, torch.full((2, 2, 2), float(frame)), torch.full((4,), float(frame)), cond=cond)


def _run(bank: MemoryBank, frames: range, cond_frame: int) -> None:
    """Simulate a tracking pass: the conditioning frame first, then every other frame in order."""
    step = frames.step
    for f in frames:
        _store(bank, f, cond=(f == cond_frame))
        bank.prune(f + step)


def test_bank_stays_bounded_over_50_frames() -> None:
    bank = MemoryBank(NUM_MASKMEM, MAX_PTRS)
    for f in range(50):
        _store(bank, f, cond=(f == 0))
        bank.prune(f + 1)
        assert bank.num_spatial_frames(1) <= 1 + NUM_MASKMEM - 1
        assert bank.num_pointers(1) <= MAX_PTRS
    assert bank.num_spatial_frames(1) == NUM_MASKMEM
    assert bank.num_pointers(1) == MAX_PTRS
    # Only the conditioning frame and the frames the next one can read are held.
    assert set(bank.objects[1].cond) == {0}
    assert set(bank.objects[1].recent) == set(range(35, 50))


def test_selection_forward_matches_sam2_rules() -> None:
    bank = MemoryBank(NUM_MASKMEM, MAX_PTRS)
    _run(bank, range(0, 20), cond_frame=0)
    sel = bank.select(1, 20)
    # Conditioning frame at tpos row 6, then frames 14..19 at rows 5..0 (the frame k back gets row k-1).
    assert sel.spatial == ((0, 6), (14, 5), (15, 4), (16, 3), (17, 2), (18, 1), (19, 0))
    # Pointer of the conditioning frame at distance 20, then the last 15 frames at distances 1..15.
    assert sel.pointers == ((0, 20), *((20 - d, d) for d in range(1, 16)))


def test_selection_reverse_uses_later_frames_and_positive_offsets() -> None:
    bank = MemoryBank(NUM_MASKMEM, MAX_PTRS, reverse=True)
    _run(bank, range(29, 9, -1), cond_frame=29)
    sel = bank.select(1, 9)
    assert sel.spatial == ((29, 6), (15, 5), (14, 4), (13, 3), (12, 2), (11, 1), (10, 0))
    assert sel.pointers == ((29, 20), *((9 + d, d) for d in range(1, 16)))


def test_selection_early_in_clip_skips_missing_frames() -> None:
    bank = MemoryBank(NUM_MASKMEM, MAX_PTRS)
    _run(bank, range(3, 6), cond_frame=3)
    sel = bank.select(1, 6)
    assert sel.spatial == ((3, 6), (4, 1), (5, 0))
    assert sel.pointers == ((3, 3), (5, 1), (4, 2))


def test_gather_stacks_objects_and_rounds_memory_to_bfloat16() -> None:
    bank = MemoryBank(NUM_MASKMEM, MAX_PTRS)
    for obj in (1, 2):
        bank.add(obj, 0, torch.full((2, 2, 2), 1.0 + 2**-12), torch.ones(4) * obj, cond=True)
    sel = bank.select(1, 1)
    assert sel == bank.select(2, 1)
    mem = bank.gather([1, 2], sel)
    assert mem.maskmem.shape == (2, 1, 2, 2, 2)
    assert mem.maskmem.dtype == torch.float32
    assert torch.all(mem.maskmem == 1.0)  # 1 + 2**-12 is not representable in bfloat16
    assert mem.pointers[:, 0, 0].tolist() == [1.0, 2.0]
    assert mem.tpos_rows == [6] and mem.offsets == [1]


def test_max_cond_frames_keeps_the_closest_before_and_after() -> None:
    bank = MemoryBank(NUM_MASKMEM, MAX_PTRS, max_cond_frames=2)
    for f in (0, 10, 20, 30):
        _store(bank, f, cond=True)
    sel = bank.select(1, 22)
    assert [t for t, row in sel.spatial if row == 6] == [20, 30]


def test_max_cond_frames_below_two_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_cond_frames must be -1"):
        MemoryBank(NUM_MASKMEM, MAX_PTRS, max_cond_frames=1)


def test_conditioning_frames_beyond_the_limit_are_dropped_from_memory() -> None:
    bank = MemoryBank(NUM_MASKMEM, MAX_PTRS, max_cond_frames=3)
    for f in range(100):
        _store(bank, f, cond=(f % 5 == 0))  # re-conditioned every 5 frames, as automatic mode does
        bank.prune(f + 1)
        # The 3 latest conditioning frames plus those still inside the pointer window (15 frames back).
        assert bank.num_cond_frames(1) <= 3 + MAX_PTRS // 5
    assert set(bank.objects[1].cond) == {85, 90, 95}
    sel = bank.select(1, 100)
    assert sorted(t for t, row in sel.spatial if row == NUM_MASKMEM - 1) == [85, 90, 95]


def test_dropping_unselected_conditioning_frames_changes_no_selection() -> None:
    # Pruning must only free what no later frame reads: compare with a bank that prunes nothing.
    pruned = MemoryBank(NUM_MASKMEM, MAX_PTRS, max_cond_frames=2)
    kept = MemoryBank(NUM_MASKMEM, MAX_PTRS, max_cond_frames=2)
    for f in range(40):
        for bank in (pruned, kept):
            _store(bank, f, cond=(f % 3 == 0))
        pruned.prune(f + 1)
        assert pruned.select(1, f + 1) == kept.select(1, f + 1)


def test_keeping_every_conditioning_frame_grows_memory() -> None:
    # The reason for the limit: with -1 (SAM 2.1's default) memory grows with every re-conditioning.
    sizes = []
    for frames in (20, 60):
        bank = MemoryBank(NUM_MASKMEM, MAX_PTRS, max_cond_frames=-1)
        for f in range(frames):
            _store(bank, f, cond=(f % 5 == 0))
            bank.prune(f + 1)
        sizes.append(bank.nbytes())
    assert sizes[1] > sizes[0]


def _run_selected(bank: MemoryBank, frames: range, failing: set[int]) -> None:
    """A forward pass with a conditioning frame first; `failing` frames fail SAM 3's memory-selection criterion."""
    for f in frames:
        cond = f == frames.start
        maskmem, pointer = torch.full((2, 2, 2), float(f)), torch.full((4,), float(f))
        bank.add(1, f, maskmem, pointer, cond=cond, selectable=f not in failing)
        bank.prune(f + 1)


def test_memory_selection_reads_passing_frames_by_rank_and_a_failing_one_only_as_the_previous_frame() -> None:
    bank = MemoryBank(NUM_MASKMEM, 8, memory_selection=True)
    _run_selected(bank, range(0, 12), failing={3, 4, 5, 8, 11})
    sel = bank.select(1, 12)
    # Passing 1, 2, 6, 7, 9, 10 (the last 7 = max_obj_ptrs - 1 at most) then the previous frame 11 though it fails.
    # Spatial: the last 6 of them, the k-th from the end at row k - 1.
    assert sel.spatial == ((0, 6), (2, 5), (6, 4), (7, 3), (9, 2), (10, 1), (11, 0))
    # Pointers at offset = rank; the oldest entry of the list (frame 1) is never read, as in the official code.
    assert sel.pointers == ((0, 12), (11, 1), (10, 2), (9, 3), (7, 4), (6, 5), (2, 6))
    assert set(bank.objects[1].recent) == {1, 2, 6, 7, 9, 10, 11}


def test_memory_selection_keeps_the_bank_bounded_when_every_frame_fails() -> None:
    bank = MemoryBank(NUM_MASKMEM, MAX_PTRS, memory_selection=True)
    _run_selected(bank, range(0, 60), failing=set(range(1, 60)))
    assert set(bank.objects[1].recent) == {59}  # only the previous frame is readable
    assert bank.select(1, 60).spatial == ((0, 6), (59, 0)) and bank.select(1, 60).pointers == ((0, 60),)


def test_memory_selection_needs_temporal_stride_one() -> None:
    with pytest.raises(ValueError, match="memory_selection needs temporal_stride 1, got 2"):
        MemoryBank(NUM_MASKMEM, MAX_PTRS, temporal_stride=2, memory_selection=True)


def test_cohorts_name_mates_and_forgetting_an_object_leaves_its_cohort() -> None:
    bank = MemoryBank(num_maskmem=7, max_obj_ptrs=16)
    bank.new_cohort([1, 2, 3])
    bank.new_cohort([4])
    for obj in (1, 2, 3, 4):
        _store(bank, 0, cond=True, obj=obj)
    assert bank.cohort_mates(1) == [2, 3] and bank.cohort_mates(4) == []
    bank.forget(2)
    assert bank.cohort_mates(1) == [3] and 2 not in bank.objects
    assert bank.cohort_mates(9) == []  # an object outside any cohort has no mates
