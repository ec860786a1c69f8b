"""Integration fixtures: synthetic corpora with broken files, prompts on frame 0 only, output checks."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import ray
from pycocotools import mask as coco_mask

from batchtrack.synthetic.corpus import write_synthetic_video
from batchtrack.synthetic.scene import SceneSpec

CLIP_FRAMES = 8  # videos of 20-24 frames → 3 clips each; prompts sit on frame 0 only, as users put them


@dataclass(frozen=True)
class Corpus:
    folder: Path
    videos: list[Path]
    broken: list[Path]
    prompts: Path


def write_first_frame_prompts(videos: list[Path], manifest: Path) -> None:
    """A box prompt per object visible on frame 0 of each video (from its ground truth), and nothing later."""
    lines = []
    for video in videos:
        gt = pq.read_table(video.with_name(video.name[: -len(".mp4")] + ".gt.parquet")).to_pylist()
        for row in gt:
            if row["frame_index"] != 0:
                continue
            rle = {"size": [row["height"], row["width"]], "counts": row["rle"].encode()}
            x, y, w, h = (float(v) for v in coco_mask.toBbox(rle))
            if w >= 2 and h >= 2:
                box = [x, y, x + w, y + h]
                lines.append({"video": video.name, "frame": 0, "object_id": row["object_id"], "box": box})
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))


def make_corpus(folder: Path, num_videos: int, num_frames: int, seed: int = 0, broken: bool = True) -> Corpus:
    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    for index in range(num_videos):
        spec = SceneSpec(seed=seed + index, width=96, height=64, num_frames=num_frames + 2 * index, num_objects=2)
        videos.append(write_synthetic_video(spec, folder, f"video_{index}").video_path)
    bad: list[Path] = []
    if broken:
        (folder / "zero.mp4").write_bytes(b"")
        (folder / "garbage.mp4").write_bytes(b"this is not a video\n" * 40)
        data = videos[0].read_bytes()
        (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
        bad = [folder / "zero.mp4", folder / "garbage.mp4", folder / "truncated.mp4"]
    write_first_frame_prompts(videos, folder / "prompts.jsonl")
    with (folder / "prompts.jsonl").open("a") as manifest:  # prompted like the rest: they must fail, not be skipped
        for path in bad:
            manifest.write(json.dumps({"video": path.name, "frame": 0, "object_id": 1, "box": [1, 1, 9, 9]}) + "\n")
    return Corpus(folder, videos, bad, folder / "prompts.jsonl")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """An embedded local Ray (2 CPUs, no dashboard) for one test module."""
    # address="local": a Ray of its own, even while a test on another xdist worker runs a `ray start` head or a
    # ray.cluster_utils.Cluster (plain ray.init() would join that one, found through /tmp/ray/ray_current_cluster).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def mixed_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Three good synthetic videos (20-24 frames, 96x64) plus a zero-byte, a garbage and a truncated file."""
    return make_corpus(tmp_path_factory.mktemp("mixed") / "corpus", num_videos=3, num_frames=20)


def read_table(output: Path | str, kind: str, filesystem: object | None = None) -> pa.Table:
    source = f"{output}/{kind}" if filesystem is None else f"{str(output).removeprefix('s3://')}/{kind}"
    return ds.dataset(source, format="parquet", filesystem=filesystem).to_table()


def first_prompts(prompts_file: Path, video_uri_of: Callable[[str], str]) -> dict[str, dict[int, int]]:
    """video URI → object id → the frame of its first prompt."""
    first: dict[str, dict[int, int]] = defaultdict(dict)
    for line in prompts_file.read_text().splitlines():
        item = json.loads(line)
        objects = first[video_uri_of(item["video"])]
        objects[item["object_id"]] = min(objects.get(item["object_id"], item["frame"]), item["frame"])
    return first


def assert_complete_dataset(output: Path | str, prompts_file: Path, video_uri_of: Callable[[str], str],
                            filesystem: object | None = None) -> pa.Table:
    """Whole-video tracks: every prompted object of every fully ok video has one row on every frame from its
    first prompt to the video's end; one row per (video, frame, object); pointers alike; clips tile each video."""
    clips = read_table(output, "clips", filesystem).to_pylist()
    masks = read_table(output, "masks", filesystem)
    pointers = read_table(output, "pointers", filesystem)
    clip_ids = [c["clip_id"] for c in clips]
    assert len(clip_ids) == len(set(clip_ids)), "a clip has two clips/ rows"
    keys = list(zip(masks.column("video_id").to_pylist(), masks.column("frame_index").to_pylist(),
                    masks.column("object_id").to_pylist(), strict=True))
    assert len(keys) == len(set(keys)), "duplicate (video_id, frame_index, object_id) rows in masks/"
    pointer_keys = list(zip(pointers.column("video_id").to_pylist(), pointers.column("frame_index").to_pylist(),
                            pointers.column("object_id").to_pylist(), strict=True))
    assert sorted(pointer_keys) == sorted(keys)
    assert masks.column("track_id").to_pylist() == [int(o) for o in masks.column("object_id").to_pylist()]
    by_clip: dict[str, int] = defaultdict(int)
    for clip_id in masks.column("clip_id").to_pylist():
        by_clip[clip_id] += 1
    ok = [c for c in clips if c["status"] == "ok"]
    assert ok, "no clip was tracked"
    for clip in ok:
        assert by_clip[clip["clip_id"]] == clip["mask_rows"], clip
    assert set(by_clip) <= {c["clip_id"] for c in ok}, "masks/ holds rows of clips that are not ok"
    first = first_prompts(prompts_file, video_uri_of)
    videos: dict[str, list[dict]] = defaultdict(list)
    for clip in clips:
        videos[clip["video_id"]].append(clip)
    rows_of: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for video_id, frame, object_id in keys:
        rows_of[video_id].add((frame, object_id))
    checked = 0
    for video_id, video_clips in videos.items():
        video_clips.sort(key=lambda c: c["start_frame"])
        if any(c["status"] != "ok" for c in video_clips):
            continue
        spans = [(c["start_frame"], c["end_frame"]) for c in video_clips]
        assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in pairwise(spans)), spans
        end = spans[-1][1]
        prompted = first.get(video_clips[0]["video_uri"], {})
        assert prompted, f"{video_clips[0]['video_uri']} has no prompts: the comparison would be empty"
        want = {(frame, obj) for obj, start in prompted.items() for frame in range(start, end)}
        assert rows_of[video_id] == want, video_clips[0]["video_uri"]
        checked += len(want)
    assert checked, "no fully tracked video with prompted objects"
    return masks


class ActorKiller:
    """SIGKILLs the first UnitTracker actor process (a descendant of this test) caught mid-unit."""

    def __init__(self, timeout_s: float = 240.0) -> None:
        self.killed_pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(timeout_s,), daemon=True)

    def _run(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        me = psutil.Process(os.getpid())
        while not self._stop.is_set() and time.monotonic() < deadline:
            for proc in me.children(recursive=True):
                try:
                    title = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if "UnitTracker)).submit" in title:
                    os.kill(proc.pid, signal.SIGKILL)
                    self.killed_pid = proc.pid
                    return
            time.sleep(0.02)

    def __enter__(self) -> ActorKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
