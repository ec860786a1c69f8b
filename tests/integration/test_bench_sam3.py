"""bench/sam3.py at its smallest setting, in process: both workers run the same weights on the same clip.

Nothing here is about speed: the timings are checked for sense, never against wall-clock goals. The
subprocess-per-run driver (for separate peak RSS) is the script's `main`; this test runs its workers and table
in one process to stay short, with the official sam3 (the test-only oracle) required as in tests/parity.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytestmark = pytest.mark.integration

if importlib.util.find_spec("sam3") is None and os.environ.get("PARITY_ALLOW_NO_ORACLE") == "1":
    pytest.skip("sam3 (the test-only oracle) is not installed; PARITY_ALLOW_NO_ORACLE=1", allow_module_level=True)

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "sam3.py"


def _load_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_sam3", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    for helper in ("bench_tracker", "sam3_oracle"):  # siblings the script registers by name: gone after the test
        monkeypatch.setitem(sys.modules, helper, None)
    spec.loader.exec_module(module)
    return module


def test_smallest_setting_runs_both_trackers_on_identical_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bench = _load_script(monkeypatch)
    threads = torch.get_num_threads()
    try:
        meta, official = bench.make_checkpoints(tmp_path, 112)
        args = argparse.Namespace(
            length=2, image_size=112, height=120, width=160, threads=1, checkpoint=meta, official_state=official
        )
        torch.set_num_threads(1)
        results = {("ours", 2): bench.run_ours(args), ("official", 2): bench.run_official(args)}
    finally:
        torch.set_num_threads(threads)
    for r in results.values():
        r["peak_rss_mib"] = 1.0  # measured per subprocess by `main`; not meaningful in one process
        assert r["frames"] == 2 and r["seconds"] > 0 and r["cpu_seconds"] > 0
    # Identical weights and prompts: the same foreground over the clip (the masks themselves are compared at
    # tolerance in tests/parity/test_sam3_parity.py), and objects were tracked at all.
    ours, theirs = results["ours", 2]["mask_pixels"], results["official", 2]["mask_pixels"]
    assert ours > 0 and abs(ours - theirs) <= 0.01 * theirs, (ours, theirs)
    table = bench.format_table(results, [2]).splitlines()
    assert len(table) == 3 and table[2].startswith("| 2 |")
    assert len(table[2].split("|")) == len(table[0].split("|"))


def _table(lines: list[str]) -> list[dict[str, str]]:
    """The markdown table among `lines`, as one {heading: cell} per data row."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("| ")]
    assert len(rows) >= 3 and set(rows[1]) == {"---:"}, lines  # heading, alignment, data
    return [dict(zip(rows[0], row, strict=True)) for row in rows[2:]]


def test_concept_mode_runs_both_video_loops_in_subprocesses_and_prints_ratios() -> None:
    """`--mode concept` end to end, as run from the shell (a subprocess per side, the official side checking that
    it rebuilt the checkpoint's weights), on 3 frames of bikes.mp4: both loops output every frame, the same rows
    and objects, and the table and goal lines carry the ours / official ratios."""
    cmd = [sys.executable, str(SCRIPT), "--mode", "concept", "--lengths", "3", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    print(proc.stdout)
    assert any(line.startswith("SAM 3 concept mode") and "weights sha256" in line for line in lines), lines
    runs = {line.split()[0]: line for line in lines if line.split()[:1] in (["ours"], ["official"])}
    assert set(runs) == {"ours", "official"}, lines

    (row,) = _table(lines)
    assert row["frames"] == "3"
    counts = {key: [int(v) for v in row[f"{key} ours / official"].split(" / ")] for key in ("rows", "objects")}
    counts["object rows"] = [int(v) for v in row["object rows ours / official"].split(" / ")]
    assert counts["rows"] == [3, 3], row  # one row per frame on each side
    assert counts["objects"][0] == counts["objects"][1] > 0, row  # the detector found instances, the same number
    assert counts["object rows"][0] == counts["object rows"][1] >= counts["objects"][0], row
    assert row["same ids every frame"] == "yes", row
    for measure in ("frames/s", "frames/CPU-s", "peak RSS MiB"):
        ours, theirs, ratio = (float(row[f"{measure} {who}"]) for who in ("ours", "official", "ratio"))
        assert ours > 0 and theirs > 0 and ratio == pytest.approx(ours / theirs, rel=0.05, abs=0.01), (measure, row)
    # Issue 18's goal, one line per length: the ratios it is judged on (their values are not asserted here).
    (goal,) = [line for line in lines if line.startswith("3 frames: speed ours/official")]
    speed = float(goal.split("speed ours/official ")[1].split("x")[0])
    memory = float(goal.split("memory ")[1].split("x")[0])
    assert speed == pytest.approx(float(row["frames/CPU-s ratio"]), abs=0.01)
    assert memory == pytest.approx(float(row["peak RSS MiB ratio"]), abs=0.01)


def test_concept_mode_official_worker_refuses_weights_that_differ_from_the_checkpoint(tmp_path: Path) -> None:
    """The official side rebuilds the seeded parts instead of loading the checkpoint: it checks their digest."""
    cmd = [sys.executable, str(SCRIPT), "--worker", "official", "--mode", "concept", "--length", "1"]
    cmd += ["--checkpoint", str(tmp_path / "unused.pt"), "--weights-digest", "0" * 64, "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0 and "the official parts differ from the checkpoint's" in proc.stderr, proc.stderr
