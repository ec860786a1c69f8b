"""Concept mode: track every instance of noun phrases ("person", "red car") through a video.

SAM 3's detect-and-track loop on the streaming tracker. On every frame: the detector finds the
concepts' instances, the tracker propagates the live tracks (memory attention + decoder, before
memory is written), `track_planning.plan_frame` decides, and the tracker executes through its
`FramePlanner` hook: new objects join as mask prompts, re-conditioned tracks get the detection's
mask as a conditioning frame, suppressed tracks are cleared before memory, removed tracks stop.
The tracker stays the one `Tracker.track` with its bounded bank; nothing here holds the video.

Re-conditioning (`FramePlan.recondition`) follows SAM 3 (`sam3_video_base.py`): `_recondition_masklets` adds the
detection's mask with `add_new_mask`, so the frame becomes a conditioning frame of the track with the mask's object
pointer; `build_outputs` still outputs the propagated mask and score (the detection overrides them only for
`reconditioned_obj_ids`, which only the box-IoU trigger fills, off in SAM 3's builder); and
`_tracker_update_memories` then re-encodes the frame's memory features from the propagated (possibly suppressed)
masks. The tracker does all three for a re-conditioning entry (checked against the oracle's add_new_mask,
propagate_in_video_preflight and _run_memory_encoder in tests/parity/test_sam3_parity.py).

SAM 3's video loop around that, reproduced rule for rule and checked end to end against
`Sam3VideoInferenceWithInstanceInteractivity` (tests/parity/test_sam3_video_parity.py): the tracker cleans the
propagated masks (holes and specks, `TrackerConfig.video_fill_hole_area`), new objects start from their detection's
mask (`FramePlan.detections`: every detection on a frame without tracks, empty ones too, ids in detection order) and
output that detection's own mask on their first frame, tracked objects' memory is re-encoded the video loop's way
(`video_loop_memory`, `video_loop_shrink_suppression`), and outputs are made non-overlapping object-wise and rows with
an empty mask dropped (`TrackPlanningConfig.non_overlapping_outputs`). SAM 3 keeps the objects born on one frame in
one tracker state: the tracker keeps them as a cohort (`TrackerConfig.video_loop_cohorts`), so a re-conditioned frame
also conditions the others born with the track, and memory selection gives one verdict per cohort.

Rows are held back `hotstart_delay` frames (SAM 3's hot-start): a track removed on probation never
reaches the output, not even on the frames before its removal. The held frames keep their masks
as bits, so while held the memory is O(delay x objects x H x W / 8) bytes, independent of the
video's length; a held frame's `mask_logits` come out as +1 / -1 (the mask is `logits > 0`, as
for every FrameResult).

The detector is anything with `detect(frame_index, frame, concepts)` returning per-detection `concept`,
`scores` and `mask_logits` (`FrameDetector`): SAM 3's is `model.concept_tracker.Sam3FrameDetector`, which
reuses the tracker's trunk pass of the frame; tests use ground truth.

Letters: D detections, N objects, h x w the detector's mask grid, H x W the video frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from batchtrack.errors import ConfigError
from batchtrack.model.modes.track_planning import FrameDecision, PlanningState, TrackPlanningConfig, plan_frame
from batchtrack.model.tracker.memory_bank import MemoryBank
from batchtrack.model.tracker.planning import DetectionPrompt, FramePlan, KeyframeView
from batchtrack.model.tracker.tracker import Tracker
from batchtrack.model.types import FrameResult, Prompt


@dataclass
class FrameDetections:
    """A detector's instances of the asked concepts on one frame (fields named as model.detector's Detections)."""

    concept: torch.Tensor  # (D,) int64: index of each detection's concept in the concepts asked for
    boxes: torch.Tensor  # (D, 4) x0, y0, x1, y1 normalised to the frame (not read by the rules)
    scores: torch.Tensor  # (D,) probabilities in [0, 1]
    mask_logits: torch.Tensor  # (D, h, w) mask logits (> 0 inside), any resolution

    def __post_init__(self) -> None:
        d = self.mask_logits.shape[0]
        shapes = (self.mask_logits.ndim, tuple(self.scores.shape), tuple(self.boxes.shape), tuple(self.concept.shape))
        if shapes != (3, (d,), (d, 4), (d,)):
            raise ValueError(
                f"detections disagree: mask_logits {tuple(self.mask_logits.shape)}, scores {tuple(self.scores.shape)}, "
                f"boxes {tuple(self.boxes.shape)}, concept {tuple(self.concept.shape)}"
            )

    @classmethod
    def empty(cls, height: int, width: int) -> FrameDetections:
        return cls(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, height, width))


class Detected(Protocol):
    """What the loop reads of a frame's detections (FrameDetections; model.detector's Detections)."""

    concept: torch.Tensor  # (D,) int64 index into the concepts asked for
    scores: torch.Tensor  # (D,) probabilities
    mask_logits: torch.Tensor  # (D, h, w)


class FrameDetector(Protocol):
    """Finds every instance of each concept on a frame (SAM 3's detector, or a test's ground truth)."""

    def detect(self, frame_index: int, frame: np.ndarray, concepts: Sequence[str]) -> Detected:
        """frame: (H, W, 3) uint8 RGB, `frame_index` in the video; concepts: noun phrases.

        FrameDetections refer to concepts by their index in `concepts`."""
        ...


@dataclass
class ConceptFrameResult(FrameResult):
    """A FrameResult whose objects also name their concept (None for a visually prompted object)."""

    concepts: list[str | None] = field(default_factory=list)  # per object, in object_ids order


@dataclass(frozen=True)
class FrameLog:
    """What concept mode decided on one frame (for tests and debugging)."""

    frame_index: int
    num_detections: int
    decision: FrameDecision
    new_object_ids: list[int]


class _ConceptPlanner:
    """The `FramePlanner` of one `ConceptLoop.track` call: detect, plan, and turn the plan into prompts."""

    def __init__(self, owner: ConceptLoop, prompts: Sequence[Prompt], concepts: Sequence[str], reverse: bool) -> None:
        self.owner = owner
        self.concepts = list(concepts)
        self.reverse = reverse
        # New ids continue after every prompted id, so concept tracks never collide with prompted objects.
        self.state = PlanningState(next_id=max((int(p.object_id) for p in prompts), default=-1) + 1)
        self.concept_of: dict[int, str | None] = {int(p.object_id): None for p in prompts}
        self.frames: dict[int, np.ndarray] = {}  # pulled by the tracker, not planned yet (an encoder batch at most)
        self.removed_now: list[int] = []
        self.hidden: dict[int, set[int]] = {}  # frame -> objects without a row there (keep-alive)
        self.log: list[FrameLog] = []
        # frame -> the detection score of each object born there (its output score on that frame, as in SAM 3)
        self.birth_scores: dict[int, dict[int, float]] = {}

    def output_scores(self, result: FrameResult) -> dict[int, float]:
        """Each object's output probability on the frame: its detection score on its birth frame, otherwise its
        tracked object score (SAM 3's obj_id_to_tracker_score, by which outputs are made non-overlapping)."""
        born = self.birth_scores.pop(result.frame_index, {})
        probs = torch.sigmoid(result.object_score_logits.float()).tolist()
        return {o: born.get(o, p) for o, p in zip(result.object_ids, probs, strict=True)}

    def watch(self, frames: Iterable[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
        for index, frame in frames:
            self.frames[int(index)] = frame
            yield index, frame

    def wants(self, frame_index: int) -> bool:
        return True  # SAM 3 detects on every frame

    def plan(self, view: KeyframeView) -> FramePlan:
        frame = self.frames.pop(view.frame_index)
        detections = self.owner.detector.detect(view.frame_index, frame, self.concepts)
        decision, state = plan_frame(
            self.state,
            view.frame_index,
            detections.mask_logits.float().cpu(),
            detections.scores.float().cpu(),
            detections.concept.long().cpu(),
            view.object_ids,
            view.low_res_logits.float().cpu(),
            view.object_score_logits.float().cpu(),
            self.owner.config,
            reverse=self.reverse,
        )
        low_side = view.low_res_logits.shape[-1]
        masks = _low_res(detections.mask_logits, low_side)
        scores = detections.scores.float().cpu()
        # A new track starts from its detection even where the mask is empty at video size, as in SAM 3.
        born = [DetectionPrompt(n.object_id, masks[n.detection]) for n in decision.new_tracks]
        for n in decision.new_tracks:
            self.concept_of[n.object_id] = self.concepts[n.concept]
        self.birth_scores[view.frame_index] = {n.object_id: float(scores[n.detection]) for n in decision.new_tracks}
        recondition = [
            DetectionPrompt(t, masks[k]) for t, k in decision.recondition.items() if t not in decision.removed
        ]
        self.state = state
        self.removed_now += decision.removed
        if decision.hidden:
            self.hidden[view.frame_index] = set(decision.hidden)
        self.log.append(FrameLog(view.frame_index, len(decision.detections), decision, [d.object_id for d in born]))
        return FramePlan(
            suppress=list(decision.suppressed),
            remove=list(decision.removed),
            recondition_detections=recondition,
            detections=born,
        )


def _low_res(masks: torch.Tensor, side: int) -> torch.Tensor:
    """(D, h, w) detection logits on the tracker's low-res grid (SAM 3's detector already gives them there)."""
    logits = masks.float().cpu()
    if tuple(logits.shape[-2:]) != (side, side) and logits.shape[0] > 0:
        logits = F.interpolate(logits[:, None], size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    return logits


@dataclass
class _HeldFrame:
    """A frame's result waiting out hot-start: masks as packed bits (1 bit a pixel)."""

    result: FrameResult
    bits: np.ndarray  # (N, ceil(H * W / 8)) uint8
    height: int
    width: int
    scores: dict[int, float] = field(default_factory=dict)  # object -> output probability (non-overlap ranks by it)

    @classmethod
    def hold(cls, result: FrameResult) -> _HeldFrame:
        masks = (result.mask_logits > 0).cpu().numpy()  # (N, H, W)
        n, h, w = masks.shape
        packed = np.packbits(masks.reshape(n, h * w), axis=1)  # (N, ceil(H*W/8))
        light = FrameResult(
            result.frame_index,
            list(result.object_ids),
            torch.zeros(0),
            result.object_score_logits,
            result.iou_predictions,
            result.object_pointers,
        )
        return cls(light, packed, h, w)

    def drop(self, object_ids: set[int]) -> None:
        keep = [i for i, o in enumerate(self.result.object_ids) if o not in object_ids]
        if len(keep) == len(self.result.object_ids):
            return
        r = self.result
        idx = torch.tensor(keep, dtype=torch.long)
        self.result = FrameResult(
            r.frame_index,
            [r.object_ids[i] for i in keep],
            r.mask_logits,
            r.object_score_logits[idx],
            r.iou_predictions[idx],
            r.object_pointers[idx],
        )
        self.bits = self.bits[keep]

    def release(self) -> FrameResult:
        n = self.bits.shape[0]
        masks = np.unpackbits(self.bits, axis=1, count=self.height * self.width).reshape(n, self.height, self.width)
        logits = torch.from_numpy(masks).float() * 2.0 - 1.0  # (N, H, W) +1 inside, -1 outside
        r = self.result
        return FrameResult(
            r.frame_index, r.object_ids, logits, r.object_score_logits, r.iou_predictions, r.object_pointers
        )


class ConceptLoop:
    """A `Tracker` driven by a concept detector: `track(frames, prompts, concepts=[...])`.

    Every instance of every concept becomes a track with its own id (after the largest prompted id)
    and its concept; visually prompted objects are tracked as usual, with concept None.
    """

    def __init__(self, tracker: Tracker, detector: FrameDetector, config: TrackPlanningConfig | None = None) -> None:
        self.tracker = tracker
        self.detector = detector
        self.config = config or TrackPlanningConfig()
        self.last_log: list[FrameLog] = []

    def track(
        self,
        frames: Iterable[tuple[int, np.ndarray]],
        prompts: Sequence[Prompt] = (),
        *,
        concepts: Sequence[str],
        reverse: bool = False,
        num_frames: int | None = None,
        bank: MemoryBank | None = None,
    ) -> Iterator[ConceptFrameResult]:
        """Like `Tracker.track`; each result names its objects' concepts. Results come in frame order,
        `config.hotstart_delay` frames behind the tracker (all of them by the end)."""
        if not concepts or any(not str(c).strip() for c in concepts):
            raise ConfigError(f"concept mode needs non-empty noun phrases, got {list(concepts)!r}")
        planner = _ConceptPlanner(self, prompts, concepts, reverse)
        self.last_log = planner.log
        if num_frames is None and hasattr(frames, "__len__"):
            num_frames = len(frames)  # type: ignore[arg-type]
        delay = self.config.hotstart_delay
        held: deque[_HeldFrame] = deque()
        results = self.tracker.track(
            planner.watch(frames), prompts, reverse=reverse, num_frames=num_frames, planner=planner, bank=bank
        )
        for result in results:
            hidden = planner.hidden.pop(result.frame_index, set())
            scores = planner.output_scores(result)
            if planner.removed_now:
                gone = set(planner.removed_now)
                planner.removed_now.clear()
                for frame in held:
                    frame.drop(gone)
            if delay == 0:
                yield self._output(_drop_rows(result, hidden), scores, planner)
                continue
            frame = _HeldFrame.hold(result)
            frame.scores = scores
            frame.drop(hidden)
            held.append(frame)
            if len(held) > delay:
                first = held.popleft()
                yield self._output(first.release(), first.scores, planner)
        while held:
            first = held.popleft()
            yield self._output(first.release(), first.scores, planner)

    def _output(self, result: FrameResult, scores: dict[int, float], planner: _ConceptPlanner) -> ConceptFrameResult:
        """A frame's rows as SAM 3 outputs them: objects with an empty mask dropped, then (as configured) each
        pixel kept only by its most probable object (`_apply_object_wise_non_overlapping_constraints`)."""
        empty = {o for i, o in enumerate(result.object_ids) if not bool((result.mask_logits[i] > 0).any())}
        result = _drop_rows(result, empty)
        if self.config.non_overlapping_outputs and len(result.object_ids) > 1:
            result = _non_overlapping(result, scores)
        return self._named(result, planner)

    @staticmethod
    def _named(result: FrameResult, planner: _ConceptPlanner) -> ConceptFrameResult:
        return ConceptFrameResult(
            result.frame_index,
            result.object_ids,
            result.mask_logits,
            result.object_score_logits,
            result.iou_predictions,
            result.object_pointers,
            concepts=[planner.concept_of.get(o) for o in result.object_ids],
        )


def _non_overlapping(result: FrameResult, scores: dict[int, float]) -> FrameResult:
    """Each pixel stays only in the mask of its most probable object (ties: the smallest id), as SAM 3 does."""
    ids = result.object_ids
    order = sorted(range(len(ids)), key=lambda i: ids[i])  # SAM 3 ranks objects in id order
    inside = result.mask_logits[order] > 0  # (N, H, W) in id order
    probs = torch.tensor([scores.get(ids[i], 0.0) for i in order], dtype=torch.float32)  # (N,)
    ranked = torch.where(inside, probs[:, None, None], torch.zeros(()))  # (N, H, W)
    winner = ranked.argmax(dim=0)  # (H, W) first maximum: the smallest id among equals
    keeps = winner[None] == torch.arange(len(order))[:, None, None]  # (N, H, W)
    position = torch.empty(len(order), dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(len(order))
    keep = keeps[position]  # (N, H, W) back in the result's row order
    logits = torch.where(keep, result.mask_logits, result.mask_logits.clamp(max=0.0))
    return FrameResult(
        result.frame_index,
        result.object_ids,
        logits,
        result.object_score_logits,
        result.iou_predictions,
        result.object_pointers,
    )


def _drop_rows(result: FrameResult, object_ids: set[int]) -> FrameResult:
    if not object_ids:
        return result
    keep = torch.tensor([i for i, o in enumerate(result.object_ids) if o not in object_ids], dtype=torch.long)
    return FrameResult(
        result.frame_index,
        [result.object_ids[int(i)] for i in keep],
        result.mask_logits[keep],
        result.object_score_logits[keep],
        result.iou_predictions[keep],
        result.object_pointers[keep],
    )


__all__ = ["ConceptFrameResult", "ConceptLoop", "Detected", "FrameDetections", "FrameDetector", "FrameLog"]
