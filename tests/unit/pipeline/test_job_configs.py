"""Every job config in jobs/configs (except training configs) loads; the job script is thin and parses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batchtrack.config import load_config
from batchtrack.pipeline.job import Failure, JobSummary
from batchtrack.trackers import check_model_weights

ROOT = Path(__file__).resolve().parents[3]
JOB_CONFIGS = sorted(p for p in (ROOT / "jobs" / "configs").glob("*.yaml") if not p.name.startswith("train"))


def test_there_are_job_configs() -> None:
    assert {p.name for p in JOB_CONFIGS} >= {"demo.yaml", "s3_gpu.yaml", "cpu_baseline.yaml"}


@pytest.mark.parametrize("path", JOB_CONFIGS, ids=lambda p: p.name)
def test_job_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.corpus and cfg.output


@pytest.mark.parametrize("path", JOB_CONFIGS, ids=lambda p: p.name)
def test_job_config_runs_real_weights(path: Path) -> None:
    # No shipped config may track with random SAM 2.1 weights, silently or by flag.
    model = load_config(path).model
    check_model_weights(model)
    assert not model.random_weights


def test_job_script_fits_on_a_screen_and_shows_help() -> None:
    script = ROOT / "jobs" / "track_corpus.py"
    assert len(script.read_text().splitlines()) <= 70
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout


def test_job_script_reports_a_config_error_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "job.yaml"
    bad.write_text("corpus: x\noutput: y\nclip:\n  length_frame: 3\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "track_corpus.py"), "--config", str(bad)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2
    assert "clip.length_frame" in result.stderr


def _summary(ok: int, failed: int, skipped: int) -> JobSummary:
    failures = [Failure(f"/v{i}.mp4", "decode", "DecodeError", "cannot decode") for i in range(failed)]
    return JobSummary(output="out", videos=1, clips=ok + failed + skipped, ok=ok, failed=failed, skipped=skipped,
                      frames=100, wall_seconds=4.0, failures=failures)


@pytest.mark.parametrize(
    ("ok", "failed", "skipped", "allowed", "code"),
    [(10, 0, 0, 0.0, 0), (9, 1, 0, 0.0, 1), (9, 1, 0, 0.1, 0), (8, 2, 0, 0.1, 1), (0, 0, 5, 0.0, 0), (1, 1, 8, 0.5, 0)],
)
def test_exit_code_is_non_zero_only_past_the_failed_fraction(
    ok: int, failed: int, skipped: int, allowed: float, code: int
) -> None:
    assert _summary(ok, failed, skipped).exit_code(allowed) == code


def test_summary_table_shows_counts_throughput_and_failures() -> None:
    table = _summary(7, 2, 1).to_table()
    assert "failed" in table and "25.00 frames/s" in table
    assert table.count("DecodeError") == 2
