"""Procedural textures: what the surface of each synthetic object and of the background looks like.

Every function takes a `numpy.random.Generator` and draws from it only, so a scene is a pure function
of its seed. Images are (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import colorsys
from enum import Enum

import cv2
import numpy as np


class TextureKind(str, Enum):
    """The pattern on an object. It is sampled in the object's own frame, so it moves with the object."""

    STRIPES = "stripes"
    CHECKER = "checker"
    NOISE = "noise"
    DOTS = "dots"


def random_color(rng: np.random.Generator, saturation: tuple[float, float] = (0.55, 1.0)) -> np.ndarray:
    """A random RGB colour (3,) float32 in [0, 255] with the given saturation range (HSV)."""
    hue = rng.uniform(0.0, 1.0)
    sat = rng.uniform(*saturation)
    val = rng.uniform(0.55, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32) * 255.0


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Value noise in [0, 1] of shape (height, width) whose features are about `cell` pixels wide."""
    gh = max(2, int(np.ceil(height / cell)) + 2)
    gw = max(2, int(np.ceil(width / cell)) + 2)
    grid = rng.random((gh, gw), dtype=np.float32)
    big = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    out = big[:height, :width]
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _blend(weight: np.ndarray, color_a: np.ndarray, color_b: np.ndarray) -> np.ndarray:
    """Per-pixel mix of two colours: weight 0 gives color_a, 1 gives color_b -> (H, W, 3) uint8."""
    w = weight[..., None].astype(np.float32)
    img = color_a[None, None, :] * (1.0 - w) + color_b[None, None, :] * w
    return np.clip(img, 0, 255).astype(np.uint8)


def make_object_texture(rng: np.random.Generator, size: int, kind: TextureKind | None = None) -> np.ndarray:
    """A square (size, size, 3) uint8 texture with two object colours and a pattern of the given kind."""
    if kind is None:
        kind = list(TextureKind)[int(rng.integers(len(TextureKind)))]
    color_a = random_color(rng)
    color_b = random_color(rng)
    # Two colours that are too alike make a flat object; push the second one away from the first.
    if float(np.abs(color_a - color_b).sum()) < 150.0:
        color_b = 255.0 - color_a
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0.0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    # Patterns finer than a few pixels would alias and be lost to yuv420p's half-resolution chroma.
    period = max(rng.uniform(0.12, 0.3) * size, 8.0)
    if kind is TextureKind.STRIPES:
        weight = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    elif kind is TextureKind.CHECKER:
        weight = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind is TextureKind.NOISE:
        weight = (smooth_noise(rng, size, size, cell=max(rng.uniform(0.08, 0.2) * size, 4.0)) > 0.5).astype(np.float32)
        weight = 0.8 * weight + 0.2 * smooth_noise(rng, size, size, cell=max(0.05 * size, 3.0))
    else:
        cu = np.mod(u, period) - period / 2
        cv = np.mod(v, period) - period / 2
        weight = (cu**2 + cv**2 < (0.3 * period) ** 2).astype(np.float32)
    # Fine grain on top of the pattern gives feature trackers corners to hold on to.
    grain = smooth_noise(rng, size, size, cell=max(3.0, 0.04 * size)) - 0.5
    img = _blend(weight, color_a, color_b).astype(np.float32) + 40.0 * grain[..., None]
    # Soft pattern edges, as a real camera's optics give; hard colour edges would also be smeared by
    # yuv420p's half-resolution chroma, making the decoded video differ from the rendered one.
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=0.8)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A large (height, width, 3) uint8 background: low-saturation multi-scale noise with some clutter."""
    base = random_color(rng, saturation=(0.1, 0.35))
    other = random_color(rng, saturation=(0.1, 0.35))
    scale = min(height, width)
    weight = (
        0.5 * smooth_noise(rng, height, width, cell=0.3 * scale)
        + 0.3 * smooth_noise(rng, height, width, cell=0.08 * scale)
        + 0.2 * smooth_noise(rng, height, width, cell=max(0.02 * scale, 3.0))
    )
    img = _blend(weight, base, other)
    # Clutter (thin lines and small rectangles) so the camera motion is visible to a flow estimator.
    num_items = int(height * width / 4000)
    for _ in range(num_items):
        color = tuple(int(c) for c in random_color(rng, saturation=(0.0, 0.3)) * rng.uniform(0.5, 1.0))
        x0, y0 = int(rng.integers(width)), int(rng.integers(height))
        if rng.random() < 0.5:
            x1 = x0 + int(rng.integers(-scale // 10, scale // 10 + 1))
            y1 = y0 + int(rng.integers(-scale // 10, scale // 10 + 1))
            cv2.line(img, (x0, y0), (x1, y1), color, thickness=int(rng.integers(1, 3)))
        else:
            w, h = int(rng.integers(2, scale // 25 + 3)), int(rng.integers(2, scale // 25 + 3))
            cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), color, thickness=-1)
    return cv2.GaussianBlur(img, (0, 0), sigmaX=0.8)
