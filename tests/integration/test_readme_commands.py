"""Every command of the README's ```bash blocks, and the usage lines of jobs/*.py's docstrings, runs as written.

Each README section with a bash block has one owner (COVERAGE): this module, or the test named there that runs
that section's commands itself. Here every command goes through `how_to_check`, which defaults to running it as
written with bash, in a scratch copy of the repository (its git-tracked and not-ignored files) where the demo corpus
is made by the README's own `batchtrack demo-corpus`. What the test changes in a command is the explicit table
SUBSTITUTIONS (placeholders: HEAD, TOKEN, VIDEO_ID; the loopback dashboard host) and, for the two `ray start`
commands, the flags in BACKGROUND_FLAGS (free ports, --block so the test stops exactly the processes it started).
A command that needs what this machine lacks (Docker, Kubernetes, a GPU, a 37-minute training run) is parsed:
its entry point's argparse accepts its arguments, its config files load, its deployment files have their schema.

The cluster is real: `ray get-auth-token --generate` and `ray start --head` with a HOME of its own (the head's
~/.ray/auth_token), a worker node and the job CLI with another HOME that has no token file, so they authenticate
through RAY_AUTH_TOKEN as the README says. The job's corpus and output are on the moto S3 server.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import s3fs
import yaml

from .conftest import make_corpus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
HERE = "tests/integration/test_readme_commands.py"

# README section (its heading) → the test that runs its bash blocks. Exactly one owner per section.
COVERAGE = {
    "## Two commands": HERE,  # checked as Makefile targets; CI runs them
    "## Running a job": HERE,
    "### On a cluster": HERE,
    "## Reading the output": "tests/integration/test_dataset_demo.py",
    "### SAM 2.1 checkpoints": "tests/integration/test_checkpoint_uri.py",
    "### SAM 3": "tests/integration/test_concept_job.py",  # run on sam3-test-tiny in Meta's sam3.pt layout
    "## Training the default model": HERE,  # parsed: a 37-minute run
}
RUN_HERE_IN_ORDER = ("## Running a job", "### On a cluster")

# The one table of what the test writes into a command: placeholder → value (filled once known).
SUBSTITUTIONS = {
    "http://HEAD:8265": "http://127.0.0.1:{dashboard_port}",
    "HEAD:6379": "127.0.0.1:{gcs_port}",
    "RAY_AUTH_TOKEN=TOKEN": "RAY_AUTH_TOKEN={token}",
    "--dashboard-host 0.0.0.0": "--dashboard-host 127.0.0.1",  # a test listens on loopback only
    " VIDEO_ID ": " {video_id} ",
}
PLACEHOLDER = re.compile(r"\b(HEAD|TOKEN|VIDEO_ID)\b")
# `ray start` in the background: --block keeps it in the process group the test stops; ports are free ones.
BACKGROUND_FLAGS = {
    "head": "--block --port={gcs_port} --dashboard-port={dashboard_port} --node-ip-address=127.0.0.1 --num-cpus=2 "
            "--temp-dir={temp_dir} --disable-usage-stats --include-dashboard=true "
            "--ray-client-server-port={client_port} {free_ports}",
    "worker": "--block --node-ip-address=127.0.0.1 --num-cpus=1 --disable-usage-stats {free_ports}",
}  # fmt: skip
FREE_PORT_FLAGS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                   "runtime-env-agent-port", "node-manager-port", "object-manager-port")
MAX_PACKAGE_MIB = 1.0


@dataclass(frozen=True)
class Block:
    heading: str
    text: str

    @property
    def commands(self) -> list[str]:
        return shell_commands(self.text)


def shell_commands(text: str) -> list[str]:
    """The commands of a shell snippet: continuation lines joined, comment-only and blank lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def readme_blocks(text: str | None = None) -> list[Block]:
    text = README.read_text() if text is None else text
    blocks, heading = [], ""
    in_code = False
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            in_code = not in_code
            if in_code and line.strip() == "```bash":
                end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
                blocks.append(Block(heading, "".join(lines[index + 1 : end])))
                index, in_code = end + 1, False
                continue
        elif not in_code and line.startswith("#"):
            heading = line.strip()
        index += 1
    return blocks


def docstring_commands(script: Path) -> list[str]:
    """The usage lines of a job script's docstring: indented lines starting with `python ` or `ray `."""
    doc = ast.get_docstring(ast.parse(script.read_text()), clean=False) or ""
    return [c for c in shell_commands(doc) if re.match(r"(python|ray) ", c)]


def how_to_check(command: str) -> str:
    """run | head | worker | make-target | synopsis | parse | schema — every command gets exactly one."""
    rules: list[tuple[str, str]] = [
        (r"^make (demo|test)\b", "make-target"),
        (r"^batchtrack run CORPUS OUTPUT ", "synopsis"),
        (r"^(RAY_AUTH_MODE=token )?ray start --head\b", "head"),
        (r"^(RAY_AUTH_MODE=\S+ RAY_AUTH_TOKEN=\S+ )?ray start --address\b", "worker"),
        (r"^(docker build|kubectl apply|ray up) ", "schema"),
        (r"(^python jobs/train\.py |^python -m batchtrack\.training\.export |-- python jobs/train\.py )", "parse"),
    ]
    return next((how for pattern, how in rules if re.search(pattern, command)), "run")


# ---------------------------------------------------------------------------------------------------------------
# Fast checks: coverage, Makefile targets, synopsis, parsed-only commands and deployment files.


def test_every_bash_block_is_covered_by_exactly_one_test() -> None:
    blocks = readme_blocks()
    headings = {block.heading for block in blocks}
    assert headings == set(COVERAGE), f"bash blocks without an owner in COVERAGE: {headings - set(COVERAGE)}"
    for heading, owner in COVERAGE.items():
        if owner != HERE:
            assert heading in (ROOT / owner).read_text(), f"{owner} does not run the blocks of {heading}"
    commands = [c for b in blocks if COVERAGE[b.heading] == HERE for c in b.commands]
    assert len(commands) == len(set(commands)), "a command appears twice"
    assert all(how_to_check(c) for c in commands)


def test_readme_parser_finds_blocks_and_continuations() -> None:
    text = "## A\n```bash\nx --a \\\n    --b  # c\n# only a comment\n```\n```python\nno\n```\n### B\n```bash\ny\n```\n"
    assert [(b.heading, b.commands) for b in readme_blocks(text)] == [("## A", ["x --a --b  # c"]), ("### B", ["y"])]


def test_make_targets_of_the_two_commands_exist() -> None:
    (block,) = [b for b in readme_blocks() if b.heading == "## Two commands"]
    targets = [how_to_check(c) == "make-target" and c.split()[1] for c in block.commands]
    assert targets == ["demo", "test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=False)
        assert dry.returncode == 0, dry.stderr


def test_the_run_synopsis_names_only_real_flags() -> None:
    from batchtrack.cli import build_parser

    (synopsis,) = [c for b in readme_blocks() for c in b.commands if how_to_check(c) == "synopsis"]
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]  # argparse keeps its subparsers here
    known = {option for action in run._actions for option in action.option_strings}
    flags = set(re.findall(r"--[a-z][a-z-]*", synopsis))
    assert flags and flags <= known, flags - known
    assert {"--model", "--checkpoint", "--random-weights", "--config", "--storage-option"} <= flags


PARSE_ONLY = """
import argparse, runpy, sys
real = argparse.ArgumentParser.parse_args
def parse_only(self, args=None, namespace=None):
    parsed = real(self, args, namespace)
    print("PARSED " + __import__("json").dumps(vars(parsed), default=str))
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = parse_only
target, sys.argv = sys.argv[1], sys.argv[1:]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def _parse_only(command: str) -> dict[str, Any]:
    """Run the entry point's own argparse on the command's arguments, and nothing after it."""
    words = shlex.split(command.split("#")[0])
    if words[:3] == ["ray", "job", "submit"]:
        words = words[words.index("--") + 1 :]
    assert words[0] == "python", command
    words = words[2:] if words[1] == "-m" else words[1:]
    result = subprocess.run([sys.executable, "-c", PARSE_ONLY, *words], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0 and "PARSED " in result.stdout, f"{command}: {result.stderr[-2000:]}"
    return json.loads(result.stdout.split("PARSED ", 1)[1].splitlines()[0])


def test_commands_that_need_a_gpu_or_hours_parse_and_their_configs_load() -> None:
    from batchtrack.training.config import load_train_config

    commands = [c for b in readme_blocks() if COVERAGE[b.heading] == HERE for c in b.commands]
    commands += [c for script in sorted((ROOT / "jobs").glob("*.py")) for c in docstring_commands(script)]
    parsed = [c for c in commands if how_to_check(c) == "parse"]
    assert len(parsed) >= 4, parsed  # README training block (2) and jobs/train.py's usage lines (2)
    for command in parsed:
        args = _parse_only(command)
        if args.get("config"):
            load_train_config(ROOT / args["config"])


def test_deployment_commands_name_files_with_their_schema() -> None:
    commands = [c for b in readme_blocks() for c in b.commands if how_to_check(c) == "schema"]
    assert len(commands) == 3, commands
    for command in commands:
        words = shlex.split(command.split("#")[0])
        path = ROOT / next(w for w in words if w.startswith("infra/"))
        assert path.is_file(), command
        if words[0] == "docker":
            text = path.read_text()
            assert re.search(r"^FROM ", text, re.MULTILINE) and re.search(r"^CMD \[", text, re.MULTILINE)
            assert words[-1] == "." and (ROOT / "pyproject.toml").is_file()
        elif words[0] == "kubectl":
            manifest = yaml.safe_load(path.read_text())
            assert manifest["kind"] == "RayJob" and manifest["apiVersion"].startswith("ray.io/")
            assert manifest["spec"]["entrypoint"].startswith("python jobs/track_corpus.py")
        else:
            launcher = yaml.safe_load(path.read_text())
            assert {"cluster_name", "provider", "available_node_types", "head_node_type"} <= set(launcher)


def test_the_job_package_leaves_out_the_package_weights_tests_and_data(tmp_path: Path) -> None:
    names = _package_names(_scratch_copy(tmp_path / "repo"), tmp_path / "pkg.zip")
    assert "jobs/track_corpus.py" in names and "jobs/configs/demo.yaml" in names
    assert not [n for n in names if n.startswith(("batchtrack/", "tests/", "bench/", ".git/", "demo/", ".venv/"))]
    assert not [n for n in names if n.endswith((".safetensors", ".pt"))]
    assert (tmp_path / "pkg.zip").stat().st_size < MAX_PACKAGE_MIB * 2**20


def _package_names(folder: Path, target: Path) -> list[str]:
    """What `--working-dir folder` uploads, built by Ray's own packaging (.gitignore and .rayignore honoured)."""
    from ray._private.runtime_env.packaging import create_package

    create_package(str(folder), target, include_gitignore=True)
    with zipfile.ZipFile(target) as archive:
        return [n for n in archive.namelist() if not n.endswith("/")]


def _scratch_copy(target: Path) -> Path:
    """The repository as a user's checkout holds it: tracked and not-ignored files (no demo/, .venv/, runs/)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


# ---------------------------------------------------------------------------------------------------------------
# The README's commands run as written (placeholders filled), then the job scripts' usage lines.


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


IGNORED_SHELL_VARS = {"_", "SHLVL", "PWD", "OLDPWD"}


@dataclass
class Session:
    """Runs commands one after another like a user's shell: exported variables carry over."""

    cwd: Path
    env: dict[str, str]
    values: dict[str, str]
    homes: dict[str, Path]
    background: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)
    package_mib: list[float] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def fill(self, command: str) -> str:
        for placeholder, template in SUBSTITUTIONS.items():
            if placeholder in command:
                command = command.replace(placeholder, template.format(**self.values))
        assert not PLACEHOLDER.search(command.split(" #")[0]), f"unfilled placeholder in {command!r}"
        return command

    def run(self, command: str, home: str = "client", timeout: float = 400) -> subprocess.CompletedProcess[str]:
        filled = self.fill(command)
        env_file = self.cwd.parent / "env.after"
        script = f"{filled}\nenv -0 > {shlex.quote(str(env_file))}\n"
        env = dict(self.env, HOME=str(self.homes[home]))
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=self.cwd, env=env,
                                capture_output=True, text=True, timeout=timeout, check=False)
        self.log.append(f"$ {filled}\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        if result.returncode == 0:
            after = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
            self.env = {k: v for k, v in after.items() if k not in IGNORED_SHELL_VARS and k != "HOME"}
        return result

    def start(self, command: str, role: str, home: str, ready: Callable[[Path], bool]) -> None:
        free_ports = " ".join(f"--{name}={_free_port()}" for name in FREE_PORT_FLAGS)
        filled = f"{self.fill(command)} {BACKGROUND_FLAGS[role].format(free_ports=free_ports, **self.values)}"
        log_path = self.cwd.parent / f"{role}.log"
        with log_path.open("w") as log:
            env = dict(self.env, HOME=str(self.homes[home]))
            proc = subprocess.Popen(["bash", "-c", filled], cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.background.append((proc, log_path))
        self.log.append(f"$ {filled} &")
        deadline = time.monotonic() + 180
        while not ready(log_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{role} did not start: {log_path.read_text()[-3000:]}")
            time.sleep(1)

    def stop(self) -> None:
        for proc, _ in reversed(self.background):  # each in its own process group: the test's processes only
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _dashboard_answers(address: str) -> Callable[[Path], bool]:
    def ready(_: Path) -> bool:
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=5):
                return True
        except urllib.error.HTTPError:
            return True  # 401 without a token: the job server is up
        except OSError:
            return False

    return ready


def _runtime_started(log_path: Path) -> bool:
    return "Ray runtime started" in log_path.read_text()


@pytest.fixture
def session(tmp_path: Path, s3_server: Any) -> Iterator[Session]:
    repo = _scratch_copy(tmp_path / "repo")
    homes = {name: tmp_path / f"home-{name}" for name in ("local", "head", "client")}
    for home in homes.values():
        home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "BATCHTRACK_", "AWS_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_PACKAGE_SIZE_WARNING_MIB"] = "1"  # any package past 1 MiB warns: the test fails on the warning
    temp_dir = tempfile.mkdtemp(prefix="btrd")  # short: Ray's socket paths must fit in 107 bytes
    values = {"gcs_port": str(_free_port()), "dashboard_port": str(_free_port()), "client_port": str(_free_port()),
              "temp_dir": temp_dir}
    bucket = s3_server.create_bucket("bucket")
    corpus = make_corpus(tmp_path / "videos", num_videos=1, num_frames=12, broken=False)
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    for video in corpus.videos:
        fs.put_file(str(video), f"bucket/videos/{video.name}")
    prompts = [dict(json.loads(line), video=f"videos/{json.loads(line)['video']}")
               for line in corpus.prompts.read_text().splitlines()]
    fs.pipe_file("bucket/prompts.jsonl", "".join(json.dumps(p) + "\n" for p in prompts).encode())
    # job.yaml: the README's placeholder config, here the tiny corpus on the S3 server (credentials are test ones)
    (repo / "job.yaml").write_text(yaml.safe_dump({
        "corpus": f"{bucket}/videos", "prompts": f"{bucket}/prompts.jsonl", "output": f"{bucket}/out",
        "storage_options": s3_server.storage_options, "clip": {"length_frames": 8},
        "actors": {"num_actors": 1, "num_cpus": 1}, "max_failed_fraction": 0.0,
    }))  # fmt: skip
    run = Session(repo, env, values, homes)
    try:
        yield run
    finally:
        run.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_readme_commands_run_as_written(session: Session, s3_server: Any) -> None:
    blocks = readme_blocks()
    ran: list[str] = []
    for heading in RUN_HERE_IN_ORDER:
        for command in [c for b in blocks if b.heading == heading for c in b.commands]:
            how = how_to_check(command)
            if how in ("synopsis", "schema"):
                continue  # the fast tests above check these
            ran.append(command)
            if how == "head":
                session.start(command, "head", "head",
                              _dashboard_answers(f"http://127.0.0.1:{session.values['dashboard_port']}"))
                continue
            if how == "worker":
                session.start(command, "worker", "client", _runtime_started)
                continue
            home = "head" if command.startswith("ray get-auth-token") else "local" if heading == "## Running a job" \
                else "client"
            result = _submit_when_agent_is_up(session, command, home)
            assert result.returncode == 0, "\n".join(session.log)[-8000:]
            _after(command, result, session)
    for script in sorted((ROOT / "jobs").glob("*.py")):
        for command in docstring_commands(script):
            if how_to_check(command) == "run":
                ran.append(command)
                result = _submit_when_agent_is_up(session, command, "client")
                assert result.returncode == 0, "\n".join(session.log)[-8000:]
                _after(command, result, session)
    # What the two submits uploaded: Ray's own packaging of the same folder (its warning past 1 MiB never showed).
    _package_names(session.cwd, session.cwd.parent / "pkg.zip")
    session.package_mib.append((session.cwd.parent / "pkg.zip").stat().st_size / 2**20)
    assert max(session.package_mib) < MAX_PACKAGE_MIB, session.package_mib
    print(f"job package: {session.package_mib[-1]:.3f} MiB")
    assert sum("ray job submit" in c for c in ran) == 2 and any(c.startswith("batchtrack render") for c in ran)
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    assert fs.ls("bucket/out/clips") and fs.ls("bucket/masks/clips") and fs.exists("bucket/out/_manifest.json")


def _submit_when_agent_is_up(session: Session, command: str, home: str) -> subprocess.CompletedProcess[str]:
    for _ in range(30):  # the head's job agent registers a few seconds after the job server answers
        result = session.run(command, home)
        if "No available agent" not in result.stdout + result.stderr:
            break
        time.sleep(2)
    return result


def _after(command: str, result: subprocess.CompletedProcess[str], session: Session) -> None:
    """What each kind of command must have done, and the values later commands need."""
    out = result.stdout + result.stderr
    if command.startswith("ray get-auth-token"):
        session.values["token"] = (session.homes["head"] / ".ray" / "auth_token").read_text().strip()
        assert len(session.values["token"]) >= 32
    elif command.startswith("batchtrack inspect"):
        ids = re.findall(r"^  ([0-9a-f]{16}) (\d+) ", result.stdout, re.MULTILINE)
        assert ids and int(ids[0][1]) > 0, out
        session.values["video_id"] = ids[0][0]
    elif command.startswith("batchtrack run") or "track_corpus.py" in command:
        tracked = re.search(r"^\s+ok\s+[1-9]", out, re.MULTILINE)
        resumed = re.search(r"committed by an earlier run: [1-9]", out)  # the same job again: nothing to track
        assert tracked or resumed, out[-3000:]
    elif command.startswith("batchtrack render"):
        picture = session.cwd / shlex.split(command, comments=True)[-1]
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    elif command.startswith("batchtrack eval"):
        assert "J&F" in out, out
    if "ray job submit" in command:
        assert "succeeded" in out, out[-3000:]
        assert "approaching the maximum upload size" not in out  # RAY_PACKAGE_SIZE_WARNING_MIB=1
