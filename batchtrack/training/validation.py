"""Checkpoint selection on the validation split: score a run's checkpoints, keep the curve, pick the best.

Validation videos come from `batchtrack.synthetic.splits.VALIDATION` only; the test split is for
bench/quality.py and is never read here. Scores are DAVIS J&F over objects (box prompts, frames after
the prompt frame), per subset and as the mean over subsets; one JSON line per checkpoint step in
`RUN_DIR/validation.jsonl`, so a rerun scores only the checkpoints it has not scored yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from batchtrack.eval.evaluate import evaluate_tracker
from batchtrack.model.loading.build import build_tracker
from batchtrack.synthetic.splits import VALIDATION, make_split_videos, scene_seeds
from batchtrack.training.config import TrainConfig, ValidationSpec
from batchtrack.training.loop import MODEL_FILE, STATE_FILE, checkpoint_dirs

VALIDATION_FILE = "validation.jsonl"
VIDEOS_DIR = "validation_videos"


def validation_seeds(spec: ValidationSpec) -> dict[str, list[int]]:
    """The scene seeds of the validation videos, per subset."""
    return {subset: scene_seeds(VALIDATION, subset, spec.videos) for subset in spec.subsets}


def make_validation_set(root: Path, spec: ValidationSpec, width: int, height: int) -> Path:
    """Write the validation videos under `root/SUBSET/` (once: an existing complete folder is kept)."""
    for subset in spec.subsets:
        folder = root / subset
        if not (folder / "prompts.jsonl").is_file():
            make_split_videos(
                folder, VALIDATION, subset, spec.videos, width=width, height=height, num_frames=spec.frames
            )
    return root


def score_checkpoint(model: str, weights: Path, videos: Path, spec: ValidationSpec) -> dict[str, float]:
    """J&F of `weights` per validation subset, and their mean ("mean")."""
    tracker = build_tracker(model, checkpoint=weights, device="cpu")
    scores = {subset: round(evaluate_tracker(tracker, videos / subset).jf, 4) for subset in spec.subsets}
    scores["mean"] = round(sum(scores.values()) / len(spec.subsets), 4)
    return scores


def read_validation(run_dir: str | Path) -> list[dict[str, Any]]:
    """The validation curve of a run: one row per scored step, in step order."""
    path = Path(run_dir) / VALIDATION_FILE
    if not path.is_file():
        return []
    rows = {int(r["step"]): r for r in (json.loads(x) for x in path.read_text().splitlines() if x.strip())}
    return [rows[k] for k in sorted(rows)]


def validate_run(config: TrainConfig) -> list[dict[str, Any]]:
    """Score every due checkpoint of `config.output_dir` not scored yet; return the whole curve."""
    spec = config.validation
    run_dir = Path(config.output_dir)
    checkpoints = checkpoint_dirs(run_dir)
    if not checkpoints:
        return []
    last = checkpoints[-1]
    done = {int(r["step"]) for r in read_validation(run_dir)}
    due = [
        c
        for c in checkpoints
        if (c == last or _step(c) % spec.every_steps == 0) and _step(c) not in done and (c / MODEL_FILE).is_file()
    ]
    if due:
        threads = torch.get_num_threads()
        torch.set_num_threads(spec.torch_threads)
        try:
            videos = make_validation_set(run_dir / VIDEOS_DIR, spec, config.data.width, config.data.height)
            for checkpoint in due:
                row = {
                    "step": _step(checkpoint),
                    **score_checkpoint(config.model, checkpoint / MODEL_FILE, videos, spec),
                }
                with (run_dir / VALIDATION_FILE).open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"validation step {row['step']}: {row}", flush=True)
        finally:
            torch.set_num_threads(threads)
    return read_validation(run_dir)


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The scored checkpoint with the highest mean validation J&F (the later one on a tie), if any is left."""
    present = {_step(c): c for c in checkpoint_dirs(run_dir)}
    scored = [r for r in read_validation(run_dir) if int(r["step"]) in present]
    if not scored:
        return None
    best = max(scored, key=lambda r: (r["mean"], r["step"]))
    return present[int(best["step"])]


def _step(checkpoint: Path) -> int:
    state = json.loads((checkpoint / STATE_FILE).read_text())
    return int(state["step"])
