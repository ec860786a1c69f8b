"""The demo job whose output the dataset tests read, and checks of the reader and the exports against that
output's own rows (decoded with pycocotools)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from PIL import Image
from pycocotools import mask as coco_mask

from batchtrack.config import load_config
from batchtrack.dataset import TrackedMaskDataset
from batchtrack.pipeline.job import run_job
from batchtrack.synthetic import make_demo_corpus

CLIP_FRAMES = 30


def demo_job(corpus: Path, output: str, storage_options: dict | None = None) -> None:
    """The demo corpus (2 synthetic videos x 60 frames) tracked with the shipped model in 30-frame clips."""
    if not (corpus / "prompts.jsonl").exists():
        make_demo_corpus(corpus, num_videos=2, num_frames=60)
    cfg = load_config(
        corpus=str(corpus),
        output=output,
        prompts=str(corpus / "prompts.jsonl"),
        clip={"length_frames": CLIP_FRAMES},
        storage_options=storage_options,
    )
    summary = run_job(cfg)
    assert summary.failed == 0 and summary.ok == 4


def coco_decode(rle: str | dict, height: int = 0, width: int = 0) -> np.ndarray:
    if isinstance(rle, dict):
        height, width, rle = rle["size"][0], rle["size"][1], rle["counts"]
    return coco_mask.decode({"size": [height, width], "counts": rle.encode()}).astype(bool)


def present_rows(data: TrackedMaskDataset, video_id: str) -> dict[tuple[int, int], np.ndarray]:
    """(frame, track) -> mask of every present row of a video, decoded by pycocotools from masks/ directly."""
    table = data.masks.to_table(filter=pc.field("video_id") == video_id)
    found = {}
    for row in table.to_pylist():
        if row["score"] > 0.5 and row["area"] > 0:
            found[(row["frame_index"], row["track_id"])] = coco_decode(row["rle"], row["height"], row["width"])
    return found


def assert_reader_matches_rows(data: TrackedMaskDataset) -> int:
    """Videos, keys, tracks and per-frame masks agree with the Parquet rows; returns the masks compared."""
    clips = data.clips
    assert clips.num_rows > 0 and set(clips.column("status").to_pylist()) == {"ok"}
    masks = data.masks.to_table()
    pointers = data.pointers.to_table()
    assert masks.num_rows == pointers.num_rows == pc.sum(clips.column("mask_rows")).as_py() > 0
    keys = list(zip(masks.column("video_id").to_pylist(), masks.column("frame_index").to_pylist(),
                    masks.column("object_id").to_pylist(), strict=True))
    assert len(keys) == len(set(keys)), "one row per (video, frame, object)"
    videos = data.videos()
    assert {v.video_id for v in videos} == set(clips.column("video_id").to_pylist())
    compared = 0
    for video in videos:
        present = present_rows(data, video.video_id)
        tracks = data.tracks(video.video_id)
        assert tracks and all(t.frames_present > 0 for t in tracks)
        assert {t.track_id for t in tracks} >= {track for _, track in present}
        for frame in sorted({0, video.num_frames // 2 - 1, video.num_frames // 2, video.num_frames - 1}):
            got = data.frame_masks(video.video_id, frame)
            want = {track: mask for (f, track), mask in present.items() if f == frame}
            assert sorted(got) == sorted(want) and want
            for track, mask in got.items():
                np.testing.assert_array_equal(mask, want[track])
                compared += int(mask.any())
    assert compared > 0
    return compared


def assert_nearest_finds_itself(data: TrackedMaskDataset) -> None:
    row = data.pointers.head(1).to_pylist()[0]
    best = data.nearest(np.asarray(row["embedding"], dtype=np.float32), k=3).to_pylist()
    assert (best[0]["video_id"], best[0]["frame_index"], best[0]["object_id"]) == (
        row["video_id"], row["frame_index"], row["object_id"])
    assert abs(best[0]["similarity"] - 1.0) < 1e-4 and best[1]["similarity"] <= best[0]["similarity"]


def assert_sav_round_trip(data: TrackedMaskDataset, folder: Path) -> int:
    compared = 0
    for video in data.videos():
        record = json.loads((folder / f"{video.video_id}_auto.json").read_text())
        present = present_rows(data, video.video_id)
        assert len(record["masklet"]) == record["video_frame_count"] == video.num_frames
        for frame, objects in enumerate(record["masklet"]):
            for track, rle in zip(record["masklet_id"], objects, strict=True):
                want = present.get((frame, track))
                got = coco_decode(rle)
                if want is None:
                    assert not got.any()
                else:
                    np.testing.assert_array_equal(got, want)
                    compared += 1
    assert compared > 0
    return compared


def assert_ytvis_round_trip(data: TrackedMaskDataset, path: Path) -> int:
    exported = json.loads(path.read_text())
    videos = {video["id"]: video for video in exported["videos"]}
    assert {v["name"] for v in videos.values()} == {v.video_id for v in data.videos()}
    compared = 0
    for annotation in exported["annotations"]:
        video = videos[annotation["video_id"]]
        present = present_rows(data, video["name"])
        for frame, rle in enumerate(annotation["segmentations"]):
            want = present.get((frame, annotation["track_id"]))
            assert (rle is None) == (want is None)
            if want is not None:
                np.testing.assert_array_equal(coco_decode(rle), want)
                compared += 1
    assert compared == sum(len(present_rows(data, v["name"])) for v in videos.values()) > 0
    return compared


def assert_davis_round_trip(data: TrackedMaskDataset, folder: Path) -> int:
    objects = json.loads((folder / "objects.json").read_text())
    compared = 0
    for video in data.videos():
        present = present_rows(data, video.video_id)
        index_of = {track: int(index) for index, track in objects[video.video_id].items()}
        pngs = sorted((folder / "Annotations" / video.video_id).glob("*.png"))
        assert len(pngs) == video.num_frames
        for frame, png in enumerate(pngs):
            indices = np.array(Image.open(png))
            frame_masks = {t: m for (f, t), m in present.items() if f == frame}
            union = np.zeros(indices.shape, dtype=bool)
            for track, mask in frame_masks.items():
                assert ((indices == index_of[track]) <= mask).all()
                union |= mask
                compared += 1
            np.testing.assert_array_equal(indices > 0, union)
    assert compared > 0
    return compared
