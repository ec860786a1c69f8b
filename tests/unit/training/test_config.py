"""The training recipe in jobs/configs loads, and YAML mistakes are ConfigErrors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchtrack.errors import ConfigError
from batchtrack.model.configs import get_config
from batchtrack.training.config import load_train_config

RECIPE = Path(__file__).resolve().parents[3] / "jobs" / "configs" / "train_tiny.yaml"


def test_shipped_recipe_loads_and_names_a_registered_model() -> None:
    config = load_train_config(RECIPE)
    assert config.model == "tiny-synthetic"
    get_config(config.model)
    assert config.torch_threads == 1
    assert config.data.height % 2 == 0 and config.data.width % 2 == 0


def test_dotted_overrides_win_over_the_file() -> None:
    config = load_train_config(RECIPE, {"optim.lr": 3e-4, "steps": 7, "data.clip_frames": 3})
    assert (config.optim.lr, config.steps, config.data.clip_frames) == (3e-4, 7, 3)


def test_unknown_keys_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: test-tiny\noptim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.learning_rate"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")
