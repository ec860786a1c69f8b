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
