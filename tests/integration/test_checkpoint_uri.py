"""SAM 2.1 weights from a URI: the README's commands run as written with the checkpoint on an S3 server (moto on
127.0.0.1) and on an HTTP server (127.0.0.1), each fetched into the node's cache; a missing checkpoint stops the
run with exit code 2 before Ray starts.

The checkpoint holds random SAM 2.1 tiny weights in Meta's file layout (`{"model": state_dict}`), 156 MB.
`BATCHTRACK_MODEL__IMAGE_SIZE=256` keeps tracking quick on 2 CPU cores; the commands themselves are the README's.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import ray
import s3fs
import torch

from batchtrack.cli import main
from batchtrack.config import ModelConfig
from batchtrack.model.configs import get_config
from batchtrack.model.loading.build import shipped_weights
from batchtrack.model.tracker.tracker import Tracker
from batchtrack.trackers import checkpoint_hash, load_tracker

from .conftest import Corpus, make_corpus

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
CHECKPOINT_NAME = "sam2.1_hiera_tiny.pt"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # tests read results, not access logs
        pass


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / CHECKPOINT_NAME
    torch.save({"model": Tracker(get_config("sam2.1_hiera_tiny")).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def http_url(checkpoint: Path) -> Iterator[str]:
    """The checkpoint's folder served over HTTP on 127.0.0.1 (a free port)."""
    handler = functools.partial(_QuietHandler, directory=str(checkpoint.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("sam21") / "videos", num_videos=1, num_frames=6, broken=False)


def _prompts_beside_videos(corpus: Corpus, target: Path) -> Path:
    """The corpus's prompts for a manifest one folder above `videos/` (relative paths resolve against it)."""
    lines = [
        json.dumps({**item, "video": f"videos/{item['video']}"})
        for item in map(json.loads, corpus.prompts.read_text().splitlines())
    ]
    assert lines, "the corpus has prompts"
    target.write_text("\n".join(lines) + "\n")
    return target


def _readme_commands() -> list[str]:
    text = README.read_text()
    section = text[text.index("### SAM 2.1 checkpoints") :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None
    commands = block.group(1).replace("\\\n", " ").strip().splitlines()
    assert len(commands) == 2 and all(c.startswith("batchtrack run ") for c in commands)
    return commands


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    words = shlex.split(command)
    words[0] = str(Path(sys.executable).parent / "batchtrack")
    return subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def _env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHTRACK_", "RAY_ADDRESS"))}
    env.update(extra or {})
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # driver and actors of this run share one node cache
    env["BATCHTRACK_MODEL__IMAGE_SIZE"] = "256"
    return env


def _assert_tracked_with(clips: list[dict[str, Any]], checkpoint: Path, cache: Path) -> None:
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert clips and all(c["status"] == "ok" for c in clips), clips
    assert {c["model_name"] for c in clips} == {"sam2.1_hiera_tiny"}
    assert {c["checkpoint_hash"] for c in clips} == {digest[:16]}
    assert [p.name for p in (cache / "batchtrack" / "checkpoints" / "blobs").iterdir()] == [f"{digest}.pt"]


def test_readme_s3_command_tracks_with_a_checkpoint_from_s3(
    s3_server: Any, corpus: Corpus, checkpoint: Path, tmp_path: Path
) -> None:
    s3_server.create_bucket("bucket")
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    for video in corpus.videos:
        fs.put_file(str(video), f"bucket/videos/{video.name}")
    fs.put_file(str(_prompts_beside_videos(corpus, tmp_path / "prompts.jsonl")), "bucket/prompts.jsonl")
    fs.put_file(str(checkpoint), f"bucket/models/{CHECKPOINT_NAME}")
    command = _readme_commands()[0].replace("--gpus-per-actor 1", "--gpus-per-actor 0")  # no GPU on CI

    result = _run(command, tmp_path, _env(tmp_path, s3_server.env))

    assert result.returncode == 0, result.stderr[-3000:]
    fs.invalidate_cache()
    clips = ds.dataset("bucket/out/clips", format="parquet", filesystem=fs).to_table().to_pylist()
    _assert_tracked_with(clips, checkpoint, tmp_path / "cache")
    assert len(ds.dataset("bucket/out/masks", format="parquet", filesystem=fs).to_table()) > 0


def test_readme_https_command_tracks_with_a_checkpoint_over_http(
    http_url: str, corpus: Corpus, checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "videos").mkdir()
    for video in corpus.videos:
        shutil.copy(video, tmp_path / "videos" / video.name)
    _prompts_beside_videos(corpus, tmp_path / "prompts.jsonl")
    command = _readme_commands()[1]
    assert OFFICIAL_URL in command

    result = _run(command.replace(OFFICIAL_URL, http_url), tmp_path, _env(tmp_path))

    assert result.returncode == 0, result.stderr[-3000:]
    clips = ds.dataset(tmp_path / "out" / "clips", format="parquet").to_table().to_pylist()
    _assert_tracked_with(clips, checkpoint, tmp_path / "cache")
    assert len(ds.dataset(tmp_path / "out" / "masks", format="parquet").to_table()) > 0


def test_a_sam21_model_without_checkpoint_exits_2_naming_the_flag(corpus: Corpus, tmp_path: Path) -> None:
    command = f"batchtrack run {corpus.folder} {tmp_path / 'out'} --model sam2.1_hiera_tiny"

    result = _run(command, tmp_path, _env(tmp_path))

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--checkpoint" in lines[0] and "--random-weights" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_checkpoint_from_s3_with_storage_options_hashes_and_loads_once(
    s3_server: Any, checkpoint: Path, tmp_path: Path
) -> None:
    s3_server.create_bucket("models")
    s3fs.S3FileSystem(**s3_server.storage_options).put_file(str(checkpoint), f"models/{CHECKPOINT_NAME}")
    cfg = ModelConfig(
        name="sam2.1_hiera_tiny", checkpoint=f"s3://models/{CHECKPOINT_NAME}", cache_dir=str(tmp_path), image_size=256
    )
    assert checkpoint_hash(cfg, s3_server.storage_options) == hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16]
    tracker = load_tracker(cfg, "cpu", s3_server.storage_options)
    expected = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    assert isinstance(tracker, Tracker)
    assert all(torch.equal(tracker.state_dict()[k], v) for k, v in expected.items())
    assert len(list((tmp_path / "blobs").iterdir())) == 1


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    """Answers 403 under /forbidden/ and 404 anywhere else, as a bucket without access or a wrong path would."""

    def do_HEAD(self) -> None:
        self.send_response(403 if self.path.startswith("/forbidden/") else 404)
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def status_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_checkpoint_urls_exit_2_in_one_line_naming_the_cause_before_ray_starts(
    status_url: str, corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    causes = {
        f"http://127.0.0.1:{_closed_port()}/sam2.1_hiera_tiny.pt": "cannot be read: connection refused",
        "http://nonexistent.invalid/sam2.1_hiera_tiny.pt": "cannot be read: host name not resolved",
        f"{status_url}/forbidden/sam2.1_hiera_tiny.pt": "cannot be read: HTTP 403 Forbidden",
        f"{status_url}/missing/sam2.1_hiera_tiny.pt": "does not exist (HTTP 404 Not Found",
    }
    for url, cause in causes.items():
        argv = ["run", str(corpus.folder), str(tmp_path / "out"), "--model", "sam2.1_hiera_tiny", "--checkpoint", url]
        assert main(argv) == 2, url
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"batchtrack: error: model.checkpoint {url} {cause}"), err
    assert not ray.is_initialized()
    assert not (tmp_path / "out").exists()


def test_another_models_checkpoint_over_http_exits_2_in_one_line_without_starting_ray(
    http_url: str,
    checkpoint: Path,
    corpus: Corpus,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shipped = shipped_weights("tiny-synthetic")
    assert shipped is not None
    shutil.copy(shipped, checkpoint.parent / "not-sam2.1-tiny.safetensors")
    url = f"{http_url}/not-sam2.1-tiny.safetensors"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    argv = ["run", str(corpus.folder), str(tmp_path / "out"), "--model", "sam2.1_hiera_tiny", "--checkpoint", url]
    assert main(argv) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.fullmatch(
        rf"batchtrack: error: checkpoint {re.escape(url)} does not fit model 'sam2.1_hiera_tiny': \d+ keys differ: "
        r"missing \S+, \S+, \S+ and \d+ more\n",
        err,
    ), err
    assert not ray.is_initialized()
    assert not (tmp_path / "out").exists()


def _corpus_with_one_file(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.mp4").write_bytes(b"never opened: the run stops before any video is read")
    return corpus


def test_a_pt_checkpoint_with_a_missing_and_a_mis_shaped_key_exits_2_in_one_line_before_ray_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The model is built on the meta device: its first build in a process costs ~3 s of torch imports, hence here.
    state = Tracker(get_config("test-tiny")).state_dict()
    first, second = list(state)[:2]
    del state[first]
    state[second] = torch.zeros(3, 1)
    checkpoint = tmp_path / "test-tiny.pt"
    torch.save({"model": state}, checkpoint)
    argv = ["run", str(_corpus_with_one_file(tmp_path)), str(tmp_path / "out"), "--model", "test-tiny"]
    assert main([*argv, "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"batchtrack: error: checkpoint {checkpoint} does not fit"), err
    assert f"2 keys differ: missing {first}, mis-shaped {second} (file (3, 1), model " in err, err
    assert not ray.is_initialized()
