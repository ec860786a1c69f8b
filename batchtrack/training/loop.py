"""The training loop: AdamW, warm-up + cosine/linear decay, gradient clipping, metrics to JSONL/CSV,
checkpoints as safetensors (+ optimizer state) that a rerun resumes from.

It knows nothing about Ray: the Ray Train entry point (jobs/train.py) passes in a `WorkerContext`
(rank, world size), a `wrap_model` (DDP via `ray.train.torch.prepare_model`) and a `report` callback.
Run alone (one process, rank 0 of 1) it is an ordinary single-machine training loop.

Checkpoint layout under `output_dir`:
    checkpoints/step_000050/model.safetensors   tracker weights (strict SAM 2.1-style key names)
    checkpoints/step_000050/optimizer.pt        AdamW state (load with weights_only=True)
    checkpoints/step_000050/association_head.safetensors   only when the association loss is on
    checkpoints/step_000050/trainer_state.json  step, config, losses; written last = the checkpoint is whole
    metrics.jsonl, metrics.csv                  one row per step
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from batchtrack.errors import CheckpointError, ConfigError
from batchtrack.model.loading.build import new_tracker, shipped_weights
from batchtrack.model.loading.checkpoint import load_state_dict_file, load_strict, save_safetensors
from batchtrack.model.modes.association import AssociationHead, load_association_head, save_association_head
from batchtrack.model.tracker.tracker import Tracker
from batchtrack.training.config import OptimConfig, TrainConfig
from batchtrack.training.data import make_batch
from batchtrack.training.losses import LossWeights
from batchtrack.training.unroll import TrainingUnroll, build_trainable

MODEL_FILE = "model.safetensors"
ASSOCIATION_FILE = "association_head.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
METRIC_FIELDS = (
    "step",
    "lr",
    "loss",
    "focal",
    "dice",
    "iou",
    "object_score",
    "association",
    "mask_iou",
    "prompted_mask_iou",
    "grad_norm",
    "step_s",
    "elapsed_s",
)

ReportFn = Callable[[dict[str, float], "Path | None"], None]


@dataclass(frozen=True)
class WorkerContext:
    """Which worker this is. Rank 0 writes checkpoints and metrics."""

    rank: int = 0
    world_size: int = 1


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    step: int
    checkpoint_dir: Path | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False


def learning_rate(step: int, total_steps: int, optim: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then the configured decay.

    The curve spans `optim.schedule_steps` (default `total_steps`); `optim.lr_from_step` swaps its peak.
    """
    peak = optim.peak_lr(step)
    total_steps = optim.schedule_steps or total_steps
    if optim.warmup_steps > 0 and step < optim.warmup_steps:
        return peak * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return peak
    span = max(1, total_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    floor = peak * optim.min_lr_ratio
    if optim.schedule == "linear":
        return floor + (peak - floor) * (1.0 - progress)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW; biases, norms, embeddings and other 1-D/small tensors get no weight decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        small = param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "token" in name
        (no_decay if small else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas)


def frozen_tracker(name: str, checkpoint: str | Path | None = None) -> Tracker:
    """The tracker `name` with weights from `checkpoint` (default: its shipped file), every parameter frozen.

    Training only the association head on top of it leaves the tracker's weights exactly as loaded.
    """
    path = Path(checkpoint) if checkpoint is not None else shipped_weights(name)
    if path is None:
        raise ConfigError(
            f"train_only='association_head' needs tracker weights: model {name!r} ships none and "
            "init_checkpoint is not set"
        )
    tracker = new_tracker(name)
    load_strict(tracker, load_state_dict_file(path), str(path))
    tracker.requires_grad_(False)
    return tracker.eval()


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (those with a trainer_state.json), oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step_")))


def save_checkpoint(
    output_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    state: dict[str, Any],
    keep: int,
    association_head: AssociationHead | None = None,
) -> Path:
    """Write the checkpoint of `step` whole (to a temporary folder, then renamed) and prune old ones."""
    root = Path(output_dir) / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_safetensors(model, tmp / MODEL_FILE, metadata={"step": str(step)})
    if association_head is not None:
        save_association_head(association_head, tmp / ASSOCIATION_FILE)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2, sort_keys=True))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoint_dirs(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    checkpoint_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    association_head: AssociationHead | None = None,
) -> dict[str, Any]:
    """Load weights strictly (and the optimizer state if given); return the trainer state (with its step)."""
    checkpoint_dir = Path(checkpoint_dir)
    state_path = checkpoint_dir / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"checkpoint {checkpoint_dir} is incomplete: {STATE_FILE} is missing")
    load_strict(model, load_state_dict_file(checkpoint_dir / MODEL_FILE), str(checkpoint_dir / MODEL_FILE))
    if association_head is not None:
        load_association_head(checkpoint_dir / ASSOCIATION_FILE, association_head)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(checkpoint_dir / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
    return json.loads(state_path.read_text())


def seed_checkpoint(config: TrainConfig, weights: str | Path, step: int) -> Path:
    """Write checkpoint `step` of `config.output_dir` holding `weights` and a fresh optimizer, to resume from.

    For continuing a schedule from weights alone (e.g. the shipped file) at a stage that resets the
    optimizer: the run then goes on exactly as one that had trained to `step` itself.
    """
    if checkpoint_dirs(config.output_dir):
        raise ConfigError(f"{config.output_dir} already has checkpoints: seed only an empty run")
    if not config.resets_optimizer_at(step):
        raise ConfigError(
            f"seeding at step {step} needs a stage with reset_optimizer starting there (the optimizer state is not "
            "in a weights file)"
        )
    tracker = new_tracker(config.model)
    load_strict(tracker, load_state_dict_file(weights), str(weights))
    unroll = TrainingUnroll(tracker, None)
    state = {"config": config.model_dump(mode="json"), "metrics": {}, "seeded_from": str(weights), "elapsed_s": 0.0}
    return save_checkpoint(config.output_dir, tracker, make_optimizer(unroll, config.optim), step, state, 1_000_000)


class _MetricsWriter:
    """Appends one row per step to metrics.jsonl and metrics.csv (rank 0 only)."""

    def __init__(self, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = output_dir / "metrics.jsonl"
        self.csv = output_dir / "metrics.csv"
        if not self.csv.exists():
            with self.csv.open("w", newline="") as f:
                csv.writer(f).writerow(METRIC_FIELDS)

    def write(self, row: dict[str, float]) -> None:
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        with self.csv.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in METRIC_FIELDS])


def _all_agree(flag: bool) -> bool:
    """True on every worker if any worker says True (so all checkpoint/stop on the same step)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def train(
    config: TrainConfig,
    *,
    worker: WorkerContext | None = None,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    report: ReportFn | None = None,
    resume_from: str | Path | None = None,
    device: torch.device | None = None,
) -> TrainResult:
    """Train `config.model` on synthetic clips for `config.steps` optimizer steps, resuming if possible.

    The run resumes from `resume_from` when given, else from the newest complete checkpoint in
    `config.output_dir`. Weights are initialised from `config.seed` (same seed, same initial weights).
    """
    worker = worker or WorkerContext()
    device = device or torch.device("cpu")
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    output_dir = Path(config.output_dir)
    is_chief = worker.rank == 0

    torch.manual_seed(config.seed)
    head_only = config.train_only == "association_head"
    if head_only:
        tracker_module = frozen_tracker(config.model, config.init_checkpoint).to(device)
    else:
        tracker_module = build_trainable(config.model, config.decoder_qk_tie_scale).to(device)
    head = AssociationHead(tracker_module.config.d_model).to(device) if config.loss.association > 0 else None
    unroll = TrainingUnroll(tracker_module, head)
    optimizer = make_optimizer(unroll, config.optim)

    start_step = 0
    if resume_from is None:
        existing = checkpoint_dirs(output_dir)
        resume_from = existing[-1] if existing else None
    if resume_from is not None:
        state = load_checkpoint(resume_from, tracker_module, optimizer, head)
        start_step = int(state["step"])

    model = wrap_model(unroll) if wrap_model is not None else unroll
    model.train()
    if head_only:
        tracker_module.eval()  # frozen: run it exactly as at inference
    weights = LossWeights(
        focal=config.loss.focal,
        dice=config.loss.dice,
        iou=config.loss.iou,
        object_score=config.loss.object_score,
        association=config.loss.association,
    )
    writer = _MetricsWriter(output_dir) if is_chief else None
    t0 = time.monotonic()
    last_checkpoint_t = t0
    last_dir: Path | None = Path(resume_from) if resume_from is not None else None
    row: dict[str, float] = {}
    step = start_step
    stopped_early = False

    def checkpoint(step_done: int, metrics: dict[str, float]) -> Path | None:
        saved = None
        if is_chief:
            state = {"config": config.model_dump(mode="json"), "metrics": metrics, "elapsed_s": time.monotonic() - t0}
            saved = save_checkpoint(
                output_dir, tracker_module, optimizer, step_done, state, config.keep_checkpoints, head
            )
        if report is not None:
            report(metrics, saved)
        return saved

    while step < config.steps:
        step_t = time.monotonic()
        if config.resets_optimizer_at(step):
            optimizer = make_optimizer(unroll, config.optim)
        stage_start, data_spec, optim_spec = config.stage_at(step)
        lr = learning_rate(step - stage_start, config.steps - stage_start, optim_spec)
        for group in optimizer.param_groups:
            group["lr"] = lr
        frames = 1 if step < config.prompted_frame_steps else None
        batch = make_batch(
            data_spec,
            seed=config.seed,
            step=step,
            rank=worker.rank,
            batch_clips=config.batch_clips,
            clip_frames=frames,
        )
        output = model(batch.to(device), weights)
        loss = output.terms.total(weights)
        optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(unroll.parameters(), config.optim.grad_clip)
            optimizer.step()
        else:
            # Nothing to learn in this batch: every clip is one mask-prompted frame (the mask is its own
            # output). Rare in the prompted-frame curriculum; the step still counts, so seeds stay aligned.
            grad_norm = torch.zeros(())
        step += 1

        now = time.monotonic()
        row = {
            "step": step,
            "lr": lr,
            "loss": float(loss.detach()),
            **output.terms.as_floats(),
            "mask_iou": output.mean_mask_iou,
            "prompted_mask_iou": output.prompted_mask_iou,
            "grad_norm": float(grad_norm),
            "step_s": now - step_t,
            "elapsed_s": now - t0,
        }
        if writer is not None:
            writer.write(row)
        out_of_time = config.max_wall_s is not None and now - t0 >= config.max_wall_s
        due = (
            step % config.checkpoint_every_steps == 0
            or step == config.steps
            or (config.checkpoint_every_s is not None and now - last_checkpoint_t >= config.checkpoint_every_s)
        )
        stop = _all_agree(out_of_time)
        if _all_agree(due) or stop:
            saved = checkpoint(step, row)
            last_dir = saved or last_dir
            last_checkpoint_t = time.monotonic()
        if stop and step < config.steps:
            stopped_early = True
            break
    return TrainResult(step=step, checkpoint_dir=last_dir, last_metrics=row, stopped_early=stopped_early)
