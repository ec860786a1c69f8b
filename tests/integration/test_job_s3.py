"""The batch job reading its corpus from and writing its dataset to an S3 server (moto on 127.0.0.1)."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import s3fs
from moto.moto_api import recorder

from batchtrack.config import load_config
from batchtrack.errors import PromptError
from batchtrack.pipeline.job import run_job

from .conftest import CLIP_FRAMES, Corpus, assert_complete_dataset, read_table

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]


@pytest.fixture
def requests_log(s3_server: Any, tmp_path: Path) -> Iterator[Path]:
    """Every request the S3 server serves while the test runs, one JSON line each (moto's recorder)."""
    log = tmp_path / "requests.jsonl"
    recorder._location = str(log)  # the server runs in this process
    recorder.reset_recording()
    _recorder_call(s3_server.endpoint_url, "start-recording")
    yield log
    _recorder_call(s3_server.endpoint_url, "stop-recording")


def _recorder_call(endpoint: str, action: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/recorder/{action}", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def _gets_per_key(log: Path, prefix: str) -> Counter[str]:
    gets: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        path = urlparse(entry["url"]).path
        if entry["method"] == "GET" and path.startswith(prefix):
            gets[path.rsplit("/", 1)[-1]] += 1
    return gets


def _config(bucket: str, s3_server: Any, prompts: str) -> Any:
    return load_config(
        None,
        corpus=f"{bucket}/corpus/",
        output=f"{bucket}/out",
        prompts=prompts,
        model={"name": "baseline-flow"},
        clip={"length_frames": CLIP_FRAMES},
        actors={"num_actors": 2, "num_cpus": 1},
        unit={"max_videos": 2},
        storage_options=s3_server.storage_options,
        max_failed_fraction=0.5,
    )


def test_s3_corpus_to_s3_dataset_each_video_read_once_then_a_rerun_resumes_everything(
    mixed_corpus: Corpus, s3_server: Any, requests_log: Path
) -> None:
    bucket = s3_server.create_bucket("archive")
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    for path in [*mixed_corpus.videos, *mixed_corpus.broken, mixed_corpus.prompts]:
        fs.put_file(str(path), f"archive/corpus/{path.name}")
    # A second shard: lines for a video of the archive outside the corpus, counted and not tracked.
    outside = json.dumps({"video": "../elsewhere/x.mp4", "frame": 0, "object_id": 1, "box": [1, 1, 9, 9]})
    fs.pipe_file("archive/corpus/prompts-2.jsonl", f"{outside}\n".encode())
    # A bad line is found by the task that reads it, before anything is tracked.
    first = mixed_corpus.prompts.read_text().splitlines()[0]
    bad = json.dumps({**json.loads(first), "box": [9, 9, 1, 1]})
    fs.pipe_file("archive/corpus/bad-prompts.jsonl", f"{first}\n{bad}\n".encode())
    with pytest.raises(PromptError, match=r"s3://archive/corpus/bad-prompts.jsonl, line 2: field 'box'"):
        run_job(_config(bucket, s3_server, prompts=f"{bucket}/corpus/bad-prompts.jsonl"))
    assert not fs.exists("archive/out/clips")
    cfg = _config(bucket, s3_server, prompts=f"{bucket}/corpus/prompts*.jsonl")
    recorder.reset_recording()
    summary = run_job(cfg)
    assert (summary.videos, summary.ok, summary.failed, summary.units) == (6, 9, 3, 3)
    assert (summary.unmatched_videos, summary.unmatched_lines) == (1, 1)
    assert json.loads(fs.cat_file("archive/out/_manifest.json"))["prompts"]["unmatched_examples"] == [
        "s3://archive/elsewhere/x.mp4"
    ]

    # Each video is downloaded once by its unit, whatever its number of clips; nothing reads it to plan.
    gets = _gets_per_key(requests_log, "/archive/corpus/")
    videos = {p.name for p in [*mixed_corpus.videos, *mixed_corpus.broken]} - {"zero.mp4"}  # empty: no GET needed
    assert {name: gets[name] for name in videos} == dict.fromkeys(videos, 1)

    fs.invalidate_cache()
    assert_complete_dataset(f"{bucket}/out", mixed_corpus.prompts, lambda name: f"{bucket}/corpus/{name}", fs)
    clips = read_table(f"{bucket}/out", "clips", fs).to_pylist()
    assert all(c["video_uri"].startswith("s3://archive/corpus/") for c in clips)
    assert all(c["video_id"] not in c["video_uri"] for c in clips)
    manifest = json.loads(fs.cat_file("archive/out/_manifest.json"))
    assert manifest["config"]["storage_options"]["secret"] == "***"
    assert manifest["config"]["storage_options"]["key"] == "***"

    recorder.reset_recording()
    again = run_job(cfg)
    assert (again.units, again.resumed_units, again.frames) == (3, 3, 0)
    assert not _gets_per_key(requests_log, "/archive/corpus/") - Counter({"prompts.jsonl": 1, "prompts-2.jsonl": 1})
    fs.invalidate_cache()
    assert len(read_table(f"{bucket}/out", "clips", fs)) == 12
    assert len(fs.ls("archive/out/masks")) == 2  # the broken files' unit has no rows
