"""jobs/train.py under Ray Train: a 2-step CPU run writes checkpoints that the inference tracker loads strictly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from batchtrack.model.loading.build import build_tracker
from batchtrack.training.loop import checkpoint_dirs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_train_job_runs_two_steps_and_its_checkpoint_loads_into_build_tracker(tmp_path: Path) -> None:
    recipe = yaml.safe_load((ROOT / "jobs" / "configs" / "train_tiny.yaml").read_text())
    recipe["model"] = "test-tiny"
    recipe["data"].update({"clip_frames": 3, "height": 48, "width": 64, "max_objects": 2})
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "BATCHTRACK_"))}
    command = [
        sys.executable, str(ROOT / "jobs" / "train.py"), "--config", str(config), "--output-dir", str(out),
        "--steps", "2", "--num-workers", "1", "--set", "checkpoint_every_steps=1",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert [p.name for p in checkpoint_dirs(out)] == ["step_000001", "step_000002"]
    weights = out / "checkpoints" / "step_000002" / "model.safetensors"
    tracker = build_tracker("test-tiny", checkpoint=weights, device="cpu")
    assert tracker.config.name == "test-tiny"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    # Ray Train got the same checkpoints reported: the final result names one in its storage.
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["metrics"]["step"] == 2
    assert Path(summary["checkpoint"], "model.safetensors").is_file()
