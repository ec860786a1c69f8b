"""Pictures of masks: a coloured overlay with each object's id, for the demo and for looking at results."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

_ALPHA = 0.5


def object_color(object_id: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour for an object id (golden-ratio hue steps keep neighbours apart)."""
    hue = (object_id * 0.61803398875) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


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
        ys, xs = np.nonzero(m)
        labels.append((object_id, m, (int(xs.mean()), int(ys.mean()))))
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
