r"""Train a tracker on synthetic clips with Ray Train (one CPU worker or many GPU workers, same script).

    python jobs/train.py --config jobs/configs/train_tiny.yaml --output-dir runs/tiny --num-workers 1
    ray job submit --working-dir . -- python jobs/train.py --config jobs/configs/train_tiny.yaml \
        --num-workers 8 --use-gpu

Every worker runs `batchtrack.training.loop.train`; DDP comes from `ray.train.torch.prepare_model`, and
each checkpoint rank 0 writes is reported to Ray Train. A rerun with the same output dir resumes (a killed
run loses at most the steps since its last checkpoint). Each start is appended to OUTPUT/launches.jsonl
(command, config file, its SHA-256, overrides); after training the checkpoints are scored on the
validation split (OUTPUT/validation.jsonl), which `python -m batchtrack.training.export --select
validation` picks from. The test split is never read here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from batchtrack.training.config import TrainConfig, load_train_config
from batchtrack.training.export import record_launch
from batchtrack.training.loop import WorkerContext, seed_checkpoint, train
from batchtrack.training.validation import validate_run


def train_loop_per_worker(config_values: dict[str, Any]) -> None:
    config = TrainConfig.model_validate(config_values)
    context = ray.train.get_context()
    worker = WorkerContext(rank=context.get_world_rank(), world_size=context.get_world_size())

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        checkpoint = Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def wrap(model: Any) -> Any:
        # Some parameters (point embeddings, mask-prompt paths) are idle in a given step.
        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})

    train(config, worker=worker, wrap_model=wrap, report=report, device=ray.train.torch.get_device())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="training config YAML (batchtrack.training.config)")
    parser.add_argument("--output-dir", help="checkpoints and metrics (overrides output_dir)")
    parser.add_argument("--steps", type=int, help="total optimizer steps (overrides steps)")
    parser.add_argument("--max-wall-s", type=float, help="stop with a checkpoint after this many seconds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override, e.g. optim.lr=1e-3")
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train workers")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per worker")
    parser.add_argument("--no-validate", action="store_true", help="skip scoring checkpoints on the validation split")
    parser.add_argument(
        "--seed-weights",
        metavar="WEIGHTS",
        help="start an empty run at --seed-step from these weights (a stage resetting the optimizer must start there)",
    )
    parser.add_argument("--seed-step", type=int, help="the 0-based step --seed-weights stand for")
    args = parser.parse_args(argv)

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, _, raw = item.partition("=")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    if args.output_dir:
        overrides["output_dir"] = str(Path(args.output_dir).resolve())
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.max_wall_s is not None:
        overrides["max_wall_s"] = args.max_wall_s
    config = load_train_config(args.config, overrides)
    output_dir = Path(config.output_dir).resolve()
    config = config.model_copy(update={"output_dir": str(output_dir)})
    record_launch(
        output_dir,
        {
            "command": " ".join(["python", "jobs/train.py", *(sys.argv[1:] if argv is None else argv)]),
            "config_file": args.config,
            "config_sha256": hashlib.sha256(Path(args.config).read_bytes()).hexdigest(),
            "overrides": overrides,
        },
    )

    if (args.seed_weights is None) != (args.seed_step is None):
        parser.error("--seed-weights and --seed-step go together")
    if args.seed_weights is not None:
        seed_checkpoint(config, args.seed_weights, args.seed_step)

    if not ray.is_initialized() and "RAY_ADDRESS" not in os.environ:
        # "local": always a fresh embedded cluster, never one that `ray start` left on this machine.
        ray.init(address="local", num_cpus=max(1, math.ceil(args.num_workers * args.cpus_per_worker)))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config.model_dump(mode="json"),
        scaling_config=ScalingConfig(
            num_workers=args.num_workers,
            use_gpu=args.use_gpu,
            resources_per_worker={"CPU": args.cpus_per_worker},
        ),
        run_config=RunConfig(name="train", storage_path=str(output_dir / "ray")),
    )
    result = trainer.fit()
    curve = validate_run(config) if config.validation.enabled and not args.no_validate else []
    best = max(curve, key=lambda r: (r["mean"], r["step"]), default=None)
    summary = {"metrics": result.metrics, "checkpoint": result.checkpoint.path if result.checkpoint else None}
    print(json.dumps({**summary, "validation_best": best}))  # the last line: a summary scripts can parse
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
