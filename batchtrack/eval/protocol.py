"""The test-protocol record: a shipped model's numbers on the test split, kept beside its weights.

bench/quality.py writes `weights/NAME.test.json` when it scores the shipped weights; `make demo` reads
it back to print those numbers beside its own. The record names the weights' SHA-256, so numbers of
other weights are never shown as the shipped model's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchtrack.model.loading.checkpoint import file_sha256


def protocol_record_path(weights: Path) -> Path:
    """`weights/NAME.safetensors` -> `weights/NAME.test.json`."""
    return weights.with_name(weights.stem + ".test.json")


def write_protocol_record(weights: Path, record: dict[str, Any]) -> Path:
    """Write `record` (rows, command, protocol) beside `weights`, stamped with the weights' SHA-256."""
    path = protocol_record_path(weights)
    path.write_text(json.dumps({**record, "weights_sha256": file_sha256(weights)}, indent=2) + "\n")
    return path


def read_protocol_record(weights: Path) -> dict[str, Any] | None:
    """The test-protocol record of `weights`, or None when there is none or it belongs to other weights."""
    path = protocol_record_path(weights)
    if not path.is_file() or not weights.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("weights_sha256") != file_sha256(weights):
        return None
    return record


def protocol_summary(record: dict[str, Any], model: str) -> str:
    """Lines of `model`'s test J&F per subset (with intervals) and its re-acquisition figure."""
    lines = [f"test protocol ({record.get('protocol', 'test split')}):"]
    rows = record.get("rows", [])
    for row in rows:
        if row["model"] == model:
            others = "; ".join(
                f"{o['model']} {o['J&F']:.3f}" for o in rows if o["subset"] == row["subset"] and o["model"] != model
            )
            lines.append(
                f"  {row['subset']:<14} J&F {row['J&F']:.3f} [{row['J&F_low']:.3f}, {row['J&F_high']:.3f}] "
                f"({row['videos']} videos, {row['objects']} objects)" + (f"; {others}" if others else "")
            )
    reacq = record.get("reacquisition", {}).get(model)
    if reacq:
        lines.append(f"  re-acquired within 5 frames after >= 10 hidden: {reacq['found']}/{reacq['spans']}")
    return "\n".join(lines)
