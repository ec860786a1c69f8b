"""COCO run-length encoding of binary masks, byte-compatible with pycocotools.

The `rle` column of every output table holds the compressed `counts` string that
`pycocotools.mask.encode` produces for the same mask; `size` is stored beside it as
separate `height` and `width` columns, so only the string crosses module boundaries.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask

__all__ = ["decode_mask", "encode_mask", "mask_area", "mask_bbox"]


def _as_2d(mask: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{what} expects an (H, W) mask, got an array of shape {array.shape}")
    return array


def encode_mask(mask: np.ndarray) -> str:
    """Encode an (H, W) mask (nonzero = inside) as a COCO compressed counts string.

    >>> encode_mask(np.array([[0, 1], [1, 1]], dtype=bool))
    '13'
    """
    array = _as_2d(mask, "encode_mask")
    # pycocotools walks the buffer column-major and only accepts uint8 in Fortran order.
    fortran = np.asfortranarray(array != 0, dtype=np.uint8)
    counts = coco_mask.encode(fortran)["counts"]
    return counts.decode("ascii")


def _runs(counts: str) -> list[int]:
    """Run lengths of a compressed counts string (COCO's 5-bit varints, deltas from the run two back).

    Parsed here rather than by pycocotools.mask.decode, which does not check that the runs cover the
    mask exactly (when they fall short it returns uninitialised memory).
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value = 0
        shift = 0
        more = True
        while more:
            if position >= len(counts):
                raise ValueError(f"RLE counts string ends inside a run length: {counts!r}")
            chunk = ord(counts[position]) - 48
            if not 0 <= chunk < 64:
                raise ValueError(f"RLE counts string has an invalid character {counts[position]!r}")
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"RLE counts string decodes to a negative run length ({value})")
        runs.append(value)
    return runs


def decode_mask(counts: str, height: int, width: int) -> np.ndarray:
    """Decode a COCO compressed counts string into an (height, width) bool mask.

    >>> decode_mask("13", 2, 2).astype(int).tolist()
    [[0, 1], [1, 1]]
    """
    if height < 0 or width < 0:
        raise ValueError(f"decode_mask needs a non-negative size, got height={height} width={width}")
    runs = _runs(counts)
    total = sum(runs)
    if total != height * width:
        raise ValueError(
            f"RLE counts cover {total} pixels but the mask is {height}x{width} = {height * width}: {counts[:40]!r}"
        )
    # Runs alternate outside/inside, starting outside, over the pixels in column-major order.
    values = np.arange(len(runs)) % 2 == 1
    column_major = np.repeat(values, runs)  # (W * H,)
    return np.ascontiguousarray(column_major.reshape(width, height).T)


def mask_area(mask: np.ndarray) -> int:
    """Number of pixels inside the mask."""
    return int(np.count_nonzero(_as_2d(mask, "mask_area")))


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight box around the mask as (x, y, w, h) in pixels, COCO convention; zeros when empty.

    >>> mask_bbox(np.pad(np.ones((2, 3), dtype=bool), ((1, 0), (4, 0))))
    (4.0, 1.0, 3.0, 2.0)
    """
    array = _as_2d(mask, "mask_bbox") != 0
    rows = np.flatnonzero(array.any(axis=1))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    cols = np.flatnonzero(array.any(axis=0))
    x0, x1 = int(cols[0]), int(cols[-1])
    y0, y1 = int(rows[0]), int(rows[-1])
    return (float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1))
