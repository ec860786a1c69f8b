"""Turn a training run into shipped weights: `weights/NAME.safetensors` plus a JSON record of the run.

    python -m batchtrack.training.export RUN_DIR --name tiny-synthetic [--select validation]

The record holds what it takes to reproduce and judge the weights: every launch of the run (command,
config file and its SHA-256, overrides; jobs/train.py appends them to RUN_DIR/launches.jsonl), the
training config (seed, data spec, schedule), the seeds (training stream, validation scenes, the test
range), steps and wall time, the loss curve summarised per span of steps, the validation curve and
which checkpoint it selected, the final losses, the git commit, and the file's SHA-256. Weights are stored as
float16 by default (half the size; the tracker loads them into its float32 parameters).
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
from batchtrack.model.loading.build import WEIGHTS_DIR
from batchtrack.model.loading.checkpoint import file_sha256, load_state_dict_file
from batchtrack.synthetic.splits import TEST, TRAIN
from batchtrack.training.config import ValidationSpec
from batchtrack.training.loop import MODEL_FILE, STATE_FILE, checkpoint_dirs
from batchtrack.training.validation import best_checkpoint, read_validation, validation_seeds

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


LAUNCHES_FILE = "launches.jsonl"


def read_launches(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every start of the run, in order (jobs/train.py appends one row per start)."""
    path = Path(run_dir) / LAUNCHES_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record_launch(run_dir: str | Path, launch: dict[str, Any]) -> None:
    """Append one start of the run (command, config file, its SHA-256, overrides) to `launches.jsonl`."""
    path = Path(run_dir) / LAUNCHES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(launch) + "\n")


def _seeds(config: dict[str, Any]) -> dict[str, Any]:
    validation = config.get("validation")
    return {
        "train": {
            "seed": config.get("seed"),
            "what": "weight initialisation and the clip stream; clip (rank, step, index) draws its scene seed "
            f"uniformly from [{TRAIN.start}, {TRAIN.stop})",
        },
        "validation_scene_seeds": validation_seeds(ValidationSpec.model_validate(validation)) if validation else None,
        "test_scene_seeds_from": TEST.start,
    }


def export_weights(
    run_dir: str | Path,
    out_path: str | Path,
    record: dict[str, Any],
    dtype: str = "float16",
    select: str = "last",
) -> dict[str, Any]:
    """Copy a checkpoint's tracker weights of `run_dir` to `out_path` (+ `.json` beside it).

    `select`: "last" (the newest checkpoint) or "validation" (the best on the validation curve).
    """
    checkpoints = checkpoint_dirs(run_dir)
    if not checkpoints:
        raise CheckpointError(f"{run_dir} has no complete checkpoint to export")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if select not in ("last", "validation"):
        raise ValueError(f"select must be 'last' or 'validation', got {select!r}")
    last = checkpoints[-1]
    if select == "validation":
        best = best_checkpoint(run_dir)
        if best is None:
            raise CheckpointError(f"{run_dir} has no checkpoint with a validation score (run jobs/train.py first)")
        last = best
    state = json.loads((last / STATE_FILE).read_text())
    tensors = {k: v.to(_DTYPES[dtype]).contiguous() for k, v in load_state_dict_file(last / MODEL_FILE).items()}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_path), metadata={"step": str(state["step"]), "dtype": dtype})
    rows = [r for r in read_metrics(run_dir) if r["step"] <= state["step"]]
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
        "launches": read_launches(run_dir),
        "seeds": _seeds(state["config"]),
        "selected_by": select,
        "validation_curve": read_validation(run_dir),
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
    parser.add_argument(
        "--select", default="last", choices=("last", "validation"), help="newest checkpoint, or best on validation"
    )
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else WEIGHTS_DIR / f"{args.name}.safetensors"
    full = export_weights(args.run_dir, out, json.loads(args.record), args.dtype, args.select)
    print(json.dumps({k: full[k] for k in ("weights_file", "sha256", "steps", "parameters")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
