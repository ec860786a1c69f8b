"""A driver killed mid-job (SIGKILL, no cleanup) followed by a rerun ends with every row present once and
the committed files of the first run untouched."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from .conftest import CLIP_FRAMES, Corpus, assert_complete_dataset, make_corpus, read_table

pytestmark = pytest.mark.integration


def _run_command(corpus: Corpus, output: Path) -> list[str]:
    return [
        sys.executable, "-m", "batchtrack.cli", "run", str(corpus.folder), str(output),
        "--prompts", str(corpus.prompts), "--model", "test-tiny",
        "--clip-frames", str(CLIP_FRAMES), "--actors", "1",
    ]  # fmt: skip


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "BATCHTRACK_"))}
    return {**env, "BATCHTRACK_UNIT__MAX_VIDEOS": "1"}  # a unit per video, so the job has several commits


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the driver and everything it started (its embedded Ray), as a crash or an OOM kill would."""
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    psutil.wait_procs(tree, timeout=30)


def test_driver_killed_mid_job_then_rerun_lands_every_row_once(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", num_videos=3, num_frames=20, seed=3, broken=False)
    output = tmp_path / "out"
    commits = output / "clips"
    driver = subprocess.Popen(
        _run_command(corpus, output), env=_clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            if commits.is_dir() and any(commits.glob("*.parquet")):
                break
            time.sleep(0.05)
        assert driver.poll() is None, "the driver finished before it could be killed"
        assert any(commits.glob("*.parquet")), "no unit was committed within the deadline"
    finally:
        _kill_tree(driver)
    committed = {p: p.stat().st_mtime_ns for p in output.rglob("*.parquet") if (commits / p.name).exists()}
    committed_units = len(list(commits.glob("*.parquet")))
    assert not (output / "_manifest.json").exists(), "the killed run must not have finished"

    rerun = subprocess.run(_run_command(corpus, output), env=_clean_env(), capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-4000:]
    resumed = int(re.search(r"committed by an earlier run: (\d+)", rerun.stdout).group(1))
    assert resumed == committed_units < 3
    assert {p: p.stat().st_mtime_ns for p in committed} == committed, "a committed file was rewritten"
    clips = read_table(output, "clips").to_pylist()
    assert len(clips) == 3 * 3 and all(c["status"] == "ok" for c in clips)
    assert len(list(commits.glob("*.parquet"))) == 3
    assert (output / "_manifest.json").exists()
    assert_complete_dataset(output, corpus.prompts, lambda name: str(corpus.folder / name))
