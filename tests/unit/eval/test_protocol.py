"""The test-protocol record beside the weights: read back only for the weights it was measured on."""

from __future__ import annotations

from pathlib import Path

from batchtrack.eval.protocol import protocol_record_path, protocol_summary, read_protocol_record, write_protocol_record

ROW = {"subset": "mixed", "model": "m", "videos": 10, "objects": 31, "J&F": 0.5, "J&F_low": 0.45, "J&F_high": 0.55}


def test_record_round_trips_for_its_weights_and_is_ignored_for_other_weights(tmp_path: Path) -> None:
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"weights v1")
    flow = {**ROW, "model": "baseline-flow", "J&F": 0.6}
    path = write_protocol_record(weights, {"rows": [ROW, flow], "reacquisition": {"m": {"found": 3, "spans": 7}}})
    assert path == protocol_record_path(weights) == tmp_path / "m.test.json"
    record = read_protocol_record(weights)
    assert record is not None
    summary = protocol_summary(record, "m")
    assert "mixed          J&F 0.500 [0.450, 0.550] (10 videos, 31 objects); baseline-flow 0.600" in summary
    assert "3/7" in summary
    weights.write_bytes(b"weights v2")
    assert read_protocol_record(weights) is None
    assert read_protocol_record(tmp_path / "absent.safetensors") is None
