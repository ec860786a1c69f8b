"""Pictures of masks: a coloured overlay with each object's id, for the demo and for looking at results.

`render_overlay` draws one frame; `write_animation` writes a sequence of them as a GIF or an MP4 (PyAV),
so a whole tracked video can be watched.
"""

from __future__ import annotations

import colorsys
import itertools
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

_ALPHA = 0.5


def object_color(object_id: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour for an object id (golden-ratio hue steps keep neighbours apart)."""
    hue = (object_id * 0.61803398875) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def label_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of a non-empty mask farthest inside it, in its largest connected piece.

    A centroid can fall outside a ring, a crescent or a mask split in two by an occluder, i.e. on
    another object; this point is always on the mask itself.
    """
    m = mask.astype(np.uint8)
    count, pieces, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if count > 2:
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        m = (pieces == largest).astype(np.uint8)
    # Pad so pixels on the image border count as boundary, not as deep inside.
    depth = cv2.distanceTransform(np.pad(m, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(x), int(y)


def render_overlay(
    frame: np.ndarray, masks: Sequence[np.ndarray] | np.ndarray, object_ids: Sequence[int]
) -> np.ndarray:
    """(H, W, 3) uint8 RGB: `frame` with each mask tinted in its object's colour, outlined, and labelled by id."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"render_overlay needs an (H, W, 3) frame, got shape {frame.shape}")
    if len(masks) != len(object_ids):
        raise ValueError(f"render_overlay got {len(masks)} masks for {len(object_ids)} object ids")
    out = frame.astype(np.float32)
    height, width = frame.shape[:2]
    labels = []
    for mask, object_id in zip(masks, object_ids, strict=True):
        m = np.asarray(mask).astype(bool)
        if m.shape != (height, width):
            raise ValueError(f"mask of object {object_id} has shape {m.shape}, the frame is {(height, width)}")
        if not m.any():
            continue
        color = np.array(object_color(object_id), dtype=np.float32)
        out[m] = (1 - _ALPHA) * out[m] + _ALPHA * color
        labels.append((object_id, m, label_point(m)))
    image = np.clip(out, 0, 255).astype(np.uint8)
    scale = max(0.35, min(height, width) / 600)
    for object_id, m, (cx, cy) in labels:
        color = object_color(object_id)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(image, contours, -1, color, 1)
        text = str(object_id)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        origin = (min(max(cx - tw // 2, 0), width - tw), min(max(cy + th // 2, th), height - 1))
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


ANIMATION_SUFFIXES = (".gif", ".mp4")
# GIF holds 256 colours a frame: a fixed 6x6x6 colour cube (216 entries) is enough for tinted overlays
# and needs no per-frame palette search.
_CUBE_LEVELS = 6
_CUBE_STEP = 255 / (_CUBE_LEVELS - 1)


def _gif_palette() -> np.ndarray:
    levels = np.rint(np.arange(_CUBE_LEVELS) * _CUBE_STEP).astype(np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    # Byte order of a palette entry as PyAV hands it to the GIF encoder: alpha, red, green, blue
    # (test_render_video checks colours round-trip).
    cube = np.stack([np.full(r.size, 255, np.uint8), r.ravel(), g.ravel(), b.ravel()], axis=1)  # (216, 4)
    return np.concatenate([cube, np.zeros((256 - len(cube), 4), np.uint8)])  # (256, 4)


def _gif_indices(image: np.ndarray) -> np.ndarray:
    q = np.rint(image.astype(np.float32) / _CUBE_STEP).astype(np.uint8)  # (H, W, 3) levels 0..5
    return q[..., 0] * _CUBE_LEVELS**2 + q[..., 1] * _CUBE_LEVELS + q[..., 2]  # (H, W)


def write_animation(path: Path, frames: Iterable[np.ndarray], fps: float = 10.0) -> int:
    """Write (H, W, 3) uint8 RGB frames as an animated GIF or an H.264 MP4 (by suffix); returns the frame count."""
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ValueError(f"cannot write {path}: give a .gif or .mp4 file name")
    images = iter(frames)
    first = next(images, None)
    if first is None:
        raise ValueError(f"no frames to write to {path}")
    height, width = first.shape[:2]
    # yuv420p needs even sides; a GIF keeps the frame as it is.
    pad = (height % 2, width % 2) if suffix == ".mp4" else (0, 0)
    palette = _gif_palette()
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "gif" if suffix == ".gif" else "libx264", rate=Fraction(fps).limit_denominator(1001)
        )
        stream.height, stream.width = height + pad[0], width + pad[1]
        stream.pix_fmt = "pal8" if suffix == ".gif" else "yuv420p"
        if suffix == ".mp4":
            stream.options = {"crf": "20", "threads": "1"}
        for image in itertools.chain([first], images):
            if image.shape[:2] != (height, width):
                raise ValueError(f"frame {count} is {image.shape[:2]}, the first frame was {(height, width)}")
            image = np.pad(image, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
            if suffix == ".gif":
                frame = av.VideoFrame.from_ndarray((_gif_indices(image), palette), format="pal8")
            else:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = count
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        for packet in stream.encode(None):
            container.mux(packet)
    return count
