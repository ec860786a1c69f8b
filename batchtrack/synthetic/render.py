"""Rasterise a `Scene` frame: background through the camera, then objects back to front.

Ground truth is exact by construction: each object's outline is filled without anti-aliasing, the
filled pixels take the object's warped texture, and a label map records which object is on top of
every pixel. An object's mask is where it is on top, i.e. its visible part only; masks of different
objects never overlap, and a fully hidden or off-screen object has an empty mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from batchtrack.synthetic.scene import ObjectTrack, Scene

# fillPoly's fixed-point fraction bits: outlines are placed to 1/16 pixel.
_SUBPIXEL_BITS = 4
# Edge softness of objects in the picture (pixels) and the margin it needs around an object's box.
_EDGE_SIGMA = 0.6
_EDGE_PAD = 3


@dataclass(frozen=True)
class RenderedFrame:
    """One synthetic frame with its ground truth."""

    frame_index: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    object_ids: list[int]  # ascending
    masks: np.ndarray  # (N, H, W) bool, visible part of each object, in object_ids order


def _paint_object(obj: ObjectTrack, t: int, image: np.ndarray, labels: np.ndarray, label: int) -> None:
    """Draw `obj` at frame t over `image` and mark its pixels with `label` in `labels` (both in place)."""
    height, width = labels.shape
    outline = obj.outline_pixels(t)  # (K, 2)
    # Pad the box so the softened edge (see below) fits inside it.
    x0, y0 = np.floor(outline.min(axis=0)).astype(int) - _EDGE_PAD
    x1, y1 = np.ceil(outline.max(axis=0)).astype(int) + 1 + _EDGE_PAD
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x0 >= x1 or y0 >= y1:
        return
    # Work in the object's bounding box only: warping the texture over the full frame costs O(H*W) per object.
    roi_w, roi_h = x1 - x0, y1 - y0
    fixed = np.round((outline - np.array([x0, y0])) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    mask = np.zeros((roi_h, roi_w), dtype=np.uint8)
    cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    inside = mask.astype(bool)
    if not inside.any():
        return
    warp = obj.texture_to_screen(t).copy()
    warp[:, 2] -= np.array([x0, y0], dtype=np.float64)
    patch = cv2.warpAffine(
        obj.texture, warp, (roi_w, roi_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    # The picture gets a slightly soft edge, as a lens gives, while the ground truth keeps the exact
    # outline. A hard saturated edge would also be smeared by yuv420p's half-resolution chroma.
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=_EDGE_SIGMA)[..., None]
    region = image[y0:y1, x0:x1]
    region[:] = np.round(alpha * patch + (1.0 - alpha) * region).astype(np.uint8)
    labels[y0:y1, x0:x1][inside] = label


def render_frame(scene: Scene, t: int) -> RenderedFrame:
    """Render frame t of `scene` with its exact visible-part masks."""
    spec = scene.spec
    if not 0 <= t < spec.num_frames:
        raise IndexError(f"frame {t} is outside the scene's {spec.num_frames} frames")
    width, height = spec.width, spec.height
    camera = scene.camera
    image = cv2.warpAffine(
        camera.background,
        camera.background_to_screen(t, width, height),
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    labels = np.zeros((height, width), dtype=np.int32)  # 0 = background, else object_id
    for obj in scene.objects:
        _paint_object(obj, t, image, labels, obj.object_id)
    if spec.noise_std > 0:
        rng = np.random.default_rng([spec.seed, t, 0x5E45])
        noisy = image.astype(np.float32) + rng.normal(0.0, spec.noise_std, image.shape).astype(np.float32)
        image = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    ids = scene.object_ids
    masks = np.stack([labels == object_id for object_id in ids]) if ids else np.zeros((0, height, width), bool)
    return RenderedFrame(frame_index=t, image=image, object_ids=ids, masks=masks)


def render_frames(scene: Scene) -> Iterator[RenderedFrame]:
    """Every frame of `scene`, in order."""
    for t in range(scene.spec.num_frames):
        yield render_frame(scene, t)
