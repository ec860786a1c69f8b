"""Turn a training run into shipped weights: `weights/NAME.safetensors` plus a JSON record of the run.

    python -m batchtrack.training.export RUN_DIR --name tiny-synthetic --command "python jobs/train.py ..."

The record holds what it takes to reproduce and judge the weights: the exact command, the training
config (seed, data spec, schedule), steps and wall time, the loss curve summarised per span of steps,
the final losses, the git commit, and the file's SHA-256. Weights are stored as float16 by default
(half the size; the tracker loads them into its float32 parameters).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from batchtrack.errors import CheckpointError
from batchtrack.model.build import WEIGHTS_DIR
from batchtrack.model.checkpoint import file_sha256, load_state_dict_file
from batchtrack.training.loop import MODEL_FILE, STATE_FILE, checkpoint_dirs

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_CURVE_KEYS = ("loss", "focal", "dice", "iou", "object_score", "association", "mask_iou", "prompted_mask_iou")


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The per-step metric rows of a run (metrics.jsonl), in step order, last row of each step kept."""
    path = Path(run_dir) / "metrics.jsonl"
    rows: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[int(row["step"])] = row
    return [rows[k] for k in sorted(rows)]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def summarise_curve(rows: list[dict[str, float]], spans: int = 10) -> list[dict[str, float]]:
    """Mean of each loss term over `spans` consecutive, equal spans of steps."""
    if not rows:
        return []
    size = max(1, math.ceil(len(rows) / spans))
    out = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        entry: dict[str, float] = {"first_step": chunk[0]["step"], "last_step": chunk[-1]["step"]}
        for key in _CURVE_KEYS:
            entry[key] = round(_mean([float(r.get(key, float("nan"))) for r in chunk]), 5)
        out.append(entry)
    return out


def export_weights(
    run_dir: str | Path,
    out_path: str | Path,
    record: dict[str, Any],
    dtype: str = "float16",
) -> dict[str, Any]:
    """Copy the newest checkpoint's tracker weights of `run_dir` to `out_path` (+ `.json` beside it)."""
    checkpoints = checkpoint_dirs(run_dir)
    if not checkpoints:
        raise CheckpointError(f"{run_dir} has no complete checkpoint to export")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    last = checkpoints[-1]
    state = json.loads((last / STATE_FILE).read_text())
    tensors = {k: v.to(_DTYPES[dtype]).contiguous() for k, v in load_state_dict_file(last / MODEL_FILE).items()}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_path), metadata={"step": str(state["step"]), "dtype": dtype})
    rows = read_metrics(run_dir)
    tail = rows[-min(len(rows), 25) :]
    full = {
        **record,
        "weights_file": out_path.name,
        "sha256": file_sha256(out_path),
        "dtype": dtype,
        "parameters": int(sum(t.numel() for t in tensors.values())),
        "steps": int(state["step"]),
        "train_elapsed_s": round(float(state.get("elapsed_s", rows[-1]["elapsed_s"] if rows else 0.0)), 1),
        "config": state["config"],
        "final_losses_mean_last_steps": {
            "steps": [tail[0]["step"], tail[-1]["step"]] if tail else [],
            **{k: round(_mean([float(r.get(k, float("nan"))) for r in tail]), 5) for k in _CURVE_KEYS},
        },
        "loss_curve": summarise_curve(rows),
    }
    out_path.with_suffix(".json").write_text(json.dumps(full, indent=2) + "\n")
    return full


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="export a training run's newest checkpoint as shipped weights")
    parser.add_argument("run_dir")
    parser.add_argument("--name", default="tiny-synthetic", help="model name: writes weights/NAME.safetensors")
    parser.add_argument("--out", help="output .safetensors path (default: the package's weights folder)")
    parser.add_argument("--dtype", default="float16", choices=sorted(_DTYPES))
    parser.add_argument("--record", default="{}", help="JSON object merged into the record (command, commit, ...)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else WEIGHTS_DIR / f"{args.name}.safetensors"
    full = export_weights(args.run_dir, out, json.loads(args.record), args.dtype)
    print(json.dumps({k: full[k] for k in ("weights_file", "sha256", "steps", "parameters")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
