"""The console script lists its commands and reports config errors without a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from batchtrack.cli import main


def test_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "batchtrack.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("run", "demo-corpus", "demo", "eval", "render", "inspect"):
        assert re.search(rf"^\s+{command}\b", result.stdout, re.MULTILINE), command


def test_run_with_bad_config_exits_2_and_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("corpus: a\noutput: b\nactors:\n  num_actorz: 2\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'actors.num_actorz'" in err
    assert "line 4" in err


def test_storage_options_and_actor_flags_reach_the_config(tmp_path: Path) -> None:
    from batchtrack.cli import _job_overrides, build_parser
    from batchtrack.config import load_config

    args = build_parser().parse_args(
        [
            "run", "corpus", "out", "--storage-option", "endpoint_url=http://127.0.0.1:9",
            "--storage-option", "client_kwargs.region_name=eu", "--max-actors", "3", "--cpus-per-actor", "2",
            "--no-auto",
        ]
    )  # fmt: skip
    cfg = load_config(None, **_job_overrides(args))
    assert cfg.storage_options == {"endpoint_url": "http://127.0.0.1:9", "client_kwargs": {"region_name": "eu"}}
    assert cfg.actors.max_actors == 3
    assert cfg.actors.num_cpus == 2.0
    assert cfg.auto.enabled is False


def test_malformed_storage_option_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "a", "b", "--storage-option", "endpoint_url"]) == 2
    assert "--storage-option expects KEY=VALUE" in capsys.readouterr().err
