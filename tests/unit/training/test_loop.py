"""The training loop: a step lowers the loss, the schedule has its shape, checkpoints resume the run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from batchtrack.errors import CheckpointError, ConfigError
from batchtrack.model.configs import get_config
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.loading.checkpoint import load_state_dict_file, save_safetensors
from batchtrack.model.tracker.tracker import Tracker
from batchtrack.training.config import DataSpec, OptimConfig, make_train_config
from batchtrack.training.data import make_batch
from batchtrack.training.loop import (
    checkpoint_dirs,
    learning_rate,
    load_checkpoint,
    make_optimizer,
    seed_checkpoint,
    train,
)
from batchtrack.training.losses import LossWeights
from batchtrack.training.unroll import TrainingUnroll, build_trainable

SPEC = DataSpec(clip_frames=3, height=48, width=64, min_objects=1, max_objects=2, max_tracked_objects=2)


def _config(tmp_path: Path, steps: int) -> dict:
    return {
        "model": "test-tiny",
        "seed": 3,
        "steps": steps,
        "batch_clips": 1,
        "output_dir": str(tmp_path / "run"),
        "checkpoint_every_steps": 1,
        "checkpoint_every_s": None,
        "keep_checkpoints": 2,
        "data": SPEC.model_dump(),
        "optim": {"lr": 1e-3, "warmup_steps": 0},
    }


def test_one_optimizer_step_lowers_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    unroll = TrainingUnroll(build_trainable("test-tiny"))
    optimizer = make_optimizer(unroll, OptimConfig(lr=1e-3, warmup_steps=0))
    weights = LossWeights()
    batch = make_batch(SPEC, seed=5, step=0, batch_clips=2)
    before = unroll(batch, weights).terms.total(weights)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = unroll(batch, weights).terms.total(weights)
    assert after.item() < before.item()


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    optim = OptimConfig(lr=1e-3, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert learning_rate(0, 100, optim) == pytest.approx(1e-4)
    assert learning_rate(9, 100, optim) == pytest.approx(1e-3)
    assert learning_rate(55, 100, optim) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(100, 100, optim) == pytest.approx(1e-4)
    linear = optim.model_copy(update={"schedule": "linear"})
    assert learning_rate(55, 100, linear) == pytest.approx(1e-4 + 0.9e-3 * 0.5)


def test_checkpoint_resume_continues_the_step_counter(tmp_path: Path) -> None:
    first = train(make_train_config(_config(tmp_path, steps=2)))
    assert first.step == 2 and not first.stopped_early
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["step_000001", "step_000002"]
    saved = load_checkpoint(first.checkpoint_dir, build_trainable("test-tiny"), None)
    assert saved["step"] == 2

    second = train(make_train_config(_config(tmp_path, steps=3)))
    assert second.step == 3
    # Only 2 checkpoints are kept; the resumed run logged step 3 and nothing twice.
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["step_000002", "step_000003"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 4  # header + 3 rows

    # The optimizer state came back too: AdamW's step count continues from 2.
    tracker = build_trainable("test-tiny")
    optimizer = make_optimizer(TrainingUnroll(tracker), OptimConfig())
    load_checkpoint(second.checkpoint_dir, tracker, optimizer)
    steps = {int(s["step"]) for s in optimizer.state_dict()["state"].values()}
    assert steps == {3}


def test_checkpoint_weights_load_strictly_into_the_inference_tracker(tmp_path: Path) -> None:
    result = train(make_train_config(_config(tmp_path, steps=1)))
    assert result.checkpoint_dir is not None
    tracker = build_tracker("test-tiny", checkpoint=result.checkpoint_dir / "model.safetensors", device="cpu")
    trained = load_checkpoint(result.checkpoint_dir, build_trainable("test-tiny"), None)
    assert trained["config"]["model"] == "test-tiny"
    assert not tracker.training


def test_same_seed_gives_the_same_initial_weights() -> None:
    torch.manual_seed(9)
    a = build_trainable("test-tiny").state_dict()
    torch.manual_seed(9)
    b = build_trainable("test-tiny").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_incomplete_checkpoints_are_ignored_and_refused(tmp_path: Path) -> None:
    partial = tmp_path / "run" / "checkpoints" / "step_000005"
    partial.mkdir(parents=True)
    assert checkpoint_dirs(tmp_path / "run") == []
    with pytest.raises(CheckpointError, match=r"trainer_state\.json is missing"):
        load_checkpoint(partial, build_trainable("test-tiny"), None)


def test_max_wall_s_stops_early_with_a_checkpoint(tmp_path: Path) -> None:
    values = _config(tmp_path, steps=50) | {"max_wall_s": 1e-3, "checkpoint_every_steps": 100}
    result = train(make_train_config(values))
    assert result.stopped_early and result.step == 1
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["step_000001"]


def test_association_head_is_checkpointed_apart_and_resumed(tmp_path: Path) -> None:
    values = _config(tmp_path, steps=1) | {"loss": {"association": 1.0}}
    values["data"] = values["data"] | {"min_objects": 2, "max_objects": 2}
    first = train(make_train_config(values))
    assert first.checkpoint_dir is not None
    assert (first.checkpoint_dir / "association_head.safetensors").is_file()
    assert first.last_metrics["association"] > 0
    # The tracker file stays a pure tracker state dict: it loads strictly into the inference tracker.
    build_tracker("test-tiny", checkpoint=first.checkpoint_dir / "model.safetensors", device="cpu")
    second = train(make_train_config(values | {"steps": 2}))
    assert second.step == 2


def test_train_only_the_association_head_leaves_the_tracker_weights_untouched(tmp_path: Path) -> None:
    torch.manual_seed(1)
    init = tmp_path / "tracker.safetensors"
    save_safetensors(Tracker(get_config("test-tiny")), init)
    values = _config(tmp_path, steps=2) | {
        "train_only": "association_head",
        "init_checkpoint": str(init),
        "loss": {"association": 1.0},
    }
    values["data"] = values["data"] | {"min_objects": 2, "max_objects": 2}
    result = train(make_train_config(values))
    assert result.step == 2 and result.last_metrics["association"] > 0
    before = load_state_dict_file(init)
    for step_dir in checkpoint_dirs(tmp_path / "run"):
        after = load_state_dict_file(step_dir / "model.safetensors")
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)
    heads = [load_file(str(d / "association_head.safetensors")) for d in checkpoint_dirs(tmp_path / "run")]
    assert len(heads) == 2
    assert any(not torch.equal(heads[0][k], heads[1][k]) for k in heads[0])  # the head did learn


def test_train_only_the_head_needs_its_loss_and_tracker_weights(tmp_path: Path) -> None:
    values = _config(tmp_path, steps=1) | {"train_only": "association_head"}
    with pytest.raises(ConfigError, match=r"loss\.association > 0"):
        make_train_config(values)
    with pytest.raises(ConfigError, match="init_checkpoint is only used"):
        make_train_config(_config(tmp_path, steps=1) | {"init_checkpoint": "x.safetensors"})
    with pytest.raises(ConfigError, match="'test-tiny' ships none"):
        train(make_train_config(values | {"loss": {"association": 1.0}}))


def test_prompted_frame_curriculum_trains_single_frames_then_clips(tmp_path: Path) -> None:
    values = _config(tmp_path, steps=3) | {"prompted_frame_steps": 2}
    train(make_train_config(values))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # Tracked-frame IoU exists only once clips have more than the prompted frame.
    assert [math.isnan(r["mask_iou"]) for r in rows] == [True, True, False]
    assert not any(math.isnan(r["prompted_mask_iou"]) for r in rows)  # box-prompted frames are scored


def test_tied_decoder_attention_starts_with_equal_query_and_key_projections() -> None:
    torch.manual_seed(0)
    plain = build_trainable("test-tiny")
    torch.manual_seed(0)
    tied = build_trainable("test-tiny", decoder_qk_tie_scale=2.0)
    layer = tied.sam_mask_decoder.transformer.layers[0]
    for attn in (layer.cross_attn_token_to_image, layer.cross_attn_image_to_token):
        assert torch.equal(attn.q_proj.weight, attn.k_proj.weight)
    reference = plain.sam_mask_decoder.transformer.layers[0].cross_attn_token_to_image.q_proj.weight
    torch.testing.assert_close(layer.cross_attn_token_to_image.q_proj.weight, 2.0 * reference)
    # Self-attention and the rest of the tracker keep PyTorch's init.
    plain_layer = plain.sam_mask_decoder.transformer.layers[0]
    assert torch.equal(layer.self_attn.k_proj.weight, plain_layer.self_attn.k_proj.weight)


def test_a_batch_of_only_mask_prompted_single_frames_is_skipped_not_an_error(tmp_path: Path) -> None:
    values = _config(tmp_path, steps=2) | {"prompted_frame_steps": 1}
    values["data"] = SPEC.model_copy(update={"mask_prompt_fraction": 1.0}).model_dump()
    result = train(make_train_config(values))
    assert result.step == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["grad_norm"] == 0.0 and rows[1]["grad_norm"] > 0.0


def _staged(tmp_path: Path, name: str, steps: int, reset: bool = True) -> dict:
    stage = {
        "from_step": 2,
        "data": SPEC.model_copy(update={"clip_frames": 2, "max_stride": 3, "scene_frames": 12}).model_dump(),
        "optim": {"lr": 5e-4, "warmup_steps": 1},
        "reset_optimizer": reset,
    }
    return _config(tmp_path / name, steps) | {"stages": [stage], "keep_checkpoints": 10}


def _adam_steps(run: Path) -> set[int]:
    tracker = build_trainable("test-tiny")
    optimizer = make_optimizer(TrainingUnroll(tracker), OptimConfig())
    load_checkpoint(checkpoint_dirs(run)[-1], tracker, optimizer)
    return {int(s["step"]) for s in optimizer.state_dict()["state"].values()}


def test_a_stage_switches_the_schedule_and_can_restart_the_optimizer(tmp_path: Path) -> None:
    train(make_train_config(_staged(tmp_path, "reset", steps=3)))
    train(make_train_config(_staged(tmp_path, "kept", steps=3, reset=False)))
    assert _adam_steps(tmp_path / "reset" / "run") == {1}  # moments restarted at step 2
    assert _adam_steps(tmp_path / "kept" / "run") == {3}
    rows = [json.loads(line) for line in (tmp_path / "reset" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[2]["lr"] == pytest.approx(5e-4)  # the stage's own warm-up of 1 step, then its peak


def test_a_run_seeded_from_weights_at_a_resetting_stage_continues_bit_for_bit(tmp_path: Path) -> None:
    whole = make_train_config(_staged(tmp_path, "whole", steps=3))
    train(whole)
    weights = checkpoint_dirs(whole.output_dir)[1] / "model.safetensors"  # step 2, where the stage starts
    seeded = make_train_config(_staged(tmp_path, "seeded", steps=3))
    seed_checkpoint(seeded, weights, 2)
    assert train(seeded).step == 3
    a = load_file(str(checkpoint_dirs(whole.output_dir)[-1] / "model.safetensors"))
    b = load_file(str(checkpoint_dirs(seeded.output_dir)[-1] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    before = load_file(str(weights))
    assert any(not torch.equal(a[k], before[k]) for k in a)  # step 3 did train


def test_seeding_needs_an_empty_run_and_a_stage_that_restarts_the_optimizer(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    save_safetensors(build_trainable("test-tiny"), weights)
    with pytest.raises(ConfigError, match="reset_optimizer"):
        seed_checkpoint(make_train_config(_staged(tmp_path, "a", steps=3)), weights, 1)
    config = make_train_config(_staged(tmp_path, "b", steps=3))
    seed_checkpoint(config, weights, 2)
    with pytest.raises(ConfigError, match="already has checkpoints"):
        seed_checkpoint(config, weights, 2)
