"""SAM 3's text encoder at a tiny size: output layout, padding mask, causality, configs and strict loading."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from batchtrack.errors import CheckpointError, ConfigError
from batchtrack.model.loading.checkpoint import SAM3_TEXT_ENCODER_PREFIX, load_sam3_text_encoder
from batchtrack.model.sam3.text.text_encoder import (
    SAM3_TEXT_ENCODER,
    TINY_TEXT_ENCODER,
    TextEncoder,
    TextEncoderConfig,
    TextFeatures,
)
from batchtrack.model.sam3.text.tokenizer import default_tokenizer

L = TINY_TEXT_ENCODER.context_length
PHRASES = ["dog", "a red car on the road", "person"]


def _encoder(seed: int = 0) -> TextEncoder:
    torch.manual_seed(seed)
    encoder = TextEncoder(TINY_TEXT_ENCODER).eval()
    with torch.no_grad():
        for p in encoder.parameters():
            p.normal_(std=0.2)
    return encoder


def _meta_state(encoder: TextEncoder) -> dict[str, torch.Tensor]:
    return {SAM3_TEXT_ENCODER_PREFIX + k: v.clone() for k, v in encoder.state_dict().items()}


@torch.no_grad()
def test_features_are_sequence_first_after_the_resizer() -> None:
    out = _encoder().encode_text(PHRASES)
    assert isinstance(out, TextFeatures)
    assert out.features.shape == (L, len(PHRASES), TINY_TEXT_ENCODER.d_model)
    assert out.token_embeddings.shape == (L, len(PHRASES), TINY_TEXT_ENCODER.width)
    assert out.padding_mask.shape == out.token_ids.shape == (len(PHRASES), L)
    assert out.features.dtype == torch.float32 and out.padding_mask.dtype == torch.bool
    assert torch.isfinite(out.features).all() and out.features.std() > 0.1


@torch.no_grad()
def test_padding_mask_is_true_exactly_where_ids_are_zero() -> None:
    out = _encoder().encode_text(PHRASES)
    assert torch.equal(out.padding_mask, out.token_ids == 0)
    assert (~out.padding_mask).sum(dim=1).tolist() == [3, 8, 3]  # start + tokens + end


@torch.no_grad()
def test_token_embeddings_are_the_raw_embedding_rows() -> None:
    encoder = _encoder()
    out = encoder.encode_text(PHRASES)
    assert torch.equal(out.token_embeddings[1, 0], encoder.encoder.token_embedding.weight[out.token_ids[0, 1]])


@torch.no_grad()
def test_a_phrase_is_encoded_the_same_alone_or_in_a_batch() -> None:
    encoder = _encoder()
    alone = encoder.encode_text(["dog"]).features[:, 0]
    batched = encoder.encode_text(PHRASES).features[:, 0]
    torch.testing.assert_close(alone, batched, rtol=0, atol=1e-6)


@torch.no_grad()
def test_attention_is_causal_so_later_tokens_do_not_change_earlier_ones() -> None:
    encoder = _encoder()
    ids = default_tokenizer()(["a red car", "a red dog"])
    out = encoder(ids).features
    torch.testing.assert_close(out[:3, 0], out[:3, 1], rtol=0, atol=1e-6)  # start, "a", "red"
    assert (out[3, 0] - out[3, 1]).abs().max() > 1e-3


@torch.no_grad()
def test_shorter_token_sequences_use_the_first_positions() -> None:
    encoder = _encoder()
    ids = default_tokenizer()(PHRASES)
    short = encoder(ids[:, :8]).features
    torch.testing.assert_close(short, encoder(ids).features[:8], rtol=0, atol=1e-6)


def test_bad_token_ids_are_rejected() -> None:
    encoder = _encoder()
    with pytest.raises(ValueError, match=f"33 tokens; the text encoder holds {L}"):
        encoder(torch.zeros(1, L + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, L\) integer tensor"):
        encoder(torch.zeros(1, 4))
    with pytest.raises(TypeError, match="sequence of phrases"):
        encoder.encode_text("dog")


@torch.no_grad()
def test_clips_pooled_projection_is_loaded_but_unused() -> None:
    encoder = _encoder()
    before = encoder.encode_text(PHRASES).features
    encoder.encoder.text_projection.add_(1.0)
    assert torch.equal(encoder.encode_text(PHRASES).features, before)


def test_default_config_is_sam3s_text_encoder() -> None:
    config = TextEncoderConfig()
    assert config == SAM3_TEXT_ENCODER
    assert (config.width, config.heads, config.layers) == (1024, 16, 24)
    assert (config.context_length, config.vocab_size, config.d_model) == (32, 49408, 256)
    with torch.device("meta"):
        encoder = TextEncoder(config)
    # 353.7 M parameters and 295 keys, as the official VETextEncoder (checked against it in tests/parity).
    assert sum(p.numel() for p in encoder.parameters()) == 353_724_672
    assert len(encoder.state_dict()) == 295


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"heads": 3}, "width 32 is not divisible by heads 3"),
        ({"layers": 0}, "sizes must be positive"),
        ({"context_length": 1}, "context_length must be at least 2"),
        ({"mlp_ratio": 0.0}, "mlp_ratio must be positive"),
    ],
)
def test_invalid_configs_are_rejected(change: dict[str, int | float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        replace(TINY_TEXT_ENCODER, **change)


@torch.no_grad()
def test_metas_keys_load_by_prefix_strip_and_other_parts_are_ignored() -> None:
    source, target = _encoder(1), _encoder(2)
    state = _meta_state(source)
    state["detector.transformer.encoder.layers.0.norm1.weight"] = torch.ones(4)
    state["tracker.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 64)
    load_sam3_text_encoder(target, state, "sam3.pt")
    assert torch.equal(target.encode_text(PHRASES).features, source.encode_text(PHRASES).features)


def test_missing_unexpected_and_misshaped_text_keys_are_named() -> None:
    state = _meta_state(_encoder(1))
    del state[SAM3_TEXT_ENCODER_PREFIX + "resizer.bias"]
    state[SAM3_TEXT_ENCODER_PREFIX + "encoder.extra"] = torch.zeros(1)
    state[SAM3_TEXT_ENCODER_PREFIX + "encoder.positional_embedding"] = torch.zeros(77, TINY_TEXT_ENCODER.width)
    target = _encoder(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match="does not match SAM 3's text encoder") as info:
        load_sam3_text_encoder(target, state, "sam3.pt")
    assert info.value.missing == [SAM3_TEXT_ENCODER_PREFIX + "resizer.bias"]
    assert info.value.unexpected == [SAM3_TEXT_ENCODER_PREFIX + "encoder.extra"]
    assert info.value.mismatched == [
        f"{SAM3_TEXT_ENCODER_PREFIX}encoder.positional_embedding (file (77, 32), model (32, 32))"
    ]
    # Nothing was copied before the check failed.
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_a_checkpoint_without_the_text_encoder_is_named() -> None:
    with pytest.raises(CheckpointError, match=r"31 missing keys: detector\.backbone\.language_backbone\."):
        load_sam3_text_encoder(_encoder(), {"tracker.no_obj_ptr": torch.zeros(1, 256)}, "sam3.pt")
