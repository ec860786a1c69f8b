"""Real-archive costs, measured side by side in one run inside the tracker actor's own code (UnitProcessor,
no Ray): what --sample-fps saves per second of video, and the peak memory of an actor on 4K against 1080p.

    python bench/archive.py rate --model tiny-synthetic --seconds 4 --fps 30 --sample-fps 6
    python bench/archive.py rss --model tiny-synthetic --frames 8
    python bench/archive.py queue --frames 40 --prefetch 32

`rate`: one synthetic 30 fps video, a box prompt on frame 0, tracked at full rate and at --sample-fps;
prints seconds per video-second, as wall time (decode + track, as the clips/ rows time them) and as the
process's CPU time (all threads; what a busy shared machine does not distort), and their ratios.
`rss`: the same pattern video written at 1920x1080 and 3840x2160, each tracked in a fresh process (so
peak RSS is that run's own), 4K once more with the prefetch queue bounded only in frames (the old
behaviour, prefetch_mib unset); prints peak RSS per run and the 4K / 1080p ratio.
`queue`: the prefetch queue alone: a 4K video decoded ahead of a consumer slower than the decoder (a tracker),
with --prefetch frame slots, once with no byte bound and once with actors.prefetch_mib's default; peak RSS of
each run in its own process. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from batchtrack.config import ClipPlanConfig, ModelConfig
from batchtrack.io.corpus import list_videos
from batchtrack.io.prompts import PromptRecord
from batchtrack.pipeline.actor_settings import ActorSettings
from batchtrack.pipeline.plan import ModelKey, PlanSettings, make_unit, plan_video
from batchtrack.pipeline.unit_processor import UnitProcessor
from batchtrack.synthetic.codecs import Encoding, write_encoding
from batchtrack.synthetic.corpus import write_synthetic_video
from batchtrack.synthetic.scene import SceneSpec
from batchtrack.trackers import ResolvedModel, load_tracker


def track_once(
    video: Path, box: list[float], model: str, out: Path, sample_fps: float | None, prefetch_bytes: int | None
) -> dict[str, float]:
    """Track `video` with one prompt in the actor's code; the summed clips/ times and the tracked frame count."""
    settings = PlanSettings(ModelKey(model, "bench"), ClipPlanConfig(length_s=10.0), None, "off", sample_fps=sample_fps)
    [ref] = list_videos(str(video))
    record = PromptRecord(video=str(video), frame=0, object_id=1, box=tuple(box))
    unit = make_unit([plan_video(ref, [record], settings)], settings)
    actor = ActorSettings(
        model=ResolvedModel(ModelConfig(name=model, random_weights=model.startswith("sam2")), "bench"),
        output=str(out),
        prefetch_frames=8,
        prefetch_bytes=prefetch_bytes,
    )
    tracker = load_tracker(actor.model.config, "cpu")
    cpu_before = _cpu_seconds()
    summary = UnitProcessor(tracker, actor, device="cpu", node_id=None).process(unit)
    cpu = _cpu_seconds() - cpu_before
    if summary.failed:
        raise RuntimeError(f"tracking failed: {summary.failures}")
    import pyarrow.dataset as ds

    clips = ds.dataset(str(out / "clips"), format="parquet").to_table().to_pylist()
    return {
        "frames": float(sum(c["frames"] for c in clips)),
        "decode_s": sum(c["decode_seconds"] for c in clips),
        "track_s": sum(c["track_seconds"] for c in clips),
        "cpu_s": cpu,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_rate(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bt-archive-"))
    frames = round(args.seconds * args.fps)
    spec = SceneSpec(seed=4, width=args.width, height=args.height, num_frames=frames, num_objects=1, fps=args.fps)
    video = write_synthetic_video(spec, work / "corpus", "v")
    [prompt] = video.prompts
    assert prompt.frame_index == 0, "the bench prompts frame 0, which every rate samples"
    rows = []
    for label, rate in (("full rate", None), (f"{args.sample_fps:g} fps", args.sample_fps)):
        times = track_once(video.video_path, list(prompt.box), args.model, work / label.replace(" ", "_"), rate, None)
        total = times["decode_s"] + times["track_s"]
        rows.append((label, times["frames"], times["decode_s"], times["track_s"], total, times["cpu_s"]))
    print(f"{args.model}, {args.width}x{args.height}, {args.seconds:g} s at {args.fps:g} fps, one object, CPU")
    print(f"{'run':<10} {'frames':>7} {'decode s':>9} {'track s':>8} {'wall s/video-s':>15} {'CPU s/video-s':>14}")
    for label, count, decode, track, total, cpu in rows:
        print(
            f"{label:<10} {count:>7.0f} {decode:>9.2f} {track:>8.2f} {total / args.seconds:>15.3f} "
            f"{cpu / args.seconds:>14.3f}"
        )
    full, sampled = rows
    print(
        f"full rate / {args.sample_fps:g} fps per video-second: wall {full[4] / sampled[4]:.2f}x, "
        f"CPU {full[5] / sampled[5]:.2f}x (frames {full[1] / sampled[1]:.2f}x)"
    )


def _rss_child(args: argparse.Namespace) -> None:
    """One run in its own process: prints its peak RSS (MiB) as JSON on the last line."""
    video = Path(args.video)
    times = track_once(video, args.box, args.model, Path(args.out), None, args.prefetch_bytes)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"peak_mib": peak_mib, **times}))


def _queue_child(args: argparse.Namespace) -> None:
    """Decode `args.video` ahead of a consumer that takes 250 ms a frame; prints peak RSS and the most bytes
    the queue held (MiB) as JSON."""
    import time

    from batchtrack.io import video as video_module

    most = [0]
    reserve = video_module._ByteBudget.reserve

    def watched(budget: video_module._ByteBudget, size: int, stopped: object) -> bool:
        granted = reserve(budget, size, stopped)  # type: ignore[arg-type]
        most[0] = max(most[0], budget.queued)
        return granted

    video_module._ByteBudget.reserve = watched  # type: ignore[method-assign]  # bench instrumentation only
    with video_module.open_video(args.video, prefetch=args.prefetch, prefetch_bytes=args.prefetch_bytes) as video:
        for _ in video.frames():
            time.sleep(0.25)  # the tracker's share of a frame: the decoder gets ahead
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak, "queued_mib": most[0] / 2**20}))


def bench_queue(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bt-archive-queue-"))
    encoding = Encoding(
        "pattern-4k", "libx264", ".mp4", width=3840, height=2160, frames=args.frames,
        options={"g": "8", "threads": "2", "preset": "ultrafast"},
    )  # fmt: skip
    video = write_encoding(encoding, work / "pattern-4k.mp4")
    print(f"4K (3840x2160, 24.9 MB a frame), {args.frames} frames, {args.prefetch} prefetch slots, slow consumer")
    print(f"{'byte bound':>12} {'most queued MiB':>16} {'peak RSS MiB':>13}")
    for bound in (None, 256 << 20):
        command = [sys.executable, __file__, "queue-child", "--video", str(video), "--prefetch", str(args.prefetch)]
        command += [] if bound is None else ["--prefetch-bytes", str(bound)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        bound_text = "-" if bound is None else f"{bound >> 20} MiB"
        print(f"{bound_text:>12} {measured['queued_mib']:>16.0f} {measured['peak_mib']:>13.0f}")


def bench_rss(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bt-archive-rss-"))
    runs = []
    for label, (width, height), bound in (
        ("1080p", (1920, 1080), 256 << 20),
        ("4K", (3840, 2160), 256 << 20),
        ("4K, frames-only bound", (3840, 2160), None),
    ):
        encoding = Encoding(
            f"pattern-{width}", "libx264", ".mp4", width=width, height=height, frames=args.frames,
            options={"g": "4", "threads": "2", "preset": "ultrafast"},
        )  # fmt: skip
        video = work / f"{encoding.name}.mp4"
        if not video.exists():
            write_encoding(encoding, video)
        command = [
            sys.executable, __file__, "rss-child", "--video", str(video), "--model", args.model,
            "--out", str(work / f"out-{len(runs)}"), "--box", "8", "8", str(width // 2), str(height // 2),
        ] + ([] if bound is None else ["--prefetch-bytes", str(bound)])  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        runs.append((label, bound, measured))
    print(f"{args.model}, {args.frames} frames per video, one object, CPU, prefetch 8 frames")
    print(f"{'video':<22} {'prefetch bytes':>15} {'peak RSS MiB':>13} {'decode s':>9} {'track s':>8}")
    for label, bound, measured in runs:
        bound_text = "-" if bound is None else f"{bound >> 20} MiB"
        print(
            f"{label:<22} {bound_text:>15} {measured['peak_mib']:>13.0f} {measured['decode_s']:>9.2f} "
            f"{measured['track_s']:>8.2f}"
        )
    print(f"peak RSS 4K / 1080p: {runs[1][2]['peak_mib'] / runs[0][2]['peak_mib']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    rate = commands.add_parser("rate", help="cost per video-second at full rate against --sample-fps")
    rate.add_argument("--model", default="tiny-synthetic")
    rate.add_argument("--seconds", type=float, default=4.0)
    rate.add_argument("--fps", type=float, default=30.0)
    rate.add_argument("--sample-fps", type=float, default=6.0)
    rate.add_argument("--width", type=int, default=160)
    rate.add_argument("--height", type=int, default=120)
    rss = commands.add_parser("rss", help="peak actor RSS on 4K against 1080p")
    rss.add_argument("--model", default="tiny-synthetic")
    rss.add_argument("--frames", type=int, default=8)
    child = commands.add_parser("rss-child")
    child.add_argument("--video", required=True)
    child.add_argument("--model", required=True)
    child.add_argument("--out", required=True)
    child.add_argument("--box", type=float, nargs=4, required=True)
    child.add_argument("--prefetch-bytes", type=int, default=None)
    queue = commands.add_parser("queue", help="peak RSS of the 4K prefetch queue, bounded in bytes or not")
    queue.add_argument("--frames", type=int, default=40)
    queue.add_argument("--prefetch", type=int, default=32)
    queue_child = commands.add_parser("queue-child")
    queue_child.add_argument("--video", required=True)
    queue_child.add_argument("--prefetch", type=int, required=True)
    queue_child.add_argument("--prefetch-bytes", type=int, default=None)
    args = parser.parse_args()
    commands_by_name = {
        "rate": bench_rate, "rss": bench_rss, "rss-child": _rss_child, "queue": bench_queue,
        "queue-child": _queue_child,
    }  # fmt: skip
    commands_by_name[args.command](args)


if __name__ == "__main__":
    main()
