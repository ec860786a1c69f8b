"""COCO RLE: round trips, byte-identical counts with pycocotools, area and bbox."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from batchtrack.io.rle import decode_mask, encode_mask, mask_area, mask_bbox


def _coco_counts(mask: np.ndarray) -> str:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def _random_masks() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    shapes = [(1, 1), (1, 9), (9, 1), (13, 17), (48, 64), (101, 37)]
    return [rng.random(shape) < density for shape in shapes for density in (0.02, 0.5, 0.97)]


def _edge_masks() -> dict[str, np.ndarray]:
    single = np.zeros((7, 5), bool)
    single[3, 2] = True
    corner_first = np.zeros((6, 9), bool)
    corner_first[0, 0] = True
    corner_last = np.zeros((6, 9), bool)
    corner_last[-1, -1] = True
    column = np.zeros((11, 4), bool)
    column[:, 1] = True
    row = np.zeros((4, 11), bool)
    row[2, :] = True
    checker = (np.indices((9, 15)).sum(axis=0) % 2).astype(bool)
    return {
        "empty": np.zeros((10, 12), bool),
        "full": np.ones((10, 12), bool),
        "single pixel": single,
        "first pixel": corner_first,
        "last pixel": corner_last,
        "one column": column,
        "one row": row,
        "checkerboard": checker,
        "1x1 on": np.ones((1, 1), bool),
        "1x1 off": np.zeros((1, 1), bool),
        "large run lengths": np.pad(np.ones((300, 400), bool), ((200, 10), (5, 700))),
    }


ALL_MASKS = {**{f"random {i}": m for i, m in enumerate(_random_masks())}, **_edge_masks()}


@pytest.mark.parametrize("name", sorted(ALL_MASKS))
def test_counts_are_byte_identical_to_pycocotools(name: str) -> None:
    mask = ALL_MASKS[name]

    assert encode_mask(mask) == _coco_counts(mask)


@pytest.mark.parametrize("name", sorted(ALL_MASKS))
def test_decode_inverts_encode(name: str) -> None:
    mask = ALL_MASKS[name]

    decoded = decode_mask(encode_mask(mask), *mask.shape)

    assert decoded.dtype == np.bool_
    assert decoded.shape == mask.shape
    np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize("name", sorted(ALL_MASKS))
def test_decode_reads_what_pycocotools_wrote(name: str) -> None:
    mask = ALL_MASKS[name]
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))

    np.testing.assert_array_equal(decode_mask(rle["counts"].decode("ascii"), *mask.shape), mask)


@pytest.mark.parametrize("name", sorted(ALL_MASKS))
def test_area_and_bbox_agree_with_numpy_and_pycocotools(name: str) -> None:
    mask = ALL_MASKS[name]
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    ys, xs = np.nonzero(mask)
    expected_bbox = (
        (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))
        if xs.size
        else (0.0, 0.0, 0.0, 0.0)
    )

    assert mask_area(mask) == int(mask.sum()) == int(coco_mask.area(rle))
    assert mask_bbox(mask) == expected_bbox
    assert mask_bbox(mask) == tuple(float(v) for v in coco_mask.toBbox(rle))


def test_any_nonzero_value_counts_as_inside() -> None:
    boolean = ALL_MASKS["random 4"]
    as_uint8 = boolean.astype(np.uint8) * 255
    as_float = boolean.astype(np.float32) * 0.5

    assert encode_mask(as_uint8) == encode_mask(as_float) == encode_mask(boolean)
    assert mask_area(as_uint8) == mask_area(boolean)
    assert mask_bbox(as_float) == mask_bbox(boolean)


def test_memory_layout_does_not_change_the_counts() -> None:
    big = np.random.default_rng(3).random((40, 60)) < 0.3
    view = big[::2, 5:47]  # neither C- nor Fortran-contiguous

    assert encode_mask(view) == encode_mask(np.ascontiguousarray(view)) == encode_mask(np.asfortranarray(view))
    assert encode_mask(view) == _coco_counts(np.ascontiguousarray(view))


def test_zero_sized_masks_round_trip() -> None:
    for shape in [(0, 4), (4, 0)]:
        mask = np.zeros(shape, bool)
        assert decode_mask(encode_mask(mask), *shape).shape == shape
        assert mask_area(mask) == 0
        assert mask_bbox(mask) == (0.0, 0.0, 0.0, 0.0)


def test_counts_that_do_not_cover_the_mask_are_rejected() -> None:
    counts = encode_mask(np.ones((5, 7), bool))

    with pytest.raises(ValueError, match=r"RLE counts cover 35 pixels but the mask is 6x7 = 42"):
        decode_mask(counts, 6, 7)
    with pytest.raises(ValueError, match=r"cover 0 pixels but the mask is 5x7"):
        decode_mask("0", 5, 7)


def test_malformed_counts_strings_are_rejected() -> None:
    with pytest.raises(ValueError, match="invalid character"):
        decode_mask("1 3", 2, 2)
    with pytest.raises(ValueError, match="ends inside a run length"):
        decode_mask("1o", 2, 2)  # 'o' sets the continuation bit and nothing follows


@pytest.mark.parametrize("function", [encode_mask, mask_area, mask_bbox])
def test_masks_must_be_two_dimensional(function: object) -> None:
    with pytest.raises(ValueError, match=r"expects an \(H, W\) mask, got an array of shape \(2, 3, 4\)"):
        function(np.zeros((2, 3, 4), bool))  # type: ignore[operator]
