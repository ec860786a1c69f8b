"""Hiera trunk + FPN neck: output geometry, state-dict compatibility with SAM 2.1, batching, preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from batchtrack.model.configs import get_config
from batchtrack.model.nn.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_frames
from batchtrack.model.tracker.image_encoder import ImageEncoder

# Copied from the SAM 2.1 reference notes into the repo so a clean clone runs this test.
REFERENCE_STATE_DICT = Path(__file__).resolve().parents[2] / "data" / "sam21_tiny_state_dict.txt"
# sam-trackers.md §1.1: total parameters of each SAM 2.1 size (random init), and the state-dict numel outside
# the image encoder (11,743,618, the same for every size) which includes the prompt encoder's 2x128 buffer.
SAM21_TOTAL_PARAMS = {
    "sam2.1_hiera_tiny": 38_962_498,
    "sam2.1_hiera_small": 46_060_354,
    "sam2.1_hiera_base_plus": 80_850_178,
    "sam2.1_hiera_large": 224_446_642,
}
NON_IMAGE_ENCODER_PARAMS = 11_743_618 - 2 * 128


def _reference_image_encoder_entries() -> list[tuple[str, tuple[int, ...]]]:
    entries = []
    for line in REFERENCE_STATE_DICT.read_text().splitlines():
        if line.startswith("image_encoder."):
            key, shape, _ = line.split("\t")
            entries.append((key[len("image_encoder.") :], tuple(int(s) for s in shape.strip("()").split(",") if s)))
    return entries


def _meta_encoder(name: str) -> ImageEncoder:
    with torch.device("meta"):  # shapes only: no memory, no init time
        return ImageEncoder(get_config(name).image_encoder)


def test_tiny_state_dict_keys_and_shapes_equal_official_listing_in_order() -> None:
    ours = [(k, tuple(v.shape)) for k, v in _meta_encoder("sam2.1_hiera_tiny").state_dict().items()]
    assert ours == _reference_image_encoder_entries()


@pytest.mark.parametrize("name", sorted(SAM21_TOTAL_PARAMS))
def test_parameter_count_matches_published_total(name: str) -> None:
    count = sum(p.numel() for p in _meta_encoder(name).parameters())
    assert count == SAM21_TOTAL_PARAMS[name] - NON_IMAGE_ENCODER_PARAMS


def test_tiny_block_table_has_window_lag_and_qpool_at_stage_transitions() -> None:
    # sam-trackers.md §1.3, verified on the official code: w8, w8(qpool 96->192), w4, w4(qpool 192->384),
    # w14, g, w14, g, w14, g, w14(qpool 384->768), w7.
    expected = [
        (8, False, 96, 96),
        (8, True, 96, 192),
        (4, False, 192, 192),
        (4, True, 192, 384),
        (14, False, 384, 384),
        (0, False, 384, 384),
        (14, False, 384, 384),
        (0, False, 384, 384),
        (14, False, 384, 384),
        (0, False, 384, 384),
        (14, True, 384, 768),
        (7, False, 768, 768),
    ]
    blocks = _meta_encoder("sam2.1_hiera_tiny").trunk.blocks
    assert [(b.window_size, b.pool, b.dim, b.dim_out) for b in blocks] == expected


def _random_encoder(name: str, seed: int = 0) -> ImageEncoder:
    torch.manual_seed(seed)
    encoder = ImageEncoder(get_config(name).image_encoder).eval()
    with torch.no_grad():
        # Default init leaves pos embeddings at zero; perturb everything so each path matters.
        for p in encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return encoder


def test_outputs_are_three_levels_at_strides_4_8_16_with_matching_position_encodings() -> None:
    config = get_config("test-tiny")
    size = config.image_size
    with torch.no_grad():
        features = _random_encoder("test-tiny")(torch.randn(2, 3, size, size))
    assert [tuple(f.shape) for f in features.backbone_fpn] == [(2, 256, size // s, size // s) for s in (4, 8, 16)]
    assert [tuple(p.shape) for p in features.vision_pos_enc] == [tuple(f.shape) for f in features.backbone_fpn]
    assert features.vision_features is features.backbone_fpn[-1]
    assert size // config.backbone_stride == features.vision_features.shape[-1]


def test_batched_encoding_equals_frame_by_frame() -> None:
    encoder = _random_encoder("test-tiny")
    size = get_config("test-tiny").image_size
    frames = torch.randn(3, 3, size, size)
    with torch.no_grad():
        batched = encoder(frames)
        single = [encoder(frames[i : i + 1]) for i in range(3)]
    for level, feature in enumerate(batched.backbone_fpn):
        expected = torch.cat([s.backbone_fpn[level] for s in single])
        torch.testing.assert_close(feature, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.select(1).vision_features, single[1].vision_features, atol=1e-5, rtol=1e-5)


def test_top_down_fusion_reaches_stride_16_only() -> None:
    # fpn_top_down_levels (2, 3): the stride-32 map feeds the stride-16 output, but strides 4 and 8 are lateral
    # only. Changing just the stride-32 trunk output must therefore move level 2 and leave levels 0-1 unchanged.
    encoder = _random_encoder("test-tiny")
    size = get_config("test-tiny").image_size
    with torch.no_grad():
        trunk_out = encoder.trunk(torch.randn(1, 3, size, size))
        base, _ = encoder.neck(trunk_out)
        moved, _ = encoder.neck([*trunk_out[:3], trunk_out[3] + 1.0])
    torch.testing.assert_close(moved[0], base[0])
    torch.testing.assert_close(moved[1], base[1])
    assert not torch.allclose(moved[2], base[2])


def test_wrong_input_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"expected images shaped \(B, 3, S, S\), got \(64, 64, 3\)"):
        _random_encoder("test-tiny")(torch.zeros(64, 64, 3))


def test_preprocess_normalises_a_flat_frame_with_imagenet_statistics() -> None:
    colour = np.array([200, 100, 30], dtype=np.uint8)
    frames = np.broadcast_to(colour, (2, 48, 80, 3)).copy()
    out = preprocess_frames(frames, 64)
    assert out.shape == (2, 3, 64, 64)
    assert out.dtype == torch.float32
    for c in range(3):
        expected = (colour[c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(out[:, c], torch.full((2, 64, 64), expected, dtype=torch.float32))


def test_preprocess_accepts_numpy_torch_and_single_frames_alike() -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 30, 50, 3), dtype=np.uint8)
    from_numpy = preprocess_frames(frames, 32)
    torch.testing.assert_close(preprocess_frames(torch.from_numpy(frames), 32), from_numpy)
    torch.testing.assert_close(preprocess_frames(frames[1], 32), from_numpy[1:])


def test_preprocess_rejects_float_frames() -> None:
    with pytest.raises(ValueError, match=r"expected uint8 RGB frames.*torch\.float32"):
        preprocess_frames(torch.zeros(1, 8, 8, 3), 32)
