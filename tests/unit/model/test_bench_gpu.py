"""bench/gpu.py's reduced CPU run: the script CI cannot run on a GPU still runs, and prints every row, for the
SAM 2.1 path and the SAM 3 path (`--model sam3`, sam3-test-tiny in the smoke run)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "gpu.py"
MEASURES = ("size x objects", "precision", "torch.compile", "encoder batch", "peak memory", "official vs ours")


def _load_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("family", "tiny"), [("sam2.1", "test-tiny"), ("sam3", "sam3-test-tiny")])
def test_cpu_smoke_run_prints_one_table_with_every_measure(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, family: str, tiny: str
) -> None:
    threads = torch.get_num_threads()
    try:
        assert _load_script(monkeypatch).main(["--cpu-smoke", "--model", family, "--budget-s", "600"]) == 0
    finally:
        torch.set_num_threads(threads)
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][2:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert {row[0] for row in rows} == set(MEASURES)
    assert {row[1] for row in rows if row[0] != "official vs ours"} == {tiny}  # the family's own tiny config ran
    for measure, model, _objects, _frames, _setting, fps, note in rows:
        if measure == "torch.compile":
            assert note == "skipped on CPU smoke"
        elif measure == "official vs ours" and family == "sam3":
            assert fps == "-" and "bench/sam3.py" in note
        elif measure == "official vs ours" and os.environ.get("PARITY_ALLOW_NO_ORACLE") == "1" and fps == "-":
            assert "not importable" in note
        else:
            assert float(fps) > 0, (measure, model)
    precision_note = next(row[6] for row in rows if row[0] == "precision" and row[6])
    iou = float(re.search(r"mask IoU vs float32: ([0-9.]+)", precision_note).group(1))  # type: ignore[union-attr]
    assert iou == pytest.approx(1.0)  # CPU runs float32 for both: identical masks
