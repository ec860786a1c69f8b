"""Job overhead vs corpus size: the real batch job on N tiny videos, on local disk and on a moto S3 server.

    python bench/scale.py --videos 400 4000 --backends local s3
    python bench/scale.py --quick --backends local            # 40 and 200 videos (the test runs this)

Each video is 96x64, 12 frames (one clip), with one box prompt on frame 0; the corpus is one
synthetic video written once and copied under N names (a copy is a distinct video: its id hashes
its URI, size and mtime/ETag), each with its own prompt line. The job runs with a cheap classical
tracker (`--model baseline-homography`, no automatic mode) on one embedded local Ray
(`ray.init(address="local", num_cpus=--cpus)`) shared by every run; the S3 backend is moto's server on
127.0.0.1 (in a process of its own), reached through `storage_options` and fake AWS_* credentials.

Per (backend, N) one row, all measured in this one invocation:
- `wall s`: run_job's wall time; `unit s`: the units' own time in the actors, summed (JobSummary.unit_seconds);
- `wall/video ms`; `overhead/video ms` = (wall − unit s / actors) / N: wall time not covered by tracking;
- `RSS +MB`: the driver process's peak RSS during the first run minus its RSS just before it
  (sampled every 20 ms with psutil); `RSS MB` the peak itself;
- `first unit s`: from run_job's start to the first clips/ file (the commit record) appearing;
- `masks/ pointers/ clips/`: files in each table, and `videos/file` (N / masks files);
- `duckdb x`: DuckDB `count(*)` over masks/*.parquet divided by the same over the same rows copied
  into one Parquet file on the same backend (best of 3 each; S3 goes through DuckDB's fsspec hook).
  count(*) reads only footers, so this is the cost per file; `scan x` is the same ratio for a query
  that reads data (`sum(area), count(distinct video_id)`);
- `resume s` and `resume/first`: a second run_job on the finished output, and the units it
  tracked again (`retracked`, 0 when everything resumed).

The prompts axis (`--prompts 10000 100000 1000000`): one corpus of `--prompt-videos` videos and a
manifest of L lines: one box per corpus video, spread through the file, and L − K lines for L − K
distinct videos of the archive outside the corpus (a manifest made for the whole archive, a job over
one part of it). Automatic mode is off, so the manifest drives the job. Per (backend, L):
- `driver +MB`: the driver's peak RSS minus its RSS before the run (every 20 ms);
- `worker MB`: the largest RSS of any Ray worker during the run (the tracking actor included);
  `reader +MB`: the largest growth of a worker while it runs a manifest task (read, list or join) over
  its RSS when idle before it; `manifest MB`: the manifest's in-memory size, measured as the RSS growth
  of reading it the old way (`load_manifest`, in a subprocess; extrapolated per line above
  `--measure-manifest-up-to` lines, marked ~); `reader/manifest` their ratio (goal ≤ 0.10);
- `read s`: from run_job's start to the manifest read, checked and joined; `first unit s` and `wall s`.
Then the goals (driver growth from the smallest to the largest L ≤ 50 MB; reader growth ≤ 1/10 of the
manifest; first unit before the manifest is read) and 10M lines on paper from the slope of the last two.

A small warm-up job runs first, so the first row does not carry Ray Data's one-time start-up.
Then, per backend, the issue's goals as ratios (overhead at the largest N vs the smallest, RSS
growth between them) and, when both backends ran, S3 wall / local wall per N. Nothing is asserted;
the last line is the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import fsspec
import psutil
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import ray

from batchtrack.config import load_config
from batchtrack.pipeline.job import JobSummary, run_job
from batchtrack.synthetic.corpus import write_synthetic_video
from batchtrack.synthetic.scene import SceneSpec

TABLES = ("masks", "pointers", "clips")
S3_KEY = S3_SECRET = "testing"
S3_REGION = "us-east-1"
BUCKET = "scale-bench"


@dataclass
class Row:
    backend: str
    videos: int
    units: int
    wall_s: float
    unit_s: float
    wall_per_video_ms: float
    overhead_per_video_ms: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_growth_mb: float
    first_unit_s: float | None
    masks_files: int
    pointers_files: int
    clips_files: int
    mask_rows: int
    duckdb_dir_ms: float
    duckdb_one_ms: float
    duckdb_ratio: float
    scan_dir_ms: float
    scan_one_ms: float
    scan_ratio: float
    resume_s: float
    resume_ratio: float
    resumed_units: int
    resume_units: int
    retracked: int
    ok: int
    failed: int


@dataclass(frozen=True)
class Backend:
    """Where a corpus and an output live, and how to read them."""

    name: str
    root: str  # URI under which corpora and outputs are written
    fs: fsspec.AbstractFileSystem
    storage_options: dict[str, Any]

    def path(self, uri: str) -> str:
        return uri.removeprefix("s3://")

    def list_files(self, uri: str) -> list[str]:
        self.fs.invalidate_cache()
        try:
            return [p for p in self.fs.find(self.path(uri)) if not p.endswith("/")]
        except FileNotFoundError:
            return []

    def has_any(self, uri: str) -> bool:
        """Whether the folder `uri` holds at least one file (one cheap listing)."""
        if self.name == "local":
            try:
                with os.scandir(uri) as entries:
                    return any(entry.name.endswith(".parquet") for entry in entries)
            except FileNotFoundError:
                return False
        bucket, _, prefix = self.path(uri).partition("/")
        reply = self.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix.rstrip("/") + "/", MaxKeys=1)
        return bool(reply.get("KeyCount", 0))


# -- corpus ---------------------------------------------------------------------------------------


def template_video(work: Path) -> tuple[bytes, list[float]]:
    """One 96x64, 12-frame synthetic video with one object, and the box prompt of that object on frame 0."""
    for seed in range(50):
        spec = SceneSpec(seed=seed, width=96, height=64, num_frames=12, num_objects=1, exit_prob=0.0)
        video = write_synthetic_video(spec, work / "template", f"seed{seed}")
        first = [p for p in video.prompts if p.frame_index == 0]
        if first:
            return video.video_path.read_bytes(), [float(v) for v in first[0].box]
    raise RuntimeError("no synthetic scene with an object visible on frame 0")


def write_corpus(folder: Path, count: int, data: bytes, box: list[float]) -> None:
    """`count` copies of one video under distinct names, and a prompt manifest with one line each."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        name = f"v{index:06d}.mp4"
        (folder / name).write_bytes(data)
        lines.append(json.dumps({"video": name, "frame": 0, "object_id": 1, "box": box}) + "\n")
    (folder / "prompts.jsonl").write_text("".join(lines))


def place_corpus(local: Path, backend: Backend, name: str) -> str:
    """The corpus folder's URI on `backend` (uploaded in one batched s3fs call on S3)."""
    if backend.name == "local":
        return str(local)
    remote = f"{backend.path(backend.root)}/{name}"
    files = sorted(local.iterdir())
    backend.fs.put([str(p) for p in files], [f"{remote}/{p.name}" for p in files])
    return f"s3://{remote}"


# -- measurements ---------------------------------------------------------------------------------


class Sampler:
    """A background thread that calls `probe` every `every` seconds until stopped."""

    def __init__(self, probe: Callable[[], bool], every: float) -> None:
        self._probe = probe
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._probe():
                    return
            except Exception as exc:  # a probe failing (a listing racing a write) is tried again
                if not self.errors:
                    print(f"bench: probe failed: {exc!r}", file=sys.stderr)
                self.errors += 1
            self._stop.wait(self._every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def measured_run(cfg: Any, backend: Backend) -> tuple[JobSummary, float, float, float | None]:
    """run_job with the driver's RSS sampled and the first clips/ file watched: summary, RSS before, peak, first."""
    me = psutil.Process()
    before = me.memory_info().rss
    peak = before
    first: float | None = None
    started = time.perf_counter()
    clips = f"{cfg.output.rstrip('/')}/clips"

    def rss() -> bool:
        nonlocal peak
        peak = max(peak, me.memory_info().rss)
        return False

    def committed() -> bool:
        nonlocal first
        if backend.has_any(clips):
            first = time.perf_counter() - started
            return True
        return False

    with Sampler(rss, 0.02), Sampler(committed, 0.05 if backend.name == "local" else 0.1):
        summary = run_job(cfg)
    rss()
    return summary, before / 2**20, peak / 2**20, first


def best_of(runs: int, query: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        query()
        times.append(time.perf_counter() - began)
    return min(times)


def duckdb_times(backend: Backend, output: str, one_folder: str) -> tuple[float, float, float, float, int]:
    """count(*), then a scan (sum of a column, distinct videos), over masks/*.parquet and over one file
    holding the same rows: seconds of count dir, count one, scan dir, scan one; rows.

    count(*) reads only Parquet footers, so it measures the cost of each file; the scan reads data.

    The copy is the only file of `one_folder` and is read through the same glob, so both sides
    take the same path through DuckDB (and its fsspec hook on S3).
    """
    fs = backend.fs
    fs.invalidate_cache()
    table = ds.dataset(backend.path(f"{output}/masks"), format="parquet", filesystem=fs).to_table()
    fs.makedirs(backend.path(one_folder), exist_ok=True)
    with fs.open(backend.path(f"{one_folder}/masks.parquet"), "wb") as handle:
        pq.write_table(table, handle)
    fs.invalidate_cache()
    con = duckdb.connect()
    if backend.name != "local":
        con.register_filesystem(fs)

    def count(pattern: str) -> int:
        return int(con.execute(f"select count(*) from read_parquet('{pattern}')").fetchone()[0])  # type: ignore[index]

    glob, one = f"{output}/masks/*.parquet", f"{one_folder}/*.parquet"
    rows = count(glob)
    if rows != table.num_rows or count(one) != rows:
        raise RuntimeError(f"DuckDB counts {rows} rows in masks/, pyarrow {table.num_rows}")

    def scan(pattern: str) -> object:
        return con.execute(f"select sum(area), count(distinct video_id) from read_parquet('{pattern}')").fetchone()

    if scan(glob) != scan(one):
        raise RuntimeError("DuckDB scans of masks/ and of its one-file copy differ")
    return (
        best_of(3, lambda: count(glob)),
        best_of(3, lambda: count(one)),
        best_of(3, lambda: scan(glob)),
        best_of(3, lambda: scan(one)),
        rows,
    )


def bench_one(backend: Backend, count: int, corpus: str, prompts: str, args: argparse.Namespace) -> Row:
    output = f"{backend.root}/out-{count}"
    cfg = load_config(
        None,
        corpus=corpus,
        output=output,
        prompts=prompts,
        model={"name": args.model},
        auto={"enabled": False},
        actors={"num_actors": args.actors, "num_cpus": 1},
        storage_options=backend.storage_options,
    )
    summary, rss_before, rss_peak, first = measured_run(cfg, backend)
    files = {table: len(backend.list_files(f"{output}/{table}")) for table in TABLES}
    began = time.perf_counter()
    again = run_job(cfg)
    resume = time.perf_counter() - began
    dir_s, one_s, scan_dir, scan_one, rows = duckdb_times(backend, output, f"{backend.root}/one-{count}")
    wall = summary.wall_seconds
    return Row(
        backend=backend.name,
        videos=summary.videos,
        units=summary.units,
        wall_s=wall,
        unit_s=summary.unit_seconds,
        wall_per_video_ms=1000 * wall / count,
        overhead_per_video_ms=1000 * (wall - summary.unit_seconds / args.actors) / count,
        rss_before_mb=rss_before,
        rss_peak_mb=rss_peak,
        rss_growth_mb=rss_peak - rss_before,
        first_unit_s=first,
        masks_files=files["masks"],
        pointers_files=files["pointers"],
        clips_files=files["clips"],
        mask_rows=rows,
        duckdb_dir_ms=1000 * dir_s,
        duckdb_one_ms=1000 * one_s,
        duckdb_ratio=dir_s / max(one_s, 1e-9),
        scan_dir_ms=1000 * scan_dir,
        scan_one_ms=1000 * scan_one,
        scan_ratio=scan_dir / max(scan_one, 1e-9),
        resume_s=resume,
        resume_ratio=resume / max(wall, 1e-9),
        resumed_units=again.resumed_units,
        resume_units=again.units,
        retracked=again.units - again.resumed_units,
        ok=summary.ok,
        failed=summary.failed,
    )


WARM_UP_VIDEOS = 8


def warm_up(work: Path, data: bytes, box: list[float], args: argparse.Namespace) -> float:
    """One small job before the measured ones, so the first row does not carry Ray's one-time start-up."""
    corpus = work / "corpus-warm-up"
    write_corpus(corpus, WARM_UP_VIDEOS, data, box)
    cfg = load_config(
        None,
        corpus=str(corpus),
        output=str(work / "out-warm-up"),
        prompts=str(corpus / "prompts.jsonl"),
        model={"name": args.model},
        auto={"enabled": False},
        actors={"num_actors": args.actors, "num_cpus": 1},
    )
    return run_job(cfg).wall_seconds


# -- the prompts axis ---------------------------------------------------------------------------------


@dataclass
class PromptRow:
    backend: str
    lines: int
    manifest_mb: float  # bytes of the JSONL file
    manifest_memory_mb: float
    memory_measured: bool  # False: extrapolated from a smaller manifest
    partitions_videos: int  # videos tracked
    unmatched_lines: int
    ok: int
    driver_before_mb: float
    driver_peak_mb: float
    driver_growth_mb: float
    worker_peak_mb: float
    reader_growth_mb: float
    read_s: float
    first_unit_s: float | None
    wall_s: float


def write_prompt_corpus(folder: Path, videos: int, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(videos):
        (folder / f"v{index:06d}.mp4").write_bytes(data)


def write_prompt_manifest(path: Path, lines: int, videos: int, box: list[float]) -> None:
    """`lines` lines: one box per corpus video (`corpus/vNNNNNN.mp4`) spread through the file, the rest for
    distinct videos outside the corpus (`archive/…`), written in blocks to keep this process small."""
    every = max(1, lines // max(videos, 1))
    with path.open("w") as handle:
        block: list[str] = []
        real = 0
        for index in range(lines):
            if index % every == 0 and real < videos:
                video, real = f"corpus/v{real:06d}.mp4", real + 1
            else:
                video = f"archive/x{index:09d}.mp4"
            block.append(json.dumps({"video": video, "frame": 0, "object_id": 1, "box": box}))
            if len(block) >= 50_000:
                handle.write("\n".join(block) + "\n")
                block = []
        if block:
            handle.write("\n".join(block) + "\n")


def manifest_memory_mb(path: Path) -> float:
    """RSS growth of reading the manifest the way the driver did before (`load_manifest`), in a subprocess."""
    code = (
        "import sys, psutil; from batchtrack.io.prompts import load_manifest; p = psutil.Process(); "
        "b = p.memory_info().rss; m = load_manifest(sys.argv[1]); print((p.memory_info().rss - b) / 2**20)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


MANIFEST_TASKS = ("_read_task", "_join_task", "_list_task")


class WorkerWatch:
    """Ray workers' RSS: the largest of any, and the largest growth of one over its idle RSS while it runs a
    manifest task (its title says which task it runs)."""

    def __init__(self) -> None:
        self.peak = 0
        self.growth = 0
        self._idle: dict[int, int] = {}

    def sample(self) -> bool:
        for proc in psutil.Process().children(recursive=True):
            try:
                title = " ".join(proc.cmdline())
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            if not title.startswith("ray::") and "default_worker.py" not in title:
                continue
            self.peak = max(self.peak, rss)
            if any(task in title for task in MANIFEST_TASKS):
                self.growth = max(self.growth, rss - self._idle.get(proc.pid, rss))
            elif "IDLE" in title or proc.pid not in self._idle:
                self._idle[proc.pid] = rss
        return False


def bench_prompts(
    backend: Backend, lines: int, corpus: str, manifest: str, memory: tuple[float, bool], args: argparse.Namespace
) -> PromptRow:
    output = f"{backend.root}/out-prompts-{lines}"
    cfg = load_config(
        None,
        corpus=corpus,
        output=output,
        prompts=manifest,
        model={"name": args.model},
        auto={"enabled": False},
        actors={"num_actors": args.actors, "num_cpus": 1},
        unit={"max_videos": 1},  # a unit per video: the first one is committed before the last starts
        storage_options=backend.storage_options,
    )
    watch = WorkerWatch()
    watch.sample()
    with Sampler(watch.sample, 0.05):
        summary, before, peak, first = measured_run(cfg, backend)
    size = backend.fs.size(backend.path(manifest)) / 2**20
    return PromptRow(
        backend=backend.name,
        lines=lines,
        manifest_mb=size,
        manifest_memory_mb=memory[0],
        memory_measured=memory[1],
        partitions_videos=summary.videos,
        unmatched_lines=summary.unmatched_lines,
        ok=summary.ok,
        driver_before_mb=before,
        driver_peak_mb=peak,
        driver_growth_mb=peak - before,
        worker_peak_mb=watch.peak / 2**20,
        reader_growth_mb=watch.growth / 2**20,
        read_s=summary.manifest_seconds,
        first_unit_s=first,
        wall_s=summary.wall_seconds,
    )


PROMPT_COLUMNS: list[tuple[str, str, Callable[[PromptRow], str]]] = [
    ("lines", ">9", lambda r: f"{r.lines}"),
    ("file MB", ">7", lambda r: f"{r.manifest_mb:.1f}"),
    ("manifest MB", ">11", lambda r: f"{'' if r.memory_measured else '~'}{r.manifest_memory_mb:.0f}"),
    ("videos", ">6", lambda r: f"{r.partitions_videos}"),
    ("unmatched", ">9", lambda r: f"{r.unmatched_lines}"),
    ("driver MB", ">9", lambda r: f"{r.driver_peak_mb:.0f}"),
    ("driver +MB", ">10", lambda r: f"{r.driver_growth_mb:.1f}"),
    ("worker MB", ">9", lambda r: f"{r.worker_peak_mb:.0f}"),
    ("reader +MB", ">10", lambda r: f"{r.reader_growth_mb:.1f}"),
    ("reader/manifest", ">15", lambda r: f"{r.reader_growth_mb / max(r.manifest_memory_mb, 1e-9):.3f}"),
    ("read s", ">6", lambda r: f"{r.read_s:.1f}"),
    ("first unit s", ">12", lambda r: "-" if r.first_unit_s is None else f"{r.first_unit_s:.1f}"),
    ("wall s", ">6", lambda r: f"{r.wall_s:.1f}"),
]


def prompt_table(rows: list[PromptRow]) -> str:
    lines = ["  ".join(f"{name:{align}}" for name, align, _ in PROMPT_COLUMNS)]
    lines += ["  ".join(f"{cell(row):{align}}" for _, align, cell in PROMPT_COLUMNS) for row in rows]
    return "\n".join(lines)


def prompt_goals(rows: list[PromptRow]) -> list[str]:
    """The issue's goals for the prompts axis, and 10M lines on paper from the slope of the two largest runs."""
    lines = []
    for name in sorted({r.backend for r in rows}):
        group = sorted((r for r in rows if r.backend == name), key=lambda r: r.lines)
        small, large = group[0], group[-1]
        if small is not large:
            lines.append(
                f"{name}: driver RSS growth {small.lines}→{large.lines} lines: "
                f"{large.driver_growth_mb - small.driver_growth_mb:+.1f} MB (goal ≤ 50 MB)"
            )
        worst = max(group, key=lambda r: r.reader_growth_mb / max(r.manifest_memory_mb, 1e-9))
        lines.append(
            f"{name}: largest manifest-task worker growth {worst.reader_growth_mb:.1f} MB at {worst.lines} lines = "
            f"{worst.reader_growth_mb / max(worst.manifest_memory_mb, 1e-9):.3f} of the manifest's "
            f"{worst.manifest_memory_mb:.0f} MB in memory (goal ≤ 0.10)"
        )
        early = [r for r in group if r.first_unit_s is not None and r.first_unit_s < r.read_s]
        lines.append(
            f"{name}: first unit before the manifest was read in {len(early)} of {len(group)} runs (goal: all); "
            + ", ".join(f"{r.lines}: first {r.first_unit_s or 0:.1f} s vs read {r.read_s:.1f} s" for r in group)
        )
        if len(group) >= 2:
            a, b = group[-2], group[-1]

            def at_10m(field: str, a: PromptRow = a, b: PromptRow = b) -> float:
                slope = (getattr(b, field) - getattr(a, field)) / (b.lines - a.lines)
                return getattr(b, field) + slope * (10_000_000 - b.lines)

            lines.append(
                f"{name}: 10M lines on paper (slope {a.lines}→{b.lines}): wall {at_10m('wall_s'):.0f} s, read "
                f"{at_10m('read_s'):.0f} s, driver +{at_10m('driver_growth_mb'):.0f} MB, manifest task worker "
                f"+{at_10m('reader_growth_mb'):.0f} MB, manifest in memory {at_10m('manifest_memory_mb'):.0f} MB"
            )
    return lines


def run_prompt_axis(
    work: Path, data: bytes, box: list[float], backends: dict[str, Backend], args: argparse.Namespace
) -> list[PromptRow]:
    corpus = work / "prompt-axis" / "corpus"
    write_prompt_corpus(corpus, args.prompt_videos, data)
    per_line: float | None = None
    rows: list[PromptRow] = []
    sizes = {name: sorted(args.s3_prompts if name == "s3" and args.s3_prompts else args.prompts) for name in backends}
    for lines in sorted({n for group in sizes.values() for n in group}):
        manifest = work / "prompt-axis" / f"prompts-{lines}.jsonl"
        write_prompt_manifest(manifest, lines, args.prompt_videos, box)
        if lines <= args.measure_manifest_up_to or per_line is None:
            memory = (manifest_memory_mb(manifest), True)
            per_line = memory[0] / lines
        else:
            memory = (per_line * lines, False)
        for name, backend in backends.items():
            if lines not in sizes[name]:
                continue
            if name == "local":
                corpus_uri, manifest_uri = str(corpus), str(manifest)
            else:
                remote = f"{backend.path(backend.root)}/prompt-axis"
                if not backend.fs.exists(f"{remote}/corpus"):
                    files = sorted(corpus.iterdir())
                    backend.fs.put([str(p) for p in files], [f"{remote}/corpus/{p.name}" for p in files])
                backend.fs.put_file(str(manifest), f"{remote}/{manifest.name}")
                corpus_uri, manifest_uri = f"s3://{remote}/corpus", f"s3://{remote}/{manifest.name}"
            row = bench_prompts(backend, lines, corpus_uri, manifest_uri, memory, args)
            rows.append(row)
            print(f"[prompts {name} {lines}] {json.dumps(asdict(row))}", flush=True)
        manifest.unlink()
    return rows


# -- backends -------------------------------------------------------------------------------------


class MotoProcess:
    """moto's S3 server in its own process on 127.0.0.1: what it stores and serves is not in the driver's RSS."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=5) as reply:
                    reply.read()
                return
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError(f"moto's server did not start on {self.endpoint}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)


@contextmanager
def moto_backend() -> Iterator[Backend]:
    """A fresh moto S3 server on 127.0.0.1 with one bucket; AWS_* variables point at it for Ray's workers too."""
    import boto3
    import s3fs

    server = MotoProcess()
    server.start()
    endpoint = server.endpoint
    saved = {
        name: os.environ.get(name)
        for name in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL_S3",
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
        )
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID=S3_KEY,
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_DEFAULT_REGION=S3_REGION,
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")) as reply:
            reply.read()
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name=S3_REGION,
        ).create_bucket(Bucket=BUCKET)
        options = {
            "key": S3_KEY,
            "secret": S3_SECRET,
            "endpoint_url": endpoint,
            "client_kwargs": {"region_name": S3_REGION},
        }
        s3fs.S3FileSystem.clear_instance_cache()
        yield Backend("s3", f"s3://{BUCKET}", s3fs.S3FileSystem(**options), options)
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- report ---------------------------------------------------------------------------------------

COLUMNS: list[tuple[str, str, Callable[[Row], str]]] = [
    ("videos", ">7", lambda r: f"{r.videos}"),
    ("units", ">5", lambda r: f"{r.units}"),
    ("wall s", ">7", lambda r: f"{r.wall_s:.1f}"),
    ("unit s", ">7", lambda r: f"{r.unit_s:.1f}"),
    ("wall/video ms", ">13", lambda r: f"{r.wall_per_video_ms:.2f}"),
    ("overhead/video ms", ">17", lambda r: f"{r.overhead_per_video_ms:.2f}"),
    ("RSS MB", ">6", lambda r: f"{r.rss_peak_mb:.0f}"),
    ("RSS +MB", ">7", lambda r: f"{r.rss_growth_mb:.1f}"),
    ("first unit s", ">12", lambda r: "-" if r.first_unit_s is None else f"{r.first_unit_s:.1f}"),
    ("masks/", ">6", lambda r: f"{r.masks_files}"),
    ("pointers/", ">9", lambda r: f"{r.pointers_files}"),
    ("clips/", ">6", lambda r: f"{r.clips_files}"),
    ("videos/file", ">11", lambda r: f"{r.videos / max(r.masks_files, 1):.0f}"),
    ("duckdb ms", ">9", lambda r: f"{r.duckdb_dir_ms:.1f}"),
    ("1-file ms", ">9", lambda r: f"{r.duckdb_one_ms:.1f}"),
    ("duckdb x", ">8", lambda r: f"{r.duckdb_ratio:.2f}"),
    ("scan x", ">6", lambda r: f"{r.scan_ratio:.2f}"),
    ("resume s", ">8", lambda r: f"{r.resume_s:.1f}"),
    ("resume/first", ">12", lambda r: f"{r.resume_ratio:.2f}"),
    ("retracked", ">9", lambda r: f"{r.retracked}"),
]


def table(rows: list[Row]) -> str:
    header = "  ".join(f"{name:{align}}" for name, align, _ in COLUMNS)
    lines = [header]
    for row in rows:
        lines.append("  ".join(f"{cell(row):{align}}" for _, align, cell in COLUMNS))
    return "\n".join(lines)


def goals(rows: list[Row]) -> list[str]:
    """The issue's goals as measured ratios, per backend and across backends."""
    lines = []
    by_backend: dict[str, list[Row]] = {}
    for row in rows:
        by_backend.setdefault(row.backend, []).append(row)
    for name, group in by_backend.items():
        small, large = min(group, key=lambda r: r.videos), max(group, key=lambda r: r.videos)
        if small is not large:
            lines.append(
                f"{name}: overhead/video {small.videos}→{large.videos}: {small.overhead_per_video_ms:.2f} → "
                f"{large.overhead_per_video_ms:.2f} ms (goal: not larger, ≤ 10 ms); driver RSS growth "
                f"{large.rss_growth_mb - small.rss_growth_mb:+.1f} MB (goal ≤ 50 MB)"
            )
        worst = max(group, key=lambda r: r.resume_ratio)
        lines.append(
            f"{name}: resume/first at most {worst.resume_ratio:.2f} (goal ≤ 0.10); videos per masks/ file at "
            f"least {min(r.videos / max(r.masks_files, 1) for r in group):.0f} (goal ≥ 100); DuckDB masks/ vs one "
            f"file at most {max(r.duckdb_ratio for r in group):.2f}x (goal ≤ 3x; a scan: at most "
            f"{max(r.scan_ratio for r in group):.2f}x)"
        )
    local = {r.videos: r for r in by_backend.get("local", [])}
    for row in by_backend.get("s3", []):
        if row.videos in local:
            lines.append(
                f"s3 / local wall at {row.videos} videos: {row.wall_s / local[row.videos].wall_s:.2f}x (goal ≤ 2x)"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, nargs="*", default=[400, 4000], help="corpus sizes (none: skip)")
    parser.add_argument(
        "--s3-videos", type=int, nargs="+", default=None, help="corpus sizes on S3 (default: those of --videos)"
    )
    parser.add_argument("--quick", action="store_true", help="40 and 200 videos (a smoke run)")
    parser.add_argument("--backends", nargs="+", choices=("local", "s3"), default=["local", "s3"])
    parser.add_argument("--model", default="baseline-homography")
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="where corpora and outputs go (default: a temp folder)")
    parser.add_argument("--prompts", type=int, nargs="*", default=[], help="the prompts axis: manifest lines")
    parser.add_argument(
        "--s3-prompts", type=int, nargs="+", default=None, help="manifest lines on S3 (default: those of --prompts)"
    )
    parser.add_argument("--prompt-videos", type=int, default=8, help="corpus videos of the prompts axis")
    parser.add_argument(
        "--measure-manifest-up-to",
        type=int,
        default=100_000,
        help="measure the manifest's in-memory size up to this many lines, extrapolate per line above",
    )
    args = parser.parse_args()
    sizes = [40, 200] if args.quick else sorted(args.videos)
    s3_sizes = sorted(args.s3_videos) if args.s3_videos else sizes

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bt-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    data, box = template_video(work)
    corpora: dict[int, Path] = {}
    for count in sorted({*sizes, *(s3_sizes if "s3" in args.backends else [])}):
        corpora[count] = work / f"corpus-{count}"
        write_corpus(corpora[count], count, data, box)

    rows: list[Row] = []
    prompt_rows: list[PromptRow] = []
    with moto_backend() if "s3" in args.backends else nullcontext() as s3:
        # Ray starts after the S3 variables are set, so its workers inherit them.
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            warm = warm_up(work, data, box, args)
            print(
                f"[warm-up] a {WARM_UP_VIDEOS}-video job on local disk first (Ray Data's one-time start): {warm:.1f} s",
                flush=True,
            )
            for name in args.backends:
                if name == "local":
                    backend = Backend("local", str(work / "local"), fsspec.filesystem("file"), {})
                    counts = sizes
                else:
                    assert s3 is not None
                    backend, counts = s3, s3_sizes
                for count in counts:
                    corpus = place_corpus(corpora[count], backend, f"corpus-{count}")
                    row = bench_one(backend, count, corpus, f"{corpus}/prompts.jsonl", args)
                    rows.append(row)
                    print(f"[{name} {count}] {json.dumps(asdict(row))}", flush=True)
            if args.prompts:
                local = Backend("local", str(work / "local"), fsspec.filesystem("file"), {})
                chosen = {name: local if name == "local" else s3 for name in args.backends}
                prompt_rows = run_prompt_axis(work, data, box, {k: v for k, v in chosen.items() if v}, args)
        finally:
            ray.shutdown()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nmodel={args.model}, 96x64 videos of 12 frames (1 clip, 1 prompted object), {args.actors} actor(s), "
        f"{args.cpus} CPUs for Ray, after a {warm:.1f} s warm-up job"
    )
    for name in args.backends:
        group = [r for r in rows if r.backend == name]
        if group:
            print(f"\n{name}:")
            print(table(group))
    print()
    print("\n".join(goals(rows)))
    if prompt_rows:
        print(f"\nprompts axis: {args.prompt_videos} videos in the corpus, automatic mode off")
        for name in args.backends:
            print(f"\n{name} prompts:")
            print(prompt_table([r for r in prompt_rows if r.backend == name]))
        print()
        print("\n".join(prompt_goals(prompt_rows)))
        print("prompt rows: " + json.dumps([asdict(r) for r in prompt_rows]))
    print(json.dumps([asdict(r) for r in rows]))


if __name__ == "__main__":
    main()
