"""The 2-D sine position encoding against its definition written out with math.sin/cos."""

from __future__ import annotations

import math

import pytest
import torch

from batchtrack.model.nn.position_encoding import SinePositionEncoding


def _reference(c: int, h: int, w: int, y: int, x: int) -> list[float]:
    freqs = c // 2
    out = []
    for pos, last in ((y + 1, h), (x + 1, w)):
        p = pos / (last + 1e-6) * 2 * math.pi
        for i in range(freqs):
            angle = p / 10000 ** (2 * (i // 2) / freqs)
            out.append(math.sin(angle) if i % 2 == 0 else math.cos(angle))
    return out


@pytest.mark.parametrize(("c", "h", "w"), [(16, 5, 7), (64, 4, 4)])
def test_encoding_matches_definition(c: int, h: int, w: int) -> None:
    pe = SinePositionEncoding(c)(torch.zeros(3, 2, h, w))
    assert pe.shape == (3, c, h, w)
    for y, x in [(0, 0), (h - 1, w - 1), (h // 2, 1)]:
        expected = torch.tensor(_reference(c, h, w, y, x))
        torch.testing.assert_close(pe[2, :, y, x], expected, atol=1e-5, rtol=0)


def test_encoding_follows_input_dtype_and_is_cached() -> None:
    enc = SinePositionEncoding(32)
    a = enc(torch.zeros(1, 1, 6, 6, dtype=torch.bfloat16))
    b = enc(torch.zeros(4, 1, 6, 6, dtype=torch.bfloat16))
    assert a.dtype == torch.bfloat16
    assert a.data_ptr() == b.data_ptr()  # same cached storage, broadcast over the batch
    assert enc(torch.zeros(1, 1, 6, 6)).dtype == torch.float32


def test_encoding_has_no_state_dict_entries() -> None:
    assert SinePositionEncoding(256).state_dict() == {}


def test_invalid_channel_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of 4, got 6"):
        SinePositionEncoding(6)
