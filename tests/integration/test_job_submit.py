"""`ray start --head` + `ray job submit --working-dir . -- python jobs/track_corpus.py --config …`.

The head runs as `ray start --block` in its own process group, so teardown stops exactly the processes
this test started (never `ray stop`, which would stop every Ray on the machine). RAY_ADDRESS is set
only in the submitting subprocess. Ray 2.60 turns token authentication on for local clusters, and the
job CLI only sends a token when RAY_AUTH_MODE=token: the head and the CLI get the same fresh token
through RAY_AUTH_MODE/RAY_AUTH_TOKEN, so the test neither needs nor touches ~/.ray/auth_token.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import CLIP_FRAMES, Corpus, assert_complete_dataset, read_table

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


TOKEN = secrets.token_hex(32)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "BATCHTRACK_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, **extra)
    return env


@pytest.fixture(scope="module")
def head() -> Iterator[str]:
    """A Ray head on loopback with a dashboard (the job server); yields the job server's address."""
    temp_dir = tempfile.mkdtemp(prefix="btray")  # short: Ray's socket paths must fit in 107 bytes
    dashboard = _free_port()
    command = [
        str(BIN / "ray"), "start", "--head", "--block", f"--port={_free_port()}", "--node-ip-address=127.0.0.1",
        "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--temp-dir={temp_dir}", "--disable-usage-stats",
        # Every fixed default port may be held by another Ray on this machine: take free ones.
        *(f"--{name}={_free_port()}" for name in (
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
            "runtime-env-agent-port", "ray-client-server-port",
        )),
    ]
    log = open(Path(temp_dir) / "head.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=5):
                    break
            except urllib.error.HTTPError:
                break  # it answers (401 without the auth token): the job server is up
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ray head did not start: {(Path(temp_dir) / 'head.log').read_text()[-3000:]}")
                time.sleep(1)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # our own process group: `ray start --block` and its children
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_job_script_on_the_cluster(head: str, mixed_corpus: Corpus, tmp_path: Path) -> None:
    output = tmp_path / "out"
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "corpus": str(mixed_corpus.folder),
                "output": str(output),
                "prompts": str(mixed_corpus.prompts),
                "model": {"name": "baseline-flow"},
                "clip": {"length_frames": CLIP_FRAMES},
                "actors": {"num_actors": 1},
                "max_failed_fraction": 0.5,
            }
        )
    )
    for _ in range(30):  # the head's job agent registers a few seconds after the job server answers
        result = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--working-dir", str(ROOT), "--",
             "python", "jobs/track_corpus.py", "--config", str(config)],
            cwd=ROOT, env=_env(RAY_ADDRESS=head), capture_output=True, text=True, timeout=400, check=False,
        )
        logs = result.stdout + result.stderr
        if "No available agent" not in logs:
            break
        time.sleep(2)
    assert result.returncode == 0, logs[-4000:]
    assert "succeeded" in logs, logs[-4000:]
    assert re.search(r"^\s+ok\s+9\b", logs, re.MULTILINE), logs[-4000:]
    assert_complete_dataset(output, mixed_corpus.prompts, lambda name: str(mixed_corpus.folder / name))
    assert len(read_table(output, "clips")) == 12
    assert (output / "_manifest.json").is_file()
