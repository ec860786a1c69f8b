"""The memory bank of one clip: what memory attention may read, and nothing else.

Per object it keeps
- the conditioning frames (frames where the object was prompted or re-conditioned) that attention
  reads: all of them when `max_cond_frames` is -1 (SAM 2.1's default), else the `max_cond_frames`
  closest to the current frame (SAM 3's rule);
- the non-conditioning frames that can still be read: memory features of the last
  `num_maskmem - 1` frames (with SAM 2's temporal stride rule) and pointers of the last
  `max_obj_ptrs - 1` frames. A conditioning frame that attention no longer selects is still read
  in those windows, as SAM 2 reads its "unselected" conditioning outputs.
Everything older is dropped as soon as the next frame cannot read it. A streaming pass meets its
conditioning frames in processing order, so the closest ones are the latest ones and a conditioning
frame once out of the selection never returns to it: dropping it changes no result. With a limit the
bank's size does not depend on the clip length, even in automatic mode, which re-conditions objects on
every keyframe.

Selection follows SAM 2.1's `_prepare_memory_conditioned_features` for tracking in one direction:
conditioning frames get temporal row `num_maskmem - 1` of `maskmem_tpos_enc`; the frame `k` steps
back gets row `k - 1`; pointers carry their signed distance in processing direction.

SAM 3's memory selection (`memory_selection=True`, its `use_memory_selection` / `frame_filter`) reads
non-conditioning frames by rank instead of by distance: the candidates are the past non-conditioning
frames whose stored `selectable` flag is set (the tracker sets it from the frame's object score x IoU
criterion), walked back from the previous frame (temporal stride 1 only) until `max_obj_ptrs - 1` are
found; the previous frame is appended last when not among them. The last `num_maskmem - 1` of that list are the
spatial memories (the k-th from the end gets row k - 1) and its entries from the end, except the first
one, are the pointers, at offset = rank (both as the official code does, the unused first entry included).
A frame that fails the criterion is read only as the previous frame, so the bank keeps the last
`max_obj_ptrs - 1` passing frames and nothing older: bounded as without selection.

Letters: M memory channels (64), h x w the feature grid, C pointer channels (256),
S selected spatial memory frames, P selected pointers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StoredFrame:
    """One object's memory of one frame."""

    frame_index: int
    maskmem: torch.Tensor | None  # (M, h, w) bfloat16, as SAM 2 stores it; None once only the pointer is reachable
    pointer: torch.Tensor  # (C,)
    selectable: bool = True  # passed SAM 3's memory-selection criterion (read only with memory_selection)


@dataclass
class ObjectMemory:
    cond: dict[int, StoredFrame] = field(default_factory=dict)  # conditioning frames, in insertion order
    recent: dict[int, StoredFrame] = field(default_factory=dict)  # non-conditioning frames still reachable


@dataclass(frozen=True)
class MemorySelection:
    """What memory attention reads for one object on one frame. Objects with equal selections are batched."""

    spatial: tuple[tuple[int, int], ...]  # (frame_index, maskmem_tpos_enc row), in attention order
    pointers: tuple[tuple[int, int], ...]  # (frame_index, signed temporal offset), in attention order


@dataclass
class GatheredMemory:
    maskmem: torch.Tensor  # (B, S, M, h, w) float32
    tpos_rows: list[int]  # (S,) rows of maskmem_tpos_enc
    pointers: torch.Tensor  # (B, P, C)
    offsets: list[int]  # (P,)


class MemoryBank:
    def __init__(
        self,
        num_maskmem: int,
        max_obj_ptrs: int,
        max_cond_frames: int = -1,
        temporal_stride: int = 1,
        reverse: bool = False,
        memory_selection: bool = False,
    ) -> None:
        if max_cond_frames != -1 and max_cond_frames < 2:
            raise ValueError(f"max_cond_frames must be -1 (all) or >= 2, got {max_cond_frames}")
        if memory_selection and temporal_stride != 1:
            # Pruning under selection relies on every past frame being a candidate (SAM 3 uses stride 1).
            raise ValueError(f"memory_selection needs temporal_stride 1, got {temporal_stride}")
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs = max_obj_ptrs
        self.max_cond_frames = max_cond_frames
        self.stride = temporal_stride
        self.sign = -1 if reverse else 1
        self.memory_selection = memory_selection
        self.objects: dict[int, ObjectMemory] = {}
        # Object id -> its cohort, where SAM 3's video loop keeps objects in tracker states (objects born together
        # share one; see TrackerConfig.video_loop_cohorts). Empty otherwise: every object in one state, as SAM 2.
        self.cohorts: dict[int, int] = {}
        self._next_cohort = 0

    # -- writing ---------------------------------------------------------------------------

    def add(
        self,
        object_id: int,
        frame_index: int,
        maskmem: torch.Tensor,
        pointer: torch.Tensor,
        cond: bool,
        selectable: bool = True,
    ) -> None:
        """Store one object's memory of `frame_index` (maskmem (M, h, w) is rounded to bfloat16).

        `selectable`: whether a non-conditioning frame passed the memory-selection criterion (ignored without it).
        """
        mem = self.objects.setdefault(object_id, ObjectMemory())
        entry = StoredFrame(frame_index, maskmem.to(torch.bfloat16), pointer, selectable)
        if cond:
            mem.cond[frame_index] = entry
            mem.recent.pop(frame_index, None)
        else:
            mem.recent[frame_index] = entry

    def new_cohort(self, object_ids: list[int]) -> None:
        """`object_ids` (born together) form a cohort of their own."""
        for oid in object_ids:
            self.cohorts[oid] = self._next_cohort
        self._next_cohort += 1

    def forget(self, object_id: int) -> None:
        """Drop an object that stops: its memory and its place in its cohort."""
        self.objects.pop(object_id, None)
        self.cohorts.pop(object_id, None)

    def prune(self, next_frame: int) -> None:
        """Drop whatever `next_frame` and every later frame can no longer read."""
        if self.memory_selection:
            self._prune_selected(next_frame)
            return
        spatial = set(self._spatial_frames(next_frame))
        pointers = {next_frame - self.sign * d for d in range(1, self.max_obj_ptrs)}
        for mem in self.objects.values():
            _drop_unreadable(mem.recent, spatial, pointers)
            _, unchosen = self._split_cond(mem, next_frame)
            for t in _drop_unreadable(unchosen, spatial, pointers):
                del mem.cond[t]

    # -- reading ---------------------------------------------------------------------------

    def cohort_mates(self, object_id: int) -> list[int]:
        """The other objects of `object_id`'s cohort (none without cohorts)."""
        cohort = self.cohorts.get(object_id)
        return [o for o, c in self.cohorts.items() if cohort is not None and c == cohort and o != object_id]

    def has_memory(self, object_id: int) -> bool:
        mem = self.objects.get(object_id)
        return mem is not None and bool(mem.cond)

    def select(self, object_id: int, frame_index: int) -> MemorySelection:
        mem = self.objects[object_id]
        chosen, unchosen = self._split_cond(mem, frame_index)
        last_row = self.num_maskmem - 1
        spatial = [(t, last_row) for t in chosen]
        if self.memory_selection:
            return self._select_by_score(mem, frame_index, chosen, unchosen)
        for t_rel, t in zip(range(self.num_maskmem - 1, 0, -1), self._spatial_frames(frame_index), strict=True):
            entry = mem.recent.get(t, unchosen.get(t))
            if entry is not None and entry.maskmem is not None:
                spatial.append((t, t_rel - 1))
        # Conditioning frames are always in the past of a streaming tracker, so all selected ones count.
        pointers = [(t, (frame_index - t) * self.sign) for t in chosen]
        for d in range(1, self.max_obj_ptrs):
            t = frame_index - self.sign * d
            if t in mem.recent or t in unchosen:
                pointers.append((t, d))
        return MemorySelection(tuple(spatial), tuple(pointers))

    def gather(self, object_ids: list[int], selection: MemorySelection) -> GatheredMemory:
        """Stack the selected memories of objects that share one selection."""
        feats, ptrs = [], []
        for oid in object_ids:
            mem = self.objects[oid]
            maskmems = [self._lookup(mem, t).maskmem for t, _ in selection.spatial]
            feats.append(torch.stack([m for m in maskmems if m is not None]))  # (S, M, h, w)
            ptrs.append(torch.stack([self._lookup(mem, t).pointer for t, _ in selection.pointers]))  # (P, C)
        return GatheredMemory(
            maskmem=torch.stack(feats).float(),  # (B, S, M, h, w)
            tpos_rows=[row for _, row in selection.spatial],
            pointers=torch.stack(ptrs),  # (B, P, C)
            offsets=[off for _, off in selection.pointers],
        )

    def num_spatial_frames(self, object_id: int) -> int:
        """Frames whose memory features are held for the object (conditioning + recent)."""
        mem = self.objects[object_id]
        return sum(1 for e in (*mem.cond.values(), *mem.recent.values()) if e.maskmem is not None)

    def num_cond_frames(self, object_id: int) -> int:
        """Conditioning frames held for the object (bounded by `max_cond_frames` plus the read windows)."""
        return len(self.objects[object_id].cond)

    def nbytes(self) -> int:
        """Bytes of every tensor the bank holds (all objects): what must not grow with the clip length."""
        total = 0
        for mem in self.objects.values():
            for entry in (*mem.cond.values(), *mem.recent.values()):
                total += entry.pointer.nbytes + (entry.maskmem.nbytes if entry.maskmem is not None else 0)
        return total

    def num_pointers(self, object_id: int) -> int:
        mem = self.objects[object_id]
        return len(mem.cond) + len(mem.recent)

    # -- SAM 3's memory selection -----------------------------------------------------------

    def _passing_frames(self, mem: ObjectMemory, frame_index: int) -> list[int]:
        """Past non-conditioning frames that passed the criterion, the latest `max_obj_ptrs - 1`, oldest first.

        Walked back from the previous frame, as the official `frame_filter` does (with stride 1).
        """
        found: list[int] = []
        for t in sorted(mem.recent, key=lambda t: (frame_index - t) * self.sign):
            if (frame_index - t) * self.sign < 1 or not mem.recent[t].selectable:
                continue
            if len(found) >= self.max_obj_ptrs - 1:
                break
            found.append(t)
        return found[::-1]

    def _valid_frames(self, mem: ObjectMemory, frame_index: int) -> list[int]:
        """The official `valid_indices`: passing frames, oldest first, then the previous frame if not among them."""
        valid = self._passing_frames(mem, frame_index)
        previous = frame_index - self.sign
        if previous not in valid:
            valid.append(previous)
        return valid

    def _select_by_score(
        self, mem: ObjectMemory, frame_index: int, chosen: dict[int, StoredFrame], unchosen: dict[int, StoredFrame]
    ) -> MemorySelection:
        last_row = self.num_maskmem - 1
        spatial = [(t, last_row) for t in chosen]
        valid = self._valid_frames(mem, frame_index)
        for rank in range(min(self.num_maskmem - 1, len(valid)), 0, -1):
            t = valid[-rank]
            entry = mem.recent.get(t, unchosen.get(t))
            if entry is not None and entry.maskmem is not None:
                spatial.append((t, rank - 1))
        pointers = [(t, (frame_index - t) * self.sign) for t in chosen]
        # valid[0] is never a pointer: the official loop stops at rank len(valid) - 1.
        for rank in range(1, min(self.max_obj_ptrs, len(valid))):
            t = valid[-rank]
            if t in mem.recent or t in unchosen:
                pointers.append((t, rank))
        return MemorySelection(tuple(spatial), tuple(pointers))

    def _prune_selected(self, next_frame: int) -> None:
        """Keep what `next_frame` or a later frame may read under memory selection (see the module docstring)."""
        for mem in self.objects.values():
            valid = self._valid_frames(mem, next_frame)
            spatial = set(valid[-(self.num_maskmem - 1) :])
            pointers = set(valid)
            _drop_unreadable(mem.recent, spatial, pointers)
            _, unchosen = self._split_cond(mem, next_frame)
            for t in _drop_unreadable(unchosen, spatial, pointers):
                del mem.cond[t]

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _lookup(mem: ObjectMemory, t: int) -> StoredFrame:
        return mem.cond[t] if t in mem.cond else mem.recent[t]

    def _split_cond(self, mem: ObjectMemory, frame_index: int) -> tuple[dict[int, StoredFrame], dict[int, StoredFrame]]:
        """The conditioning frames attention reads (all, or the temporally closest `max_cond_frames`)."""
        if self.max_cond_frames == -1 or len(mem.cond) <= self.max_cond_frames:
            return dict(mem.cond), {}
        chosen: dict[int, StoredFrame] = {}
        before = max((t for t in mem.cond if t < frame_index), default=None)
        after = min((t for t in mem.cond if t >= frame_index), default=None)
        for t in (before, after):
            if t is not None:
                chosen[t] = mem.cond[t]
        rest = sorted((t for t in mem.cond if t not in chosen), key=lambda t: abs(t - frame_index))
        for t in rest[: self.max_cond_frames - len(chosen)]:
            chosen[t] = mem.cond[t]
        return chosen, {t: e for t, e in mem.cond.items() if t not in chosen}

    def _spatial_frames(self, frame_index: int) -> list[int]:
        """Non-conditioning frames read by `frame_index`, oldest first (num_maskmem - 1 of them)."""
        r, f = self.stride, frame_index
        frames = []
        for t_rel in range(self.num_maskmem - 1, 0, -1):
            if t_rel == 1:
                frames.append(f - self.sign)
            elif self.sign > 0:
                frames.append(((f - 2) // r) * r - (t_rel - 2) * r)
            else:
                frames.append(-(-(f + 2) // r) * r + (t_rel - 2) * r)
        return frames


def _drop_unreadable(entries: dict[int, StoredFrame], spatial: set[int], pointers: set[int]) -> list[int]:
    """Free what no later frame reads from `entries`: whole entries outside both windows (deleted here and
    returned), and memory features of entries only the pointer window still reaches."""
    gone = []
    for t in list(entries):
        if t not in pointers and t not in spatial:
            del entries[t]
            gone.append(t)
        elif t not in spatial:
            entries[t].maskmem = None
    return gone
