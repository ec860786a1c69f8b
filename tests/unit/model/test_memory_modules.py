"""Memory attention's axial RoPE, object-pointer tokens and the decoder's mask choice on small tensors."""

from __future__ import annotations

import math

import torch

from batchtrack.model.tracker.mask_decoder import DecoderOutput, choose_mask
from batchtrack.model.tracker.memory_attention import AxialRope, RoPEAttention
from batchtrack.model.tracker.object_pointer import gate_pointer, pointer_tokens, sine_1d


def test_rope_scores_depend_only_on_the_2d_offset() -> None:
    rope = AxialRope(head_dim=16, theta=100.0)
    cos, sin = rope.table(4, 5, torch.device("cpu"))  # 4 rows x 5 columns = 20 tokens
    q = torch.randn(16).expand(1, 1, 20, 16)
    k = torch.randn(16).expand(1, 1, 20, 16)
    qr, kr = AxialRope.rotate(q, cos, sin)[0, 0], AxialRope.rotate(k, cos, sin)[0, 0]

    def token(y: int, x: int) -> int:
        return y * 5 + x

    # Same (dy, dx) between query and key -> same score, wherever the pair sits on the grid.
    a = qr[token(1, 1)] @ kr[token(2, 3)]
    b = qr[token(2, 2)] @ kr[token(3, 4)]
    c = qr[token(1, 1)] @ kr[token(3, 2)]
    torch.testing.assert_close(a, b)
    assert not torch.isclose(a, c)
    # A rotation keeps the norm.
    torch.testing.assert_close(qr.norm(dim=-1), q[0, 0].norm(dim=-1))


def test_rope_repeats_the_table_for_every_memory_frame() -> None:
    rope = AxialRope(head_dim=8, theta=10.0)
    cos, sin = rope.table(2, 2, torch.device("cpu"))
    frame = torch.randn(1, 1, 4, 8)
    two_frames = AxialRope.rotate(torch.cat([frame, frame], dim=2), cos, sin)
    torch.testing.assert_close(two_frames[:, :, :4], two_frames[:, :, 4:])


def test_pointer_tokens_are_not_rotated() -> None:
    torch.manual_seed(0)
    attn = RoPEAttention(dim=16, num_heads=1, rope_theta=10.0, kv_in_dim=8)
    q = torch.randn(1, 4, 16)
    spatial, pointer = torch.randn(1, 4, 8), torch.randn(1, 2, 8)
    # With the pointer tokens excluded from RoPE, swapping them gives the same output (no position).
    out1 = attn(q, torch.cat([spatial, pointer], 1), torch.cat([spatial, pointer], 1), (2, 2), num_k_exclude_rope=2)
    swapped = pointer.flip(1)
    out2 = attn(q, torch.cat([spatial, swapped], 1), torch.cat([spatial, swapped], 1), (2, 2), num_k_exclude_rope=2)
    torch.testing.assert_close(out1, out2)


def test_sine_1d_is_sin_half_then_cos_half() -> None:
    pe = sine_1d(torch.tensor([0.5]), dim=8)
    freqs = [10000 ** (2 * (i // 2) / 4) for i in range(4)]
    want = [math.sin(0.5 / f) for f in freqs] + [math.cos(0.5 / f) for f in freqs]
    torch.testing.assert_close(pe[0], torch.tensor(want))


def test_pointer_splits_into_consecutive_memory_width_tokens() -> None:
    pointers = torch.arange(2 * 3 * 8, dtype=torch.float32).reshape(2, 3, 8)  # B=2, P=3, C=8
    proj = torch.nn.Linear(8, 4)
    tokens, pos = pointer_tokens(pointers, [1, 2, 5], max_offset=15, tpos_proj=proj, mem_dim=4)
    assert tokens.shape == (2, 6, 4) and pos.shape == (2, 6, 4)
    torch.testing.assert_close(tokens[1, 2], pointers[1, 1, :4])
    torch.testing.assert_close(tokens[1, 3], pointers[1, 1, 4:])
    torch.testing.assert_close(pos[0, 2], pos[0, 3])  # the two halves of a pointer share its position
    torch.testing.assert_close(pos[0, 4], proj(sine_1d(torch.tensor([5 / 15]), 8))[0])


def test_gate_pointer_replaces_only_absent_objects() -> None:
    ptr, no_obj = torch.ones(2, 4), torch.full((1, 4), 7.0)
    out = gate_pointer(ptr, torch.tensor([[True], [False]]), no_obj)
    assert out[0].tolist() == [1.0] * 4 and out[1].tolist() == [7.0] * 4


def _decoder_output(masks: torch.Tensor, iou: list[float]) -> DecoderOutput:
    return DecoderOutput(
        masks=masks,
        iou=torch.tensor([iou]),
        mask_tokens=torch.arange(4.0).reshape(1, 4, 1).expand(1, 4, 3),
        object_score_logits=torch.ones(1, 1),
    )


def test_multimask_picks_the_best_of_tokens_1_to_3_and_its_token() -> None:
    masks = torch.arange(4.0).reshape(1, 4, 1, 1).expand(1, 4, 2, 2)
    chosen = choose_mask(_decoder_output(masks, [0.99, 0.2, 0.9, 0.5]), True, 0.05, 0.98)
    assert chosen.low_res[0, 0, 0, 0] == 2.0 and chosen.iou[0] == 0.9 and chosen.token[0, 0] == 2.0


def test_single_mask_falls_back_to_best_multimask_when_unstable_but_keeps_token_0() -> None:
    stable = torch.full((1, 4, 2, 2), 5.0)
    chosen = choose_mask(_decoder_output(stable, [0.1, 0.2, 0.9, 0.5]), False, 0.05, 0.98)
    assert chosen.iou[0] == 0.1 and chosen.token[0, 0] == 0.0
    unstable = stable.clone()
    unstable[0, 0] = torch.tensor([[0.01, 0.01], [5.0, 5.0]])  # half the pixels sit inside +-delta
    unstable[0, 2] = -3.0
    chosen = choose_mask(_decoder_output(unstable, [0.1, 0.2, 0.9, 0.5]), False, 0.05, 0.98)
    assert chosen.iou[0] == 0.9 and torch.all(chosen.low_res == -3.0) and chosen.token[0, 0] == 0.0
