"""Synthetic scenes: deterministic, exact visible-part ground truth, decodable H.264, prompts from the ground truth."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as coco_mask
from pydantic import ValidationError

from batchtrack.errors import ConfigError
from batchtrack.synthetic import (
    PROMPTS_FILE,
    Scene,
    SceneSpec,
    make_benchmark,
    make_demo_corpus,
    read_ground_truth,
    render_frame,
    write_synthetic_video,
)

SMALL = {"width": 96, "height": 64}
# yuv420p keeps colour at half resolution; on tiny frames object edges are a large share of the pixels.
VIDEO_SIZE = {"width": 128, "height": 96}


def _decode_rle(counts: str, height: int, width: int) -> np.ndarray:
    return coco_mask.decode({"size": [height, width], "counts": counts.encode()}).astype(bool)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10.0 * np.log10(255.0**2 / max(mse, 1e-12))


def test_same_seed_renders_identical_frames_and_masks() -> None:
    spec = SceneSpec(seed=7, num_frames=12, num_objects=4, **SMALL)
    a, b = Scene.from_spec(spec), Scene.from_spec(spec)
    for t in (0, 5, 11):
        fa, fb = render_frame(a, t), render_frame(b, t)
        assert np.array_equal(fa.image, fb.image)
        assert np.array_equal(fa.masks, fb.masks)
        assert fa.object_ids == fb.object_ids == [1, 2, 3, 4]


def test_different_seed_renders_different_frames_and_masks() -> None:
    fa = render_frame(Scene.from_spec(SceneSpec(seed=1, num_frames=4, **SMALL)), 2)
    fb = render_frame(Scene.from_spec(SceneSpec(seed=2, num_frames=4, **SMALL)), 2)
    assert not np.array_equal(fa.image, fb.image)
    assert not np.array_equal(fa.masks, fb.masks)


def test_masks_are_the_visible_part_behind_objects_in_front() -> None:
    spec = SceneSpec(seed=3, num_frames=40, num_objects=3, occlusion=1.0, exit_prob=0.0, object_size=0.45, **SMALL)
    scene = Scene.from_spec(spec)
    occluded_pixels = 0
    for t in range(0, spec.num_frames, 3):
        frame = render_frame(scene, t)
        # Disjoint: every pixel belongs to at most one object.
        assert int(frame.masks.sum(axis=0).max()) <= 1
        covered = np.zeros((spec.height, spec.width), dtype=bool)
        for obj in reversed(scene.objects):  # front to back
            alone = render_frame(Scene(spec, [obj], scene.camera), t)
            full = alone.masks[0]
            visible = frame.masks[frame.object_ids.index(obj.object_id)]
            assert np.array_equal(visible, full & ~covered)
            occluded_pixels += int((full & covered).sum())
            covered |= full
    assert occluded_pixels > 0, "the occlusion knob should make objects overlap"


def test_object_fully_behind_another_has_an_empty_mask() -> None:
    spec = SceneSpec(seed=8, num_frames=5, num_objects=2, occlusion=0.0, exit_prob=0.0, **SMALL)
    scene = Scene.from_spec(spec)
    back, front = scene.objects
    # Shrink the back object and put it where the front one is: it is on screen but covered.
    hidden = dataclasses.replace(back, center=front.center.copy(), radius=0.2 * front.radius)
    t = 2
    alone = render_frame(Scene(spec, [hidden], scene.camera), t)
    assert alone.masks[0].any()
    frame = render_frame(Scene(spec, [hidden, front], scene.camera), t)
    assert not frame.masks[frame.object_ids.index(hidden.object_id)].any()
    assert frame.masks[frame.object_ids.index(front.object_id)].any()


def test_object_that_leaves_the_frame_has_empty_masks_then_returns() -> None:
    spec = SceneSpec(seed=5, num_frames=60, num_objects=1, exit_prob=1.0, occlusion=0.0, **SMALL)
    scene = Scene.from_spec(spec)
    areas = np.array([int(render_frame(scene, t).masks[0].sum()) for t in range(spec.num_frames)])
    empty = np.flatnonzero(areas == 0)
    assert areas[0] > 0
    assert empty.size >= 2
    assert areas[empty[-1] + 1 :].max() > 0, "the object should come back after leaving"


def test_video_decodes_to_num_frames_close_to_the_rendered_frames(tmp_path: Path) -> None:
    spec = SceneSpec(seed=11, num_frames=16, **VIDEO_SIZE)
    video = write_synthetic_video(spec, tmp_path, "clip")
    with av.open(str(video.video_path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == spec.num_frames
    scene = Scene.from_spec(spec)
    for t in range(spec.num_frames):
        rendered = render_frame(scene, t).image
        assert decoded[t].shape == rendered.shape
        assert _psnr(decoded[t], rendered) > 30.0, f"frame {t}"
    # Frame order matters: a neighbour is further away than the frame itself.
    assert _psnr(decoded[8], render_frame(scene, 8).image) > _psnr(decoded[8], render_frame(scene, 9).image)


def test_ground_truth_file_has_one_row_per_frame_and_object(tmp_path: Path) -> None:
    spec = SceneSpec(seed=4, num_frames=6, num_objects=3, **SMALL)
    video = write_synthetic_video(spec, tmp_path, "clip")
    assert video.gt_path.name == "clip.gt.parquet"
    table = pq.read_table(video.gt_path)
    assert [(f.name, str(f.type)) for f in table.schema] == [
        ("frame_index", "int32"),
        ("object_id", "int32"),
        ("height", "int32"),
        ("width", "int32"),
        ("rle", "string"),
    ]
    assert table.num_rows == 6 * 3
    scene = Scene.from_spec(spec)
    for row in table.to_pylist():
        expected = render_frame(scene, row["frame_index"])
        mask = _decode_rle(row["rle"], row["height"], row["width"])
        assert np.array_equal(mask, expected.masks[expected.object_ids.index(row["object_id"])])
    gt = read_ground_truth(video.gt_path)
    assert (gt.num_frames, gt.height, gt.width, gt.object_ids) == (6, 64, 96, [1, 2, 3])


def test_demo_corpus_prompts_are_ground_truth_boxes_on_first_visible_frame(tmp_path: Path) -> None:
    videos = make_demo_corpus(tmp_path, num_videos=2, seed=3, width=96, height=64, num_frames=10)
    assert [v.name for v in videos] == ["synthetic_000.mp4", "synthetic_001.mp4"]
    lines = [json.loads(line) for line in (tmp_path / PROMPTS_FILE).read_text().splitlines()]
    assert {line["video"] for line in lines} == {"synthetic_000.mp4", "synthetic_001.mp4"}
    for line in lines:
        table = pq.read_table(tmp_path / line["video"].replace(".mp4", ".gt.parquet")).to_pylist()
        rows = sorted((r for r in table if r["object_id"] == line["object_id"]), key=lambda r: r["frame_index"])
        masks = [_decode_rle(r["rle"], r["height"], r["width"]) for r in rows]
        # The prompt frame is the first with a usable (not sliver) visible part.
        first = next(i for i, m in enumerate(masks) if m.sum() >= 64)
        assert line["frame"] == rows[first]["frame_index"]
        ys, xs = np.nonzero(masks[first])
        assert line["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_benchmark_subsets_change_their_knob(tmp_path: Path) -> None:
    make_benchmark(tmp_path / "occ", "occlusion", num_videos=1, seed=0, width=64, height=48, num_frames=4)
    assert (tmp_path / "occ" / "occlusion_000.mp4").exists()
    assert (tmp_path / "occ" / "occlusion_000.gt.parquet").exists()
    assert (tmp_path / "occ" / PROMPTS_FILE).exists()
    with pytest.raises(ConfigError, match="unknown benchmark subset 'snow'"):
        make_benchmark(tmp_path, "snow", num_videos=1, seed=0)


def test_scene_spec_rejects_odd_sizes_and_unknown_knobs() -> None:
    with pytest.raises(ValidationError, match="width must be even"):
        SceneSpec(width=97)
    with pytest.raises(ValidationError, match="wind"):
        SceneSpec(wind=1.0)  # type: ignore[call-arg]


def test_project_decoder_sees_ground_truth_frame_indices_after_a_seek(tmp_path: Path) -> None:
    from batchtrack.io.video import iter_frames, probe_video

    spec = SceneSpec(seed=12, num_frames=40, camera_motion=1.0, speed=0.05, **VIDEO_SIZE)
    video = write_synthetic_video(spec, tmp_path, "seek", gop=10)
    assert probe_video(str(video.video_path)).num_frames == spec.num_frames
    scene = Scene.from_spec(spec)
    # Frames 33..35 lie past the keyframe at 30, so the decoder must seek and then decode forward.
    for t, image in enumerate(iter_frames(str(video.video_path), 33, 36), start=33):
        assert _psnr(image, render_frame(scene, t).image) > 30.0
        assert _psnr(image, render_frame(scene, t).image) > _psnr(image, render_frame(scene, t - 1).image)
