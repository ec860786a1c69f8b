"""The training job's configuration: one frozen pydantic model per concern, read from YAML.

Unknown keys and bad values raise `ConfigError` naming the key, as for the tracking job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from batchtrack.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Section):
    """What synthetic training clips look like. Every clip is rendered on the fly from a seed."""

    clip_frames: int = Field(6, ge=2, description="Frames per training clip (1 prompted + clip_frames-1 tracked).")
    height: int = Field(240, ge=16, description="Rendered frame height in pixels.")
    width: int = Field(320, ge=16, description="Rendered frame width in pixels.")
    min_objects: int = Field(1, ge=1, description="Fewest objects rendered in a clip.")
    max_objects: int = Field(3, ge=1, description="Most objects rendered in a clip.")
    max_tracked_objects: int = Field(3, ge=1, description="At most this many objects of a clip are trained on.")
    mask_prompt_fraction: float = Field(
        0.0, ge=0, le=1, description="Fraction of clips prompted with the ground-truth mask instead of its box."
    )
    click_prompt_fraction: float = Field(
        0.0, ge=0, le=1, description="Of the clips not mask-prompted, this fraction gets 1..max_clicks positive clicks."
    )
    max_clicks: int = Field(3, ge=1, description="Most positive clicks per object in a click-prompted clip.")
    box_jitter: float = Field(
        0.05, ge=0, le=0.5, description="Box corners move by up to this fraction of the box side (robustness)."
    )
    scene_frames: int = Field(
        36, ge=2, description="Frames of scene motion a clip window is cut from (occlusions happen in its middle 60%)."
    )
    max_stride: int = Field(2, ge=1, description="Clip frames are 1..max_stride scene frames apart (drawn per clip).")
    occlusion: tuple[float, float] = Field(
        (0.0, 1.0), description="Range of the scene's occlusion probability (drawn uniformly per clip)."
    )

    @model_validator(mode="after")
    def _objects_ordered(self) -> DataSpec:
        if self.max_objects < self.min_objects:
            raise ValueError(f"data.max_objects={self.max_objects} is below data.min_objects={self.min_objects}")
        if (self.clip_frames - 1) * self.max_stride + 1 > self.scene_frames:
            raise ValueError(
                f"data.scene_frames={self.scene_frames} is shorter than clip_frames={self.clip_frames} "
                f"at max_stride={self.max_stride}"
            )
        lo, hi = self.occlusion
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"data.occlusion={self.occlusion} must be an interval inside [0, 1]")
        return self


class ValidationSpec(_Section):
    """Checkpoint scoring on the validation split (batchtrack.synthetic.splits.VALIDATION), never the test split."""

    enabled: bool = Field(True, description="Score checkpoints after training (jobs/train.py).")
    subsets: tuple[str, ...] = Field(
        ("occlusion", "deformation", "mixed"), min_length=1, description="Benchmark subsets of the validation set."
    )
    videos: int = Field(2, ge=1, description="Validation videos per subset.")
    frames: int = Field(60, ge=2, description="Frames per validation video.")
    every_steps: int = Field(100, ge=1, description="Score checkpoints whose step is a multiple of this, and the last.")
    torch_threads: int = Field(1, ge=1, description="torch threads while scoring.")


class OptimConfig(_Section):
    """AdamW with warm-up then a cosine or linear decay, and gradient-norm clipping."""

    lr: float = Field(5e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up from 0 to lr over this many steps.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warm-up.")
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="Final learning rate as a fraction of lr.")
    grad_clip: float = Field(1.0, gt=0, description="Clip the global gradient norm to this value.")
    schedule_steps: int | None = Field(
        None,
        ge=1,
        description="Steps the warm-up + decay spans (default: the run's `steps`); a run may stop before its end.",
    )
    lr_from_step: dict[int, float] = Field(
        default_factory=dict,
        description="Peak learning rate from a 0-based step on, replacing `lr` (the schedule's shape is kept): "
        "{1500: 1.0e-3} scales the rest of the curve by 1e-3 / lr.",
    )

    @model_validator(mode="after")
    def _steps_and_rates_positive(self) -> OptimConfig:
        for step, lr in self.lr_from_step.items():
            if step < 0 or lr <= 0:
                raise ValueError(f"optim.lr_from_step: step {step} must be >= 0 and its lr {lr} > 0")
        return self

    def peak_lr(self, step: int) -> float:
        """The peak learning rate that applies at 0-based step `step`."""
        starts = [s for s in self.lr_from_step if s <= step]
        return self.lr_from_step[max(starts)] if starts else self.lr


class LossConfig(_Section):
    """Weights of the loss terms (SAM 2's defaults: focal 20, dice 1, IoU 1, object score 1)."""

    focal: float = Field(20.0, ge=0, description="Sigmoid focal loss on masks.")
    dice: float = Field(1.0, ge=0, description="Dice loss on masks.")
    iou: float = Field(1.0, ge=0, description="L1 between predicted and actual IoU.")
    object_score: float = Field(1.0, ge=0, description="BCE of the object score against visibility.")
    association: float = Field(0.0, ge=0, description="Association loss on object pointers across frames.")


class TrainingStage(_Section):
    """A later curriculum stage: from `from_step` on, clips follow `data` and the learning rate `optim`.

    The stage's schedule (warm-up, decay) starts at `from_step` and spans the rest of the run (or
    `optim.schedule_steps`). With `reset_optimizer` the AdamW moments start afresh at `from_step`,
    so a run resumed at that step from weights alone continues exactly as an uninterrupted one.
    """

    from_step: int = Field(ge=1, description="0-based step the stage starts at.")
    data: DataSpec = Field(description="Clip spec from this step on (replaces the run's `data`).")
    optim: OptimConfig = Field(description="Optimiser schedule from this step on (steps counted from `from_step`).")
    reset_optimizer: bool = Field(True, description="Start the AdamW moments afresh at `from_step`.")


class TrainConfig(_Section):
    """Everything one training run needs; `output_dir` holds its checkpoints and metrics."""

    model: str = Field("tiny-synthetic", description="Registered tracker config to train.")
    seed: int = Field(0, description="Seeds the weight initialisation and the data stream.")
    steps: int = Field(1000, ge=1, description="Optimiser steps in total (a resumed run continues to this).")
    batch_clips: int = Field(2, ge=1, description="Clips per step on each worker.")
    output_dir: str = Field("runs/train", description="Checkpoints and metrics land here.")
    checkpoint_every_steps: int = Field(50, ge=1, description="Checkpoint after this many steps.")
    checkpoint_every_s: float | None = Field(
        180.0, gt=0, description="Also checkpoint when this many seconds passed since the last one."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Older checkpoints beyond this many are deleted.")
    max_wall_s: float | None = Field(
        None, gt=0, description="Stop (with a checkpoint) once this many seconds of this run have passed."
    )
    torch_threads: int | None = Field(None, ge=1, description="torch.set_num_threads on each worker.")
    prompted_frame_steps: int = Field(
        0, ge=0, description="Curriculum: the first this many steps train on the prompted frame alone (1-frame clips)."
    )
    decoder_qk_tie_scale: float = Field(
        0.0, ge=0, description="Start the decoder's cross-attentions with k_proj = q_proj x this (0: PyTorch's init)."
    )
    train_only: Literal["all", "association_head"] = Field(
        "all",
        description="'association_head': freeze the tracker at `init_checkpoint` (default: the shipped weights of "
        "`model`) and train only the association head (needs loss.association > 0).",
    )
    init_checkpoint: str | None = Field(
        None, description="Tracker weights the frozen tracker starts from when train_only='association_head'."
    )
    data: DataSpec = Field(default_factory=DataSpec, description="Synthetic clip spec.")
    stages: tuple[TrainingStage, ...] = Field(
        (), description="Later curriculum stages, in step order (each replaces data and schedule from its step)."
    )
    validation: ValidationSpec = Field(default_factory=lambda: ValidationSpec(), description="Checkpoint selection.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimiser and schedule.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Loss weights.")

    @model_validator(mode="after")
    def _head_only_has_a_loss(self) -> TrainConfig:
        if self.train_only == "association_head" and self.loss.association <= 0:
            raise ValueError("train_only='association_head' needs loss.association > 0")
        if self.init_checkpoint is not None and self.train_only != "association_head":
            raise ValueError("init_checkpoint is only used with train_only='association_head'")
        starts = [stage.from_step for stage in self.stages]
        if starts != sorted(set(starts)):
            raise ValueError(f"stages: from_step values {starts} must increase (a stage from `steps` on never runs)")
        return self

    def stage_at(self, step: int) -> tuple[int, DataSpec, OptimConfig]:
        """(first step, clip spec, schedule) that apply at 0-based `step`."""
        current: tuple[int, DataSpec, OptimConfig] = (0, self.data, self.optim)
        for stage in self.stages:
            if stage.from_step <= step:
                current = (stage.from_step, stage.data, stage.optim)
        return current

    def resets_optimizer_at(self, step: int) -> bool:
        return any(stage.from_step == step and stage.reset_optimizer for stage in self.stages)


def _dotted(errors: list[Any]) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)


def make_train_config(values: dict[str, Any]) -> TrainConfig:
    """A `TrainConfig` from plain values; ConfigError naming the bad or unknown keys otherwise."""
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"invalid training config: {_dotted(exc.errors())}") from None


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config; `overrides` (dotted keys, e.g. {"optim.lr": 1e-3}) take precedence."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"training config {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"training config {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"training config {path} must be a mapping, got {type(values).__name__}")
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted}: {key} is not a section")
            node = child
        node[leaf] = value
    return make_train_config(values)
