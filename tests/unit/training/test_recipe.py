"""The committed recipe is the shipped weights' schedule: one command instead of three hand-run launches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from batchtrack.errors import ConfigError
from batchtrack.synthetic.splits import TEST, TRAIN, VALIDATION
from batchtrack.training.config import OptimConfig, TrainConfig, load_train_config, make_train_config
from batchtrack.training.loop import learning_rate

RECIPE = Path(__file__).resolve().parents[3] / "jobs" / "configs" / "train_tiny.yaml"


def _recipe_lr(config: TrainConfig, step: int) -> float:
    start, _, optim = config.stage_at(step)
    return learning_rate(step - start, config.steps - start, optim)


def test_recipe_stage_1_equals_the_first_three_launches_step_for_step() -> None:
    config = load_train_config(RECIPE)
    # Launches 1-2: 2200-step cosine at lr 3e-4; launch 3 resumed at step 1501 with `--set optim.lr=1e-3`
    # and stopped by its wall-time limit after step 2157 (batchtrack/weights/tiny-synthetic.json).
    launch_1_2 = OptimConfig(lr=3e-4, warmup_steps=100, schedule="cosine", min_lr_ratio=0.05)
    launch_3 = launch_1_2.model_copy(update={"lr": 1e-3})
    assert config.stages[0].from_step == 2157
    for step in range(2157):
        expected = learning_rate(step, 2200, launch_1_2 if step < 1500 else launch_3)
        assert _recipe_lr(config, step) == expected
        assert config.stage_at(step)[1] == config.data


def test_recipe_stage_2_restarts_the_optimizer_on_longer_occlusion_heavy_clips() -> None:
    config = load_train_config(RECIPE)
    stage = config.stages[0]
    assert config.resets_optimizer_at(stage.from_step) and not config.resets_optimizer_at(stage.from_step + 1)
    assert stage.data.clip_frames > config.data.clip_frames and stage.data.occlusion[0] > 0
    lrs = [_recipe_lr(config, step) for step in range(stage.from_step, config.steps)]
    assert lrs[0] < lrs[stage.optim.warmup_steps - 1] == pytest.approx(stage.optim.lr)  # its own warm-up
    assert lrs[-1] == pytest.approx(stage.optim.lr * stage.optim.min_lr_ratio, rel=0.01)  # decays to its floor


def test_schedule_steps_fixes_the_curve_length_independently_of_where_the_run_stops() -> None:
    optim = OptimConfig(lr=1.0, warmup_steps=0, schedule="linear", min_lr_ratio=0.0, schedule_steps=100)
    assert learning_rate(50, 60, optim) == pytest.approx(0.5)
    assert learning_rate(50, 60, optim.model_copy(update={"schedule_steps": None})) == pytest.approx(1 / 6)


def test_lr_from_step_swaps_the_peak_and_keeps_the_shape() -> None:
    optim = OptimConfig(lr=1.0, warmup_steps=0, schedule="linear", min_lr_ratio=0.0, lr_from_step={10: 2.0})
    assert learning_rate(9, 20, optim) == pytest.approx(1.0 * 11 / 20)
    assert learning_rate(10, 20, optim) == pytest.approx(2.0 * 10 / 20)
    with pytest.raises(ConfigError, match="lr_from_step: step -1"):
        make_train_config({"optim": {"lr_from_step": {-1: 1e-3}}})


def test_the_weights_record_names_the_recipe_its_hash_and_the_seeds() -> None:
    record = json.loads((RECIPE.parents[2] / "batchtrack" / "weights" / "tiny-synthetic.json").read_text())
    recipe = record["recipe"]
    assert recipe["config_file"] == "jobs/configs/train_tiny.yaml"
    assert recipe["config_sha256"] == hashlib.sha256(RECIPE.read_bytes()).hexdigest()
    assert "--config jobs/configs/train_tiny.yaml" in recipe["command"]
    assert record["seeds"]["train"]["seed"] == load_train_config(RECIPE).seed
    assert str(TRAIN.start) in record["seeds"]["train"]["what"]
    validation = [s for seeds in record["seeds"]["validation_scene_seeds"].values() for s in seeds]
    assert validation and all(s in VALIDATION for s in validation)
    assert record["seeds"]["test_scene_seeds_from"] == TEST.start
    assert record["validation_curve"]["steps"]
