"""Checkpoint selection on the validation split: a curve per run, resumable, and exported with the weights."""

from __future__ import annotations

import json
from pathlib import Path

from batchtrack.synthetic.splits import TEST, VALIDATION
from batchtrack.training.config import make_train_config
from batchtrack.training.export import export_weights, record_launch
from batchtrack.training.loop import checkpoint_dirs, train
from batchtrack.training.validation import VALIDATION_FILE, best_checkpoint, read_validation, validate_run


def _config(tmp_path: Path) -> object:
    return make_train_config(
        {
            "model": "test-tiny",
            "steps": 2,
            "batch_clips": 1,
            "checkpoint_every_steps": 1,
            "output_dir": str(tmp_path / "run"),
            "data": {"clip_frames": 2, "height": 48, "width": 64, "max_objects": 1},
            "validation": {"subsets": ["mixed"], "videos": 1, "frames": 3, "every_steps": 1},
        }
    )


def test_checkpoints_are_scored_once_on_validation_videos_and_the_best_is_exported(tmp_path: Path) -> None:
    config = _config(tmp_path)
    train(config)
    record_launch(config.output_dir, {"command": "python jobs/train.py --config c.yaml", "config_sha256": "ab"})
    curve = validate_run(config)
    assert [row["step"] for row in curve] == [1, 2]
    assert all(0.0 <= row["mean"] <= 1.0 and row["mean"] == row["mixed"] for row in curve)
    assert validate_run(config) == curve  # a rerun scores nothing again
    assert len((Path(config.output_dir) / VALIDATION_FILE).read_text().splitlines()) == 2

    best = max(curve, key=lambda r: (r["mean"], r["step"]))
    assert best_checkpoint(config.output_dir) == checkpoint_dirs(config.output_dir)[best["step"] - 1]
    record = export_weights(config.output_dir, tmp_path / "w.safetensors", {}, select="validation")
    assert record["steps"] == best["step"] and record["selected_by"] == "validation"
    assert record["validation_curve"] == read_validation(config.output_dir)
    assert record["launches"][0]["config_sha256"] == "ab"
    seeds = record["seeds"]["validation_scene_seeds"]["mixed"]
    assert seeds and all(s in VALIDATION and s not in TEST for s in seeds)
    assert json.loads((tmp_path / "w.json").read_text())["selected_by"] == "validation"
