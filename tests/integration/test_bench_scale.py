"""bench/scale.py's quick mode on local disk: the script runs the real job twice per size and prints every column;
and one run of its prompts axis (a 2,000-line manifest for a 2-video corpus) in the same invocation.

Runs the script in a subprocess (it starts and stops its own Ray). Nothing here is about speed: the
numbers are checked for sense (counts, files per table, a resume that tracks nothing), never against
wall-clock goals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "scale.py"
COLUMNS = (
    "videos",
    "units",
    "wall s",
    "unit s",
    "wall/video ms",
    "overhead/video ms",
    "RSS MB",
    "RSS +MB",
    "first unit s",
    "masks/",
    "pointers/",
    "clips/",
    "videos/file",
    "duckdb ms",
    "1-file ms",
    "duckdb x",
    "scan x",
    "resume s",
    "resume/first",
    "retracked",
)
PROMPT_COLUMNS = ("lines", "manifest MB", "driver +MB", "worker MB", "reader +MB", "reader/manifest", "read s",
                  "first unit s")
FRAMES = 12  # each bench video: 12 frames, one object prompted on frame 0


def test_quick_mode_prints_a_full_table_resumes_without_tracking_and_a_prompts_row(tmp_path: Path) -> None:
    if ray.is_initialized():
        pytest.skip("a Ray of this test process is running; the script starts its own")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--backends", "local", "--workdir", str(tmp_path / "work"),
         "--prompts", "2000", "--prompt-videos", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()

    header = lines[lines.index("local:") + 1]
    assert [name for name in COLUMNS if name not in header] == []
    printed = lines[lines.index("local:") + 2 : lines.index("local:") + 4]
    assert [line.split()[0] for line in printed] == ["40", "200"]
    assert all(len(line.split()) == len(COLUMNS) for line in printed), printed
    assert any(line.startswith("local: overhead/video 40→200") for line in lines)

    rows = json.loads(lines[-1])
    assert [(r["backend"], r["videos"]) for r in rows] == [("local", 40), ("local", 200)]
    for row in rows:
        videos = row["videos"]
        assert (row["ok"], row["failed"]) == (videos, 0)
        assert row["mask_rows"] == videos * FRAMES
        assert 1 <= row["units"] <= videos
        for table in ("masks", "pointers", "clips"):
            assert 1 <= row[f"{table}_files"] <= row["units"], (table, row)
        # The finished job's rerun resumed every unit and tracked none again.
        assert row["resumed_units"] == row["resume_units"] == row["units"]
        assert row["retracked"] == 0
        assert row["unit_s"] > 0 and row["wall_s"] > 0
        assert row["first_unit_s"] is not None and 0 < row["first_unit_s"] <= row["wall_s"] + 1
        assert row["rss_peak_mb"] >= row["rss_before_mb"] > 0
        assert row["duckdb_dir_ms"] > 0 and row["duckdb_one_ms"] > 0
        assert row["scan_dir_ms"] > 0 and row["scan_one_ms"] > 0
        assert row["resume_s"] > 0

    # The prompts axis: the manifest drives the job; its lines outside the corpus are counted, not tracked.
    header = lines[lines.index("local prompts:") + 1]
    assert [name for name in PROMPT_COLUMNS if name not in header] == []
    (prompt_row,) = json.loads(next(line for line in lines if line.startswith("prompt rows: "))[len("prompt rows: "):])
    assert (prompt_row["lines"], prompt_row["partitions_videos"], prompt_row["ok"]) == (2000, 2, 2)
    assert prompt_row["unmatched_lines"] == 2000 - 2
    assert prompt_row["manifest_memory_mb"] > 0 and prompt_row["memory_measured"]
    assert prompt_row["worker_peak_mb"] > 0 and prompt_row["driver_peak_mb"] >= prompt_row["driver_before_mb"] > 0
    assert 0 < prompt_row["read_s"] < prompt_row["wall_s"]
    assert prompt_row["first_unit_s"] is not None and prompt_row["first_unit_s"] <= prompt_row["wall_s"] + 1
    assert any(line.startswith("local: largest manifest-task worker growth") for line in lines)
