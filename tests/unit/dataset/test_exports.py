"""Exports round-trip: SA-V / YouTube-VIS JSON through pycocotools, DAVIS PNGs through PIL → the same masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from batchtrack.dataset.exports import export_dataset
from batchtrack.dataset.exports.davis import PALETTE
from batchtrack.errors import UnknownVideoError
from batchtrack.synthetic.corpus import write_synthetic_video
from batchtrack.synthetic.scene import SceneSpec

from .conftest import FakeOutput
from .output_fixture import HEIGHT, VIDEO_A, VIDEO_B, WIDTH, Truth, write_fake_output

EXPORTED = (VIDEO_A, VIDEO_B)  # C has no rows, D only a failed clip


def _decode(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _present(truth: Truth, video_id: str) -> dict[tuple[int, int], np.ndarray]:
    return {(f, t): m for (v, f, t), m in truth.masks.items() if v == video_id and truth.present((v, f, t))}


def test_sav_round_trip(fake_output: FakeOutput, tmp_path: Path) -> None:
    summary = export_dataset(fake_output.path, str(tmp_path), "sav")
    assert (summary.videos, summary.skipped, summary.tracks) == (2, 2, 3)
    compared = 0
    for video_id in EXPORTED:
        record = json.loads((tmp_path / f"{video_id}_auto.json").read_text())
        present = _present(fake_output.truth, video_id)
        assert record["video_frame_count"] == len(record["masklet"]) == fake_output.truth.num_frames[video_id]
        assert (record["video_height"], record["video_width"]) == (HEIGHT, WIDTH)
        assert record["masklet_num"] == len(record["masklet_id"])
        for frame, objects in enumerate(record["masklet"]):
            assert len(objects) == record["masklet_num"]
            for track, rle in zip(record["masklet_id"], objects, strict=True):
                want = present.get((frame, track), np.zeros((HEIGHT, WIDTH), dtype=bool))
                np.testing.assert_array_equal(_decode(rle), want)
                compared += int(want.any())
    assert compared == sum(fake_output.truth.present(k) for k in fake_output.truth.masks) > 0
    record = json.loads((tmp_path / f"{VIDEO_A}_auto.json").read_text())
    assert record["masklet_first_appeared_frame"] == [0, 3]
    assert record["masklet_frame_count"] == [12, 6]
    assert record["masklet_visibility_changes"] == [0, 2]  # track 2 hides on 7, returns on 10
    assert record["video_duration"] == pytest.approx(1.2)  # 12 frames at 10 fps


def test_ytvis_round_trip(fake_output: FakeOutput, tmp_path: Path) -> None:
    export_dataset(fake_output.path, str(tmp_path), "ytvis")
    data = json.loads((tmp_path / "instances.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    videos = {video["id"]: video for video in data["videos"]}
    assert [v["name"] for v in videos.values()] == list(EXPORTED)
    assert [len(a["segmentations"]) for a in data["annotations"]] == [12, 12, 5]
    assert len({a["id"] for a in data["annotations"]}) == 3
    compared = 0
    for annotation in data["annotations"]:
        video = videos[annotation["video_id"]]
        assert len(video["file_names"]) == video["length"] == len(annotation["segmentations"])
        present = _present(fake_output.truth, video["name"])
        for frame, rle in enumerate(annotation["segmentations"]):
            want = present.get((frame, annotation["track_id"]))
            if want is None:
                assert rle is None and annotation["areas"][frame] is None
                continue
            np.testing.assert_array_equal(_decode(rle), want)
            assert annotation["areas"][frame] == int(want.sum())
            x, y, w, h = coco_mask.toBbox({"size": rle["size"], "counts": rle["counts"].encode()}).tolist()
            assert annotation["bboxes"][frame] == [x, y, w, h]
            compared += 1
    assert compared == sum(fake_output.truth.present(k) for k in fake_output.truth.masks) > 0


def test_davis_round_trip(fake_output: FakeOutput, tmp_path: Path) -> None:
    export_dataset(fake_output.path, str(tmp_path), "davis")
    objects = json.loads((tmp_path / "objects.json").read_text())
    assert objects == {VIDEO_A: {"1": 1, "2": 2}, VIDEO_B: {"1": 7}}
    assert (tmp_path / "ImageSets" / "batchtrack.txt").read_text().split() == list(EXPORTED)
    overlap_checked = False
    for video_id in EXPORTED:
        present = _present(fake_output.truth, video_id)
        pngs = sorted((tmp_path / "Annotations" / video_id).glob("*.png"))
        assert [p.name for p in pngs] == [f"{f:05d}.png" for f in range(fake_output.truth.num_frames[video_id])]
        for frame, png in enumerate(pngs):
            image = Image.open(png)
            assert image.mode == "P" and image.getpalette()[: 3 * 4] == PALETTE[: 3 * 4]
            indices = np.array(image)
            masks = {int(k): present.get((frame, track)) for k, track in objects[video_id].items()}
            union = np.zeros((HEIGHT, WIDTH), dtype=bool)
            for index, mask in masks.items():
                if mask is None:
                    assert not (indices == index).any()
                    continue
                union |= mask
                assert ((indices == index) <= mask).all()
                others = [m for k, m in masks.items() if k != index and m is not None]
                alone = mask & ~np.any(others, axis=0) if others else mask
                assert (indices[alone] == index).all()
            np.testing.assert_array_equal(indices > 0, union)
            if video_id == VIDEO_A and frame == 4:
                both = masks[1] & masks[2]
                assert both.any() and (indices[both] == 2).all()  # track 2 (score 0.99) over track 1 (0.95)
                overlap_checked = True
    assert overlap_checked


def test_export_one_video_and_unknown_video(fake_output: FakeOutput, tmp_path: Path) -> None:
    summary = export_dataset(fake_output.path, str(tmp_path / "one"), "sav", video_ids=[VIDEO_B])
    assert summary.videos == 1 and [p.name for p in (tmp_path / "one").iterdir()] == [f"{VIDEO_B}_auto.json"]
    with pytest.raises(UnknownVideoError):
        export_dataset(fake_output.path, str(tmp_path / "bad"), "sav", video_ids=["f" * 16])


def test_frames_are_decoded_from_the_video(tmp_path: Path) -> None:
    uris = {}
    for video_id, frames in ((VIDEO_A, 12), (VIDEO_B, 5)):
        spec = SceneSpec(seed=1, width=WIDTH, height=HEIGHT, num_frames=frames, num_objects=1)
        uris[video_id] = str(write_synthetic_video(spec, tmp_path / "videos", video_id).video_path)
    write_fake_output(str(tmp_path / "out"), video_uris=uris)
    summary = export_dataset(str(tmp_path / "out"), str(tmp_path / "davis"), "davis", frames=True)
    assert summary.images == 17
    jpegs = sorted((tmp_path / "davis" / "JPEGImages" / VIDEO_A).glob("*.jpg"))
    assert [p.name for p in jpegs] == [f"{f:05d}.jpg" for f in range(12)]
    image = np.array(Image.open(jpegs[3]))
    assert image.shape == (HEIGHT, WIDTH, 3) and image.std() > 1.0  # a real, textured frame
