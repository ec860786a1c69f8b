"""Integration fixtures: synthetic corpora with broken files, prompts on every clip, output readers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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

CLIP_FRAMES = 8
OVERLAP = 2
PROMPT_EVERY = CLIP_FRAMES - OVERLAP  # every clip start gets prompts


@dataclass(frozen=True)
class Corpus:
    folder: Path
    videos: list[Path]
    broken: list[Path]
    prompts: Path


def write_prompts_every(videos: list[Path], manifest: Path, every: int) -> None:
    """Box prompts from each video's ground truth on frames 0, every, 2*every, ... (objects visible there)."""
    lines = []
    for video in videos:
        gt = pq.read_table(video.with_name(video.name[: -len(".mp4")] + ".gt.parquet")).to_pylist()
        for row in gt:
            if row["frame_index"] % every:
                continue
            rle = {"size": [row["height"], row["width"]], "counts": row["rle"].encode()}
            x, y, w, h = (float(v) for v in coco_mask.toBbox(rle))
            if w >= 2 and h >= 2:
                frame, object_id = row["frame_index"], row["object_id"]
                lines.append({"video": video.name, "frame": frame, "object_id": object_id, "box": [x, y, x + w, y + h]})
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
    write_prompts_every(videos, folder / "prompts.jsonl", PROMPT_EVERY)
    return Corpus(folder, videos, bad, folder / "prompts.jsonl")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """An embedded local Ray (2 CPUs, no dashboard) for one test module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def mixed_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Three good synthetic videos (20-24 frames, 96x64) plus a zero-byte, a garbage and a truncated file."""
    return make_corpus(tmp_path_factory.mktemp("mixed") / "corpus", num_videos=3, num_frames=20)


def read_table(output: Path | str, kind: str, filesystem: object | None = None) -> pa.Table:
    source = f"{output}/{kind}" if filesystem is None else f"{str(output).removeprefix('s3://')}/{kind}"
    return ds.dataset(source, format="parquet", filesystem=filesystem).to_table()


def expected_rows(prompts_file: Path, video_uri_of: Callable[[str], str], start: int, end: int, uri: str) -> int:
    """Rows a clip must have: each object prompted inside [start, end) appears from its first prompt to the end."""
    first: dict[int, int] = {}
    for line in prompts_file.read_text().splitlines():
        item = json.loads(line)
        if video_uri_of(item["video"]) == uri and start <= item["frame"] < end:
            first[item["object_id"]] = min(first.get(item["object_id"], end), item["frame"])
    return sum(end - frame for frame in first.values())


def assert_complete_dataset(output: Path | str, prompts_file: Path, video_uri_of: Callable[[str], str],
                            filesystem: object | None = None) -> pa.Table:
    """Every ok clip once, its rows = frames x objects from the prompts, no duplicate keys, pointers alike."""
    clips = read_table(output, "clips", filesystem).to_pylist()
    masks = read_table(output, "masks", filesystem)
    pointers = read_table(output, "pointers", filesystem)
    clip_ids = [c["clip_id"] for c in clips]
    assert len(clip_ids) == len(set(clip_ids)), "a clip has two clips/ rows"
    keys = list(zip(masks.column("clip_id").to_pylist(), masks.column("frame_index").to_pylist(),
                    masks.column("object_id").to_pylist(), strict=True))
    assert len(keys) == len(set(keys)), "duplicate (clip_id, frame_index, object_id) rows in masks/"
    pointer_keys = list(zip(pointers.column("clip_id").to_pylist(), pointers.column("frame_index").to_pylist(),
                            pointers.column("object_id").to_pylist(), strict=True))
    assert sorted(pointer_keys) == sorted(keys)
    per_clip: dict[str, int] = defaultdict(int)
    for clip_id, _, _ in keys:
        per_clip[clip_id] += 1
    ok = [c for c in clips if c["status"] == "ok"]
    assert ok, "no clip was tracked"
    for clip in ok:
        want = expected_rows(prompts_file, video_uri_of, clip["start_frame"], clip["end_frame"], clip["video_uri"])
        assert per_clip[clip["clip_id"]] == clip["mask_rows"] == want, clip
    assert set(per_clip) == {c["clip_id"] for c in ok}, "masks/ holds rows of clips that are not ok"
    return masks


class ActorKiller:
    """SIGKILLs the first ClipTracker actor process (a descendant of this test) caught mid-batch."""

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
                if "ClipTracker)).submit" in title:
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
