"""The reader and the exports on a demo job's output written to an S3 server (moto on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import s3fs

from batchtrack.cli import main
from batchtrack.dataset import open_dataset
from batchtrack.dataset.exports import export_dataset

from .dataset_checks import (
    assert_davis_round_trip,
    assert_nearest_finds_itself,
    assert_reader_matches_rows,
    assert_ytvis_round_trip,
    demo_job,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]

BUCKET = "dataset-reader"


@dataclass(frozen=True)
class S3Output:
    uri: str
    storage_options: dict[str, Any]


@pytest.fixture(scope="module")
def s3_output(_moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Output]:
    """The demo job with its output on S3 (a bucket of its own on the session's moto server)."""
    options = {"key": "testing", "secret": "testing", "endpoint_url": _moto_endpoint,
               "client_kwargs": {"region_name": "us-east-1"}}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            patch.setenv(name, value)
        boto3.client("s3", endpoint_url=_moto_endpoint, aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        s3fs.S3FileSystem.clear_instance_cache()
        output = f"s3://{BUCKET}/out"
        demo_job(tmp_path_factory.mktemp("demo-s3") / "corpus", output, options)
        yield S3Output(output, options)
        s3fs.S3FileSystem.clear_instance_cache()


def test_reader_on_s3(s3_output: S3Output) -> None:
    data = open_dataset(s3_output.uri, storage_options=s3_output.storage_options)
    assert all(path.startswith(f"s3://{BUCKET}/out/masks/") for path in data.paths("masks"))
    assert_reader_matches_rows(data)
    assert_nearest_finds_itself(data)
    sample = next(iter(data.to_torch()))
    assert sample.masks.shape[0] == len(sample.track_ids) > 0


def test_exports_from_s3_to_s3_and_to_a_folder(s3_output: S3Output, tmp_path: Path) -> None:
    data = open_dataset(s3_output.uri, storage_options=s3_output.storage_options)
    summary = export_dataset(data, f"s3://{BUCKET}/exports/ytvis", "ytvis", storage_options=s3_output.storage_options)
    assert summary.videos == 2
    fs = s3fs.S3FileSystem(**s3_output.storage_options)
    fs.get_file(f"{BUCKET}/exports/ytvis/instances.json", str(tmp_path / "instances.json"))
    assert_ytvis_round_trip(data, tmp_path / "instances.json")
    export_dataset(data, str(tmp_path / "davis"), "davis", storage_options=s3_output.storage_options)
    assert_davis_round_trip(data, tmp_path / "davis")


def test_cli_export_with_storage_options(s3_output: S3Output, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    options = s3_output.storage_options
    flags = [f"--storage-option=key={options['key']}", f"--storage-option=secret={options['secret']}",
             f"--storage-option=endpoint_url={options['endpoint_url']}",
             "--storage-option=client_kwargs.region_name=us-east-1"]
    assert main(["export", s3_output.uri, str(tmp_path), "--format", "sav", *flags]) == 0
    assert len(list(tmp_path.glob("*_auto.json"))) == 2
    assert main(["export", f"s3://{BUCKET}/nothing", str(tmp_path / "x"), "--format", "sav", *flags]) == 2
    assert "no committed units" in capsys.readouterr().err
