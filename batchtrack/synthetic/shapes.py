"""Object outlines: ellipses, polygons, stars and blobs, each able to deform over time.

An outline is a closed polygon in the object's unit frame (radius about 1, centred on the origin).
Every outline is star-shaped around the origin, so a deformation is a radial modulation
r(phi, t) = 1 + sum_k a_k * sin(w_k * t + psi_k) * cos(k * phi + phi_k) of each outline point.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

# Points on every outline: enough for a smooth ellipse at 1080p, few enough for fillPoly to be cheap.
NUM_OUTLINE_POINTS = 96


class ShapeKind(str, Enum):
    ELLIPSE = "ellipse"
    POLYGON = "polygon"
    STAR = "star"
    BLOB = "blob"


@dataclass(frozen=True)
class Outline:
    """A deformable closed outline in the object's unit frame."""

    kind: ShapeKind
    radius: np.ndarray  # (K,) distance of each outline point from the origin at rest
    angle: np.ndarray  # (K,) polar angle of each outline point, increasing
    harmonics: np.ndarray  # (M,) int angular frequency k of each deformation mode
    amplitudes: np.ndarray  # (M,) relative amplitude a_k of each mode
    phases: np.ndarray  # (M,) angular phase phi_k of each mode
    rates: np.ndarray  # (M,) temporal angular frequency w_k of each mode, radians per frame
    offsets: np.ndarray  # (M,) temporal phase psi_k of each mode

    @property
    def max_extent(self) -> float:
        """An upper bound of the distance of any deformed point from the origin."""
        return float(self.radius.max() * (1.0 + self.amplitudes.sum()))

    def points(self, t: float) -> np.ndarray:
        """(K, 2) outline points at frame t, in unit coordinates."""
        modes = self.amplitudes[:, None] * np.sin(self.rates[:, None] * t + self.offsets[:, None])  # (M, 1)
        # (M, K): each mode's contribution at each outline angle
        wave = modes * np.cos(self.harmonics[:, None] * self.angle[None, :] + self.phases[:, None])
        scale = np.maximum(1.0 + wave.sum(axis=0), 0.3)  # (K,)
        r = self.radius * scale
        return np.stack([r * np.cos(self.angle), r * np.sin(self.angle)], axis=1)


def _polar(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.hypot(points[:, 0], points[:, 1]), np.arctan2(points[:, 1], points[:, 0])


def _resample_polygon(vertices: np.ndarray, num: int) -> np.ndarray:
    """`num` points spread evenly along the closed polygon through `vertices` (V, 2)."""
    closed = np.concatenate([vertices, vertices[:1]], axis=0)
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.linspace(0.0, cum[-1], num, endpoint=False)
    x = np.interp(s, cum, closed[:, 0])
    y = np.interp(s, cum, closed[:, 1])
    return np.stack([x, y], axis=1)


def _base_outline(rng: np.random.Generator, kind: ShapeKind) -> np.ndarray:
    """(K, 2) rest outline of the given kind, ordered by increasing polar angle."""
    k = NUM_OUTLINE_POINTS
    if kind is ShapeKind.ELLIPSE:
        theta = np.linspace(-np.pi, np.pi, k, endpoint=False)
        aspect = rng.uniform(0.55, 1.0)
        return np.stack([np.cos(theta), aspect * np.sin(theta)], axis=1)
    if kind is ShapeKind.POLYGON:
        n = int(rng.integers(3, 8))
        # Evenly spread angles with jitter keep the vertices apart, so the polygon is not a sliver.
        angles = np.linspace(-np.pi, np.pi, n, endpoint=False) + rng.uniform(-0.3, 0.3, n) * (np.pi / n)
        radii = rng.uniform(0.75, 1.0, n)
        vertices = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        return _resample_polygon(vertices, k)
    if kind is ShapeKind.STAR:
        n = int(rng.integers(4, 8))
        inner = rng.uniform(0.4, 0.65)
        angles = np.linspace(-np.pi, np.pi, 2 * n, endpoint=False)
        radii = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
        vertices = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        return _resample_polygon(vertices, k)
    theta = np.linspace(-np.pi, np.pi, k, endpoint=False)
    r = np.ones(k)
    for harmonic in range(2, 6):
        r = r + rng.uniform(0.0, 0.25 / harmonic * 2) * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    r = r / r.max()
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def make_outline(rng: np.random.Generator, kind: ShapeKind, deformation: float) -> Outline:
    """A random outline of `kind` whose shape changes over time by up to about `deformation` of its radius.

    Blobs always deform more than the rigid-looking kinds, which only wobble.
    """
    radius, angle = _polar(_base_outline(rng, kind))
    order = np.argsort(angle)
    radius, angle = radius[order], angle[order]
    radius = radius / radius.max()
    num_modes = 3
    harmonics = rng.integers(2, 6, num_modes)
    weight = 1.0 if kind is ShapeKind.BLOB else 0.35
    amplitudes = rng.uniform(0.3, 1.0, num_modes) * deformation * weight * 0.45 / num_modes
    return Outline(
        kind=kind,
        radius=radius,
        angle=angle,
        harmonics=harmonics.astype(np.float64),
        amplitudes=amplitudes,
        phases=rng.uniform(0.0, 2 * np.pi, num_modes),
        rates=rng.uniform(0.03, 0.12, num_modes),
        offsets=rng.uniform(0.0, 2 * np.pi, num_modes),
    )
