"""SAM 3 in batchtrack.model: config checks, the key table both ways, strict loading by part, tracking."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from batchtrack.errors import CheckpointError, ConfigError
from batchtrack.model.configs import get_config
from batchtrack.model.loading.build import build_tracker, new_tracker
from batchtrack.model.loading.checkpoint import our_key_to_sam3, sam3_key_to_ours, sam3_part
from batchtrack.model.sam3.dual_neck import Sam3ImageEncoder
from batchtrack.model.tracker.tracker import Tracker
from batchtrack.model.types import Prompt


def _meta_state_dict(tracker: Tracker) -> dict[str, torch.Tensor]:
    return {our_key_to_sam3(k): v.clone() for k, v in tracker.state_dict().items()}


@pytest.fixture(scope="module")
def tiny() -> Tracker:
    return build_tracker("sam3-test-tiny", device="cpu")


def test_full_sam3_keys_map_to_meta_names_and_back() -> None:
    with torch.device("meta"):
        model = new_tracker("sam3")
    keys = list(model.state_dict())
    meta = [our_key_to_sam3(k) for k in keys]
    assert "detector.backbone.vision_backbone.trunk.blocks.31.attn.freqs_cis" in meta
    assert "tracker.transformer.encoder.layers.3.cross_attn_image.k_proj.weight" in meta
    assert "tracker.maskmem_backbone.mask_downsampler.encoder.12.weight" in meta
    assert "tracker.sam_mask_decoder.transformer.layers.1.mlp.lin2.bias" in meta
    assert [sam3_key_to_ours(k) for k in meta] == keys
    assert {sam3_part(k) for k in meta} == {"vision", "tracker"}
    assert len(keys) == 773  # 464 vision + 309 tracker keys of Meta's sam3.pt (sam3.md)


def test_a_partial_detector_is_named_unless_parts_leaves_the_detector_out(tiny: Tracker, tmp_path: Path) -> None:
    sd = _meta_state_dict(tiny)
    sd["detector.transformer.decoder.presence_token.weight"] = torch.zeros(1, 256)
    path = tmp_path / "sam3.pt"
    torch.save({"model": sd}, path)
    # Read whole, the file must hold the detector (text encoder + head): its missing keys are named.
    with pytest.raises(CheckpointError, match=r"parts=\('vision', 'tracker'\).*missing keys: detector\."):
        build_tracker("sam3-test-tiny", checkpoint=path, device="cpu")
    loaded = build_tracker("sam3-test-tiny", checkpoint=path, device="cpu", parts=("vision", "tracker"))
    assert torch.equal(loaded.no_obj_ptr, tiny.no_obj_ptr)


def test_missing_and_mis_shaped_sam3_keys_are_named_in_meta_names(tiny: Tracker, tmp_path: Path) -> None:
    sd = _meta_state_dict(tiny)
    del sd["tracker.maskmem_backbone.out_proj.bias"]
    sd["detector.backbone.vision_backbone.trunk.pos_embed"] = torch.zeros(1, 5, 64)
    sd["tracker.bogus.weight"] = torch.zeros(1)
    path = tmp_path / "sam3.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    pattern = r"missing keys: tracker.maskmem_backbone.out_proj.bias.*unexpected keys: tracker.bogus.weight.*pos_embed"
    with pytest.raises(CheckpointError, match=pattern):
        build_tracker("sam3-test-tiny", checkpoint=path, device="cpu", parts=("vision", "tracker"))


def test_parts_that_leave_a_built_part_unloaded_is_an_error(tiny: Tracker, tmp_path: Path) -> None:
    path = tmp_path / "sam3.pt"
    torch.save({"model": _meta_state_dict(tiny)}, path)
    with pytest.raises(CheckpointError, match=r"keys unloaded: detector.backbone.vision_backbone"):
        build_tracker("sam3-test-tiny", checkpoint=path, device="cpu", parts=("tracker",))
    with pytest.raises(ConfigError, match="parts= applies to SAM 3"):
        build_tracker("test-tiny", device="cpu", parts=("tracker",))


def test_sam3_image_size_must_hold_whole_windows() -> None:
    with pytest.raises(ConfigError, match=r"image_size must be a positive multiple of 336 .* got 1024"):
        replace(get_config("sam3"), image_size=1024)
    assert replace(get_config("sam3"), image_size=336).feature_size == 24


def test_sam3_tracks_points_boxes_and_masks_with_288_style_low_res_grid(tiny: Tracker) -> None:
    rng = np.random.default_rng(0)
    frames = [(i, rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)) for i in range(4)]
    mask = np.zeros((60, 80), dtype=bool)
    mask[10:30, 20:50] = True
    prompts = [
        Prompt(0, 1, points=np.array([[30.0, 20.0]]), point_labels=np.array([1])),
        Prompt(0, 2, box=np.array([5.0, 5.0, 40.0, 40.0])),
        Prompt(1, 3, mask=mask),
    ]
    results = list(tiny.track(frames, prompts))
    assert [r.object_ids for r in results] == [[1, 2], [1, 2, 3], [1, 2, 3], [1, 2, 3]]
    assert results[1].mask_logits.shape == (3, 60, 80)
    assert results[-1].object_pointers.shape == (3, 256)
    assert tiny.config.feature_size == 8  # 112 px / patch 14; low-res masks are 4 x 8 = 32


def test_rope_tables_of_another_grid_are_rebuilt_for_the_configured_image_size(tiny: Tracker, tmp_path: Path) -> None:
    """A sam3.pt saved at one image size loads at another: the trunk's `freqs_cis` (not learned; a global
    block's table has one row per grid token) are the ones built for the configured grid, everything else is
    read from the file; a table of another head dimension is still a named mismatch."""
    from batchtrack.model.configs import tracker_config

    path = tmp_path / "sam3.pt"
    sd = _meta_state_dict(tiny)
    torch.save({"model": sd}, path)
    config = tracker_config("sam3-test-tiny", image_size=224)  # grid 16 instead of 8
    loaded = build_tracker(config, checkpoint=path, device="cpu", parts=("vision", "tracker"))
    fresh = build_tracker(config, device="cpu", random_weights=True)
    ours = {our_key_to_sam3(k): v for k, v in loaded.state_dict().items()}
    tables = [k for k in ours if k.endswith(".attn.freqs_cis")]
    regridded = [k for k in tables if ours[k].shape != sd[k].shape]
    assert regridded, "the global blocks' tables depend on the grid"
    for k in tables:
        assert torch.equal(ours[k], fresh.state_dict()[sam3_key_to_ours(k)]), k
    for k, v in sd.items():
        if k not in regridded:
            assert torch.equal(ours[k], v), k

    bad = dict(sd)
    bad[regridded[0]] = torch.zeros(sd[regridded[0]].shape[0], 3, dtype=torch.complex64)
    torch.save({"model": bad}, path)
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: .*attn\.freqs_cis"):
        build_tracker(config, checkpoint=path, device="cpu", parts=("vision", "tracker"))


def test_a_sam3_tracker_takes_its_image_encoder_from_the_builder() -> None:
    with torch.device("meta"), pytest.raises(ConfigError, match=r"PE ViT .*batchtrack\.build_tracker"):
        Tracker(get_config("sam3"))
    with torch.device("meta"):
        assert isinstance(new_tracker("sam3").image_encoder, Sam3ImageEncoder)
