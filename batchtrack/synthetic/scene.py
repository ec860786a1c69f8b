"""A synthetic scene: its parameters (`SceneSpec`) and the motion of every object and of the camera.

A scene is a pure function of its `SceneSpec`: `Scene.from_spec(spec)` draws every random choice from
one `numpy.random.Generator` seeded with `spec.seed`, then precomputes, for every frame, each
object's position, scale and rotation and the camera's pan, zoom and roll. Rendering a frame
(render.py) then needs no randomness beyond the per-frame sensor noise, itself seeded by (seed, frame).

Object motion is in screen pixels; the camera only moves the background, as for objects flying in
front of a panning camera. Objects are listed back to front (z-order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from batchtrack.synthetic.shapes import Outline, ShapeKind, make_outline
from batchtrack.synthetic.texture import make_background, make_object_texture


class SceneSpec(BaseModel):
    """Everything that determines a synthetic video. Same spec, same pixels and masks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="Seed of the scene's random generator.")
    width: int = Field(320, ge=32, le=4096, description="Frame width in pixels (even, for yuv420p).")
    height: int = Field(240, ge=32, le=4096, description="Frame height in pixels (even, for yuv420p).")
    num_frames: int = Field(90, ge=1, le=100_000, description="Number of frames.")
    fps: float = Field(30.0, gt=0, le=240, description="Frames per second of the written video.")
    num_objects: int = Field(3, ge=1, le=12, description="Number of objects in the scene.")
    object_size: float = Field(
        0.28, gt=0.02, le=0.8, description="Typical object diameter as a fraction of the frame's shorter side."
    )
    speed: float = Field(
        0.012, ge=0.0, le=0.2, description="Mean object speed, in fractions of the frame's shorter side per frame."
    )
    rotation: float = Field(2.0, ge=0.0, le=30.0, description="Largest rotation speed of an object, degrees per frame.")
    scaling: float = Field(0.2, ge=0.0, le=1.0, description="Amplitude of each object's size change (log scale).")
    deformation: float = Field(
        0.3, ge=0.0, le=1.0, description="How much outlines change shape over time (0 rigid, 1 strongly deforming)."
    )
    occlusion: float = Field(
        0.3, ge=0.0, le=1.0, description="Probability that an object's path is steered through another object's."
    )
    exit_prob: float = Field(
        0.2, ge=0.0, le=1.0, description="Probability that an object leaves the frame once and comes back."
    )
    camera_motion: float = Field(
        0.3, ge=0.0, le=1.0, description="Strength of the camera's pan, zoom and roll (0 is a static camera)."
    )
    noise_std: float = Field(2.0, ge=0.0, le=50.0, description="Standard deviation of per-frame sensor noise.")

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int, info: ValidationInfo) -> int:
        if value % 2:
            raise ValueError(f"{info.field_name} must be even for yuv420p H.264, got {value}")
        return value


@dataclass(frozen=True)
class ObjectTrack:
    """One object's appearance and its pose on every frame."""

    object_id: int
    outline: Outline
    texture: np.ndarray  # (S, S, 3) uint8, covering unit coordinates [-texture_extent, texture_extent]
    texture_extent: float
    radius: float  # pixels per outline unit at scale 1
    center: np.ndarray  # (T, 2) x, y in screen pixels
    scale: np.ndarray  # (T,)
    angle: np.ndarray  # (T,) radians

    def linear(self, t: int) -> np.ndarray:
        """(2, 2) map from unit outline coordinates to screen pixel offsets at frame t."""
        c, s = math.cos(self.angle[t]), math.sin(self.angle[t])
        return self.radius * self.scale[t] * np.array([[c, -s], [s, c]])

    def outline_pixels(self, t: int) -> np.ndarray:
        """(K, 2) outline in screen pixels at frame t."""
        return self.outline.points(t) @ self.linear(t).T + self.center[t]

    def texture_to_screen(self, t: int) -> np.ndarray:
        """(2, 3) affine map from texture pixels to screen pixels at frame t (for cv2.warpAffine)."""
        size = self.texture.shape[0]
        half = size / 2.0
        a = self.linear(t) * (self.texture_extent / half)
        return np.concatenate([a, (self.center[t] - a @ np.array([half, half]))[:, None]], axis=1)

    def extent_pixels(self, t: int) -> float:
        """Upper bound of the object's reach from its centre at frame t, in pixels."""
        return self.radius * float(self.scale[t]) * self.outline.max_extent


@dataclass(frozen=True)
class CameraTrack:
    """The camera's view of the background on every frame."""

    background: np.ndarray  # (Hb, Wb, 3) uint8, larger than the frame
    center: np.ndarray  # (T, 2) background pixel at the frame centre
    zoom: np.ndarray  # (T,) screen pixels per background pixel
    angle: np.ndarray  # (T,) roll, radians

    def background_to_screen(self, t: int, width: int, height: int) -> np.ndarray:
        """(2, 3) affine map from background pixels to screen pixels at frame t."""
        c, s = math.cos(self.angle[t]), math.sin(self.angle[t])
        a = self.zoom[t] * np.array([[c, -s], [s, c]])
        offset = np.array([width / 2.0, height / 2.0]) - a @ self.center[t]
        return np.concatenate([a, offset[:, None]], axis=1)


def fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect x into [lo, hi] like a ball bouncing between two walls (continuous in x)."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, (lo + hi) / 2.0)
    y = np.mod(x - lo, 2.0 * span)
    return np.where(y > span, 2.0 * span - y, y) + lo


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _wander(rng: np.random.Generator, num_frames: int, speed: float) -> np.ndarray:
    """(T, 2) displacement of a smooth random walk: drift plus two slow sinusoidal swerves."""
    t = np.arange(num_frames, dtype=np.float64)
    direction = rng.uniform(0.0, 2 * np.pi)
    magnitude = speed * rng.uniform(0.6, 1.4)
    velocity = np.tile(magnitude * np.array([math.cos(direction), math.sin(direction)]), (num_frames, 1))
    for _ in range(2):
        rate = rng.uniform(0.02, 0.1)
        phase = rng.uniform(0.0, 2 * np.pi)
        swerve = rng.normal(size=2) * 0.5 * magnitude
        velocity = velocity + np.sin(rate * t + phase)[:, None] * swerve[None, :]
    return np.cumsum(velocity, axis=0) - velocity[0]


class Scene:
    """The precomputed motion of a `SceneSpec`'s objects (back to front) and camera."""

    def __init__(self, spec: SceneSpec, objects: list[ObjectTrack], camera: CameraTrack) -> None:
        self.spec = spec
        self.objects = objects
        self.camera = camera

    @property
    def object_ids(self) -> list[int]:
        """Object ids in ascending order (the order of masks in every rendered frame)."""
        return sorted(o.object_id for o in self.objects)

    @classmethod
    def from_spec(cls, spec: SceneSpec) -> Scene:
        rng = np.random.default_rng(spec.seed)
        objects = _make_objects(rng, spec)
        camera = _make_camera(rng, spec)
        return cls(spec, objects, camera)


def _make_objects(rng: np.random.Generator, spec: SceneSpec) -> list[ObjectTrack]:
    n, num_frames = spec.num_objects, spec.num_frames
    short = min(spec.width, spec.height)
    t = np.arange(num_frames, dtype=np.float64)
    kinds = list(ShapeKind)
    outlines: list[Outline] = []
    radii, scales, angles, centers = [], [], [], []
    for _ in range(n):
        outline = make_outline(rng, kinds[int(rng.integers(len(kinds)))], spec.deformation)
        radius = 0.5 * spec.object_size * short * rng.uniform(0.7, 1.3)
        scale = np.exp(spec.scaling * np.sin(rng.uniform(0.02, 0.08) * t + rng.uniform(0, 2 * np.pi)))
        spin = math.radians(spec.rotation) * rng.uniform(-1.0, 1.0)
        angle = rng.uniform(0.0, 2 * np.pi) + spin * t
        margin = 0.3 * radius
        start = np.array([rng.uniform(margin, spec.width - margin), rng.uniform(margin, spec.height - margin)])
        free = start + _wander(rng, num_frames, spec.speed * short)
        outlines.append(outline)
        radii.append(radius)
        scales.append(scale)
        angles.append(angle)
        centers.append(free)

    def bounded(path: np.ndarray, radius: float) -> np.ndarray:
        margin = 0.3 * radius
        x = fold(path[:, 0], margin, spec.width - margin)
        y = fold(path[:, 1], margin, spec.height - margin)
        return np.stack([x, y], axis=1)

    centers = [bounded(c, r) for c, r in zip(centers, radii, strict=True)]
    # Steer some paths through another object's position at a chosen moment, so they overlap then.
    for i in range(n):
        if n < 2 or rng.random() >= spec.occlusion:
            continue
        j = int(rng.choice([k for k in range(n) if k != i]))
        meet = int(rng.integers(int(0.2 * num_frames), max(int(0.8 * num_frames), int(0.2 * num_frames) + 1)))
        shifted = centers[i] + (centers[j][meet] - centers[i][meet])
        centers[i] = bounded(shifted, radii[i])
    # Send some objects out of the frame for a while, towards their nearest border.
    for i in range(n):
        if rng.random() >= spec.exit_prob or num_frames < 12:
            continue
        centers[i] = _excursion(rng, spec, centers[i], radii[i] * scales[i] * outlines[i].max_extent)

    objects = []
    ids = rng.permutation(n) + 1  # depth order is unrelated to the id
    for i in range(n):
        s_max = float(scales[i].max())
        extent = outlines[i].max_extent * 1.05
        size = int(np.clip(math.ceil(2 * extent * radii[i] * s_max), 16, 2048))
        texture = make_object_texture(rng, size)
        objects.append(
            ObjectTrack(
                object_id=int(ids[i]),
                outline=outlines[i],
                texture=texture,
                texture_extent=extent,
                radius=radii[i],
                center=centers[i],
                scale=scales[i],
                angle=angles[i],
            )
        )
    return objects


def _excursion(rng: np.random.Generator, spec: SceneSpec, center: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """Push a path fully out of the frame around a random moment and back, with smooth ramps.

    `reach` (T,) bounds the object's extent from its centre, so the flat top is entirely outside.
    """
    num_frames = len(center)
    t = np.arange(num_frames, dtype=np.float64)
    ramp = max(3.0, 0.08 * num_frames)
    hold = max(2.0, rng.uniform(0.08, 0.18) * num_frames)
    total = 2 * ramp + hold
    start = rng.uniform(0.15 * num_frames, max(0.15 * num_frames, 0.85 * num_frames - total))
    top = (t >= start + ramp) & (t <= start + ramp + hold)
    weight = _smoothstep((t - start) / ramp) * (1.0 - _smoothstep((t - start - ramp - hold) / ramp))
    mid = int(min(num_frames - 1, start + ramp + hold / 2))
    x, y = center[mid]
    # Distance to each border: left, right, top, bottom.
    distances = [x, spec.width - x, y, spec.height - y]
    side = int(np.argmin(distances))
    axis = 0 if side < 2 else 1
    sign = -1.0 if side in (0, 2) else 1.0
    limit = spec.width if axis == 0 else spec.height
    coord = center[:, axis]
    needed = np.where(sign < 0, coord + reach, limit - coord + reach) + 2.0
    amount = float(needed[top].max()) if top.any() else float(needed.max())
    out = center.copy()
    out[:, axis] = coord + sign * amount * weight
    return out


def _make_camera(rng: np.random.Generator, spec: SceneSpec) -> CameraTrack:
    num_frames = spec.num_frames
    short = min(spec.width, spec.height)
    t = np.arange(num_frames, dtype=np.float64)
    strength = spec.camera_motion
    zoom_amp = 0.2 * strength
    zoom = np.exp(zoom_amp * np.sin(rng.uniform(0.02, 0.06) * t + rng.uniform(0, 2 * np.pi)))
    angle = 0.08 * strength * np.sin(rng.uniform(0.02, 0.06) * t + rng.uniform(0, 2 * np.pi))
    # The view must stay inside the background at the widest zoom, whatever the roll.
    view_radius = math.hypot(spec.width, spec.height) / 2.0 / math.exp(-zoom_amp) + 2.0
    pan_room = max(spec.width, spec.height) * (0.25 + strength)
    bg_w = math.ceil(2 * view_radius + pan_room)
    bg_h = bg_w
    background = make_background(rng, bg_h, bg_w)
    pan = _wander(rng, num_frames, 0.02 * strength * short)
    start = np.array([bg_w / 2.0, bg_h / 2.0])
    path = start + pan
    cx = fold(path[:, 0], view_radius, bg_w - view_radius)
    cy = fold(path[:, 1], view_radius, bg_h - view_radius)
    return CameraTrack(background=background, center=np.stack([cx, cy], axis=1), zoom=zoom, angle=angle)
