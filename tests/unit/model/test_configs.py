"""The model-size registry: names, validation, and agreement with the official SAM 2.1 yaml files."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import yaml

from batchtrack.errors import ConfigError
from batchtrack.model.configs import TRACKER_CONFIGS, ImageEncoderConfig, TrackerConfig, get_config

_YAML_BY_NAME = {
    "sam2.1_hiera_tiny": "sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "sam2.1_hiera_l.yaml",
}
# Hiera constructor defaults, used where a yaml file leaves a trunk field out.
_HIERA_DEFAULTS = {
    "stages": [2, 3, 16, 3],
    "global_att_blocks": [12, 16, 20],
    "window_spec": [8, 4, 14, 7],
    "window_pos_embed_bkg_spatial_size": [14, 14],
}


def _official_yaml_dir() -> Path:
    # find_spec locates the oracle package without importing it (and without hydra).
    spec = importlib.util.find_spec("sam2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the official sam2 package is not installed; its yaml files are the reference")
    return Path(next(iter(spec.submodule_search_locations))) / "configs" / "sam2.1"


def test_registry_has_every_advertised_size() -> None:
    tests_only = {"test-tiny", "sam3-test-tiny", "sam3-test-parity"}
    assert set(TRACKER_CONFIGS) == {*_YAML_BY_NAME, "tiny-synthetic", "sam3", *tests_only}
    for name, config in TRACKER_CONFIGS.items():
        assert config.name == name


def test_unknown_name_raises_config_error_listing_known_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'sam4'.*sam2\.1_hiera_tiny.*sam3.*tiny-synthetic"):
        get_config("sam4")


def test_registry_and_configs_are_immutable() -> None:
    with pytest.raises(TypeError):
        TRACKER_CONFIGS["x"] = get_config("test-tiny")  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_config("test-tiny").image_size = 128  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(_YAML_BY_NAME))
def test_sam21_config_matches_official_yaml(name: str) -> None:
    raw = yaml.safe_load((_official_yaml_dir() / _YAML_BY_NAME[name]).read_text())["model"]
    trunk = {**_HIERA_DEFAULTS, **raw["image_encoder"]["trunk"]}
    neck = raw["image_encoder"]["neck"]
    ours = get_config(name)
    enc = ours.image_encoder
    assert enc.embed_dim == trunk["embed_dim"]
    assert enc.num_heads == trunk["num_heads"]
    assert list(enc.stages) == trunk["stages"]
    assert list(enc.global_att_blocks) == trunk["global_att_blocks"]
    assert list(enc.window_spec) == trunk["window_spec"]
    assert list(enc.window_pos_embed_bkg_spatial_size) == trunk["window_pos_embed_bkg_spatial_size"]
    assert list(enc.backbone_channel_list) == neck["backbone_channel_list"]
    assert enc.d_model == neck["d_model"]
    assert list(enc.fpn_top_down_levels) == neck["fpn_top_down_levels"]
    assert enc.scalp == raw["image_encoder"]["scalp"]
    assert ours.image_size == raw["image_size"]
    assert ours.num_maskmem == raw["num_maskmem"]
    assert ours.sigmoid_scale_for_mem_enc == raw["sigmoid_scale_for_mem_enc"]
    assert ours.sigmoid_bias_for_mem_enc == raw["sigmoid_bias_for_mem_enc"]
    assert ours.memory_attention_layers == raw["memory_attention"]["num_layers"]
    assert ours.mem_dim == raw["memory_encoder"]["out_dim"]
    assert ours.memory_attention_dim_feedforward == raw["memory_attention"]["layer"]["dim_feedforward"]
    assert ours.multimask_min_pt_num == raw["multimask_min_pt_num"]
    assert ours.multimask_max_pt_num == raw["multimask_max_pt_num"]


def test_image_size_that_windows_cannot_tile_is_rejected() -> None:
    encoder = get_config("sam2.1_hiera_tiny").image_encoder
    with pytest.raises(ConfigError, match=r"image_size must be a positive multiple of 32.*got 1000"):
        TrackerConfig(name="bad", image_encoder=encoder, image_size=1000)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stages": (1, 2, 3)}, "stages must be 4 positive block counts"),
        ({"global_att_blocks": (99,)}, r"global_att_blocks \[99\] are outside 0\.\.11"),
        ({"num_heads": 5}, "embed_dim 96 is not divisible by num_heads 5"),
    ],
)
def test_invalid_image_encoder_fields_are_named(changes: dict[str, object], message: str) -> None:
    base = dataclasses.asdict(get_config("sam2.1_hiera_tiny").image_encoder)
    with pytest.raises(ConfigError, match=message):
        ImageEncoderConfig(**{**base, **changes})
