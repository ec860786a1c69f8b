"""The batch job reading its corpus from and writing its dataset to an S3 server (moto on 127.0.0.1)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import s3fs

from batchtrack.config import load_config
from batchtrack.pipeline.job import run_job

from .conftest import CLIP_FRAMES, OVERLAP, Corpus, assert_complete_dataset, read_table

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]


def test_s3_corpus_to_s3_dataset_then_a_rerun_resumes_everything(mixed_corpus: Corpus, s3_server: Any) -> None:
    bucket = s3_server.create_bucket("archive")
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    for path in [*mixed_corpus.videos, *mixed_corpus.broken, mixed_corpus.prompts]:
        fs.put_file(str(path), f"archive/corpus/{path.name}")
    cfg = load_config(
        None,
        corpus=f"{bucket}/corpus/",
        output=f"{bucket}/out",
        prompts=f"{bucket}/corpus/prompts.jsonl",
        model={"name": "baseline-flow"},
        clip={"length_frames": CLIP_FRAMES, "overlap_frames": OVERLAP},
        actors={"num_actors": 2, "num_cpus": 1},
        storage_options=s3_server.storage_options,
        max_failed_fraction=0.5,
    )
    summary = run_job(cfg)
    assert (summary.videos, summary.ok, summary.failed) == (6, 11, 3)

    fs.invalidate_cache()
    assert_complete_dataset(f"{bucket}/out", mixed_corpus.prompts, lambda name: f"{bucket}/corpus/{name}", fs)
    clips = read_table(f"{bucket}/out", "clips", fs).to_pylist()
    assert all(c["video_uri"].startswith("s3://archive/corpus/") for c in clips)
    assert all(c["video_id"] not in c["video_uri"] for c in clips)
    manifest = json.loads(fs.cat_file("archive/out/_manifest.json"))
    assert manifest["config"]["storage_options"]["secret"] == "***"
    assert manifest["config"]["storage_options"]["key"] == "***"

    again = run_job(cfg)
    assert (again.ok, again.resumed, again.frames) == (11, 11, 0)
    fs.invalidate_cache()
    assert len(read_table(f"{bucket}/out", "clips", fs)) == 14
    assert len(fs.ls("archive/out/masks")) == 11
