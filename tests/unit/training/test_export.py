"""Exporting a run: half-precision weights that load strictly, and a record of how they were made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from batchtrack.errors import CheckpointError
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.loading.checkpoint import file_sha256, load_state_dict_file
from batchtrack.training.config import make_train_config
from batchtrack.training.export import export_weights, summarise_curve
from batchtrack.training.loop import checkpoint_dirs, train


def test_export_writes_loadable_half_weights_and_a_record(tmp_path: Path) -> None:
    config = make_train_config(
        {
            "model": "test-tiny",
            "steps": 2,
            "batch_clips": 1,
            "output_dir": str(tmp_path / "run"),
            "data": {"clip_frames": 2, "height": 48, "width": 64, "max_objects": 1},
        }
    )
    train(config)
    out = tmp_path / "weights" / "test-tiny.safetensors"
    record = export_weights(tmp_path / "run", out, {"command": "python jobs/train.py --config x.yaml", "seed": 0})

    tracker = build_tracker("test-tiny", checkpoint=out, device="cpu")
    trained = load_state_dict_file(checkpoint_dirs(tmp_path / "run")[-1] / "model.safetensors")
    for name, value in tracker.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, trained[name], rtol=1e-3, atol=1e-4)

    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk == json.loads(json.dumps(record))
    assert on_disk["command"].startswith("python jobs/train.py")
    assert on_disk["steps"] == 2 and on_disk["dtype"] == "float16"
    assert on_disk["sha256"] == file_sha256(out)
    assert on_disk["config"]["data"]["clip_frames"] == 2
    assert [e["last_step"] for e in on_disk["loss_curve"]] == [1, 2]


def test_summarised_curve_averages_equal_spans() -> None:
    rows = [{"step": s, "loss": float(s)} for s in range(1, 7)]
    curve = summarise_curve(rows, spans=3)
    assert [(e["first_step"], e["last_step"], e["loss"]) for e in curve] == [(1, 2, 1.5), (3, 4, 3.5), (5, 6, 5.5)]


def test_export_without_checkpoints_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        export_weights(tmp_path, tmp_path / "w.safetensors", {})
