"""Display orientation: how a player turns a decoded frame before showing it.

Phones store a portrait video as landscape frames plus a display matrix (MP4 `tkhd`, FFmpeg's
AV_FRAME_DATA_DISPLAYMATRIX side data). FFmpeg's libavutil/display.h defines it: a decoded pixel
(p, q) is shown at (p', q') with p' = a p + c q and q' = b p + d q, where a, b, c, d are entries
0, 1, 3 and 4 of the 3x3 matrix in 16.16 fixed point (the translation only moves the result back
into view). Frames are turned by that map so every backend yields what a player shows; prompts and
masks are then in displayed coordinates.

Only the four quarter turns, with or without a mirror, are applied: the matrices real files carry.
A matrix with another angle is snapped to its nearest quarter turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["IDENTITY", "Orientation"]

# (a, b, c, d) of the pure rotations, by counter-clockwise degrees as a viewer sees them.
_ROTATIONS: dict[tuple[int, int, int, int], int] = {
    (1, 0, 0, 1): 0,
    (0, -1, 1, 0): 90,
    (-1, 0, 0, -1): 180,
    (0, 1, -1, 0): 270,
}


@dataclass(frozen=True)
class Orientation:
    """A quarter-turn map from decoded to displayed pixels: a transpose, then flips of rows and columns."""

    transpose: bool = False
    flip_rows: bool = False  # upside down, after the transpose
    flip_cols: bool = False  # left-right, after the transpose

    @classmethod
    def from_display_matrix(cls, matrix: Sequence[int]) -> Orientation:
        """The orientation of FFmpeg's 9-entry display matrix (16.16 fixed point, row major)."""
        a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
        if abs(a) + abs(d) >= abs(b) + abs(c):
            return cls(transpose=False, flip_rows=d < 0, flip_cols=a < 0)
        # Transposed: displayed row i is decoded column p (sign b), displayed column j is decoded row q (sign c).
        return cls(transpose=True, flip_rows=b < 0, flip_cols=c < 0)

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    @property
    def mirrored(self) -> bool:
        """True when the map mirrors the picture (a player flips it as well as turning it)."""
        return self.transpose == (self.flip_rows == self.flip_cols)

    @property
    def rotation(self) -> int:
        """Counter-clockwise degrees (0, 90, 180, 270) a viewer sees; a mirror, if any, follows the turn
        (FFmpeg's and PyAV's convention: a rotation of -90 with a mirror is this transpose)."""
        a, b, c, d = self._signed_map()
        if self.mirrored:
            a, c = -a, -c  # undo the mirror x' -> -x' that acts last
        return _ROTATIONS[(a, b, c, d)]

    def _signed_map(self) -> tuple[int, int, int, int]:
        rows, cols = (-1 if self.flip_rows else 1), (-1 if self.flip_cols else 1)
        if self.transpose:
            return 0, rows, cols, 0
        return cols, 0, 0, rows

    def displayed_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a displayed frame decoded at width x height."""
        return (height, width) if self.transpose else (width, height)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """The (H', W', C) frame a player shows for a decoded (H, W, C) frame, contiguous."""
        if self.is_identity:
            return frame
        shown = frame.transpose(1, 0, 2) if self.transpose else frame  # (W, H, C) when transposed
        if self.flip_rows:
            shown = shown[::-1]
        if self.flip_cols:
            shown = shown[:, ::-1]
        return np.ascontiguousarray(shown)

    def describe(self) -> str:
        """E.g. 'rotate 90', 'rotate 270, mirror', 'none' (rotations counter-clockwise)."""
        parts = ([f"rotate {self.rotation}"] if self.rotation else []) + (["mirror"] if self.mirrored else [])
        return ", ".join(parts) or "none"


IDENTITY = Orientation()
