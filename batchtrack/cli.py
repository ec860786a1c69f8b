"""`batchtrack` command line: parse flags → JobConfig / arguments → one library call.

Heavy imports (torch, ray) happen inside the command that needs them so `batchtrack --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from batchtrack.errors import BatchtrackError, ConfigError


def _job_overrides(args: argparse.Namespace) -> dict[str, Any]:
    model: dict[str, Any] = {
        "name": args.model,
        "checkpoint": args.checkpoint,
        "random_weights": True if args.random_weights else None,
    }
    clip: dict[str, Any] = {"length_frames": args.clip_frames}
    actors: dict[str, Any] = {
        "num_actors": args.actors,
        "max_actors": args.max_actors,
        "num_gpus": args.gpus_per_actor,
        "num_cpus": args.cpus_per_actor,
    }
    auto = {"enabled": False} if args.no_auto else None
    return {
        "auto": auto,
        "storage_options": _storage_options(args.storage_option),
        "corpus": args.corpus,
        "output": args.output,
        "prompts": args.prompts,
        "text": args.text,
        "max_failed_fraction": args.max_failed_fraction,
        "retry_failed": True if args.retry_failed else None,
        "model": {k: v for k, v in model.items() if v is not None} or None,
        "clip": {k: v for k, v in clip.items() if v is not None} or None,
        "sample": {"fps": args.sample_fps} if args.sample_fps is not None else None,
        "actors": {k: v for k, v in actors.items() if v is not None} or None,
    }


def _storage_options(pairs: list[str] | None) -> dict[str, Any] | None:
    if not pairs:
        return None
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--storage-option expects KEY=VALUE, got {pair!r}")
        node = options
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return options


def _add_job_flags(parser: argparse.ArgumentParser, positional: bool = True) -> None:
    if positional:
        parser.add_argument("corpus", nargs="?", help="folder, glob, s3://bucket/prefix or manifest of videos")
        parser.add_argument("output", nargs="?", help="output URI (folder or s3://bucket/prefix)")
    parser.add_argument("--config", help="job YAML file (flags and BATCHTRACK_* env vars override it)")
    parser.add_argument("--prompts", help="prompt manifest (JSONL/Parquet); default: automatic mode")
    parser.add_argument(
        "--text",
        action="append",
        metavar="PHRASE",
        help="concept prompt for every video, repeatable (--text person --text 'red car'): every instance "
        "becomes a track; needs a model with a detector (sam3, sam3-test-tiny)",
    )
    parser.add_argument("--model", help="model name (default tiny-synthetic; sam2.1_hiera_tiny, baseline-flow, ...)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--checkpoint",
        metavar="PATH_OR_URI",
        help="weights of --model (.pt/.safetensors): path, file://, s3://, gs:// or https://, cached once per node",
    )
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="run a model that ships no weights (sam2.1_*) with random ones: tests and benchmarks only",
    )
    parser.add_argument("--clip-frames", type=int, help="clip length in frames")
    parser.add_argument(
        "--sample-fps",
        type=float,
        metavar="F",
        help="track only the frames nearest to F per second (by timestamp; e.g. 6); prompts must be on sampled "
        "frames; default: every frame",
    )
    parser.add_argument(
        "--actors",
        type=int,
        help="number of tracker actors, the minimum with --max-actors (default: autoscale from 1 up to the "
        "cluster's CPUs / --cpus-per-actor, or one per GPU)",
    )
    parser.add_argument("--max-actors", type=int, help="upper bound of an autoscaling actor pool")
    parser.add_argument("--cpus-per-actor", type=float, help="CPUs per actor (torch threads follow)")
    parser.add_argument("--gpus-per-actor", type=float, help="GPUs per actor (0 = CPU)")
    parser.add_argument("--max-failed-fraction", type=float, help="tolerated fraction of failed clips")
    parser.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="fsspec storage option, repeatable (e.g. endpoint_url=http://127.0.0.1:9000, client_kwargs.region_name=x)",
    )
    parser.add_argument("--no-auto", action="store_true", help="skip videos without prompts instead of auto mode")
    parser.add_argument(
        "--retry-failed", action="store_true", help="track again the units an earlier run recorded as failed"
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from batchtrack.config import load_config

    cfg = load_config(args.config, **_job_overrides(args))
    from batchtrack.trackers import resolve_model

    # A model without weights, or --text without a detector, is exit code 2 before Ray is even imported.
    model = resolve_model(cfg, text_source="--text")
    from batchtrack.pipeline.job import run_job  # after validation: config errors need no Ray import

    summary = run_job(cfg, model)
    print(summary.to_table())
    return summary.exit_code(cfg.max_failed_fraction)


def _cmd_demo_corpus(args: argparse.Namespace) -> int:
    from batchtrack.synthetic import make_demo_corpus

    paths = make_demo_corpus(Path(args.directory), num_videos=args.videos, seed=args.seed, num_frames=args.frames)
    for path in paths:
        print(path)
    print(f"wrote {len(paths)} videos, ground truth and prompts.jsonl to {args.directory}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from batchtrack.demo import run_demo

    actors = {"num_actors": args.actors, "max_actors": args.max_actors, "num_cpus": args.cpus_per_actor}
    return run_demo(Path(args.workdir), model=args.model, actors={k: v for k, v in actors.items() if v is not None})


def _cmd_eval(args: argparse.Namespace) -> int:
    from batchtrack.dataset import open_dataset
    from batchtrack.eval.evaluate import evaluate_output

    open_dataset(args.output)  # OutputNotFoundError: one line, before any ground truth is read
    import fsspec

    gt_fs, gt_root = fsspec.core.url_to_fs(args.ground_truth)
    if not gt_fs.isdir(gt_root):
        raise ConfigError(f"ground-truth folder {args.ground_truth} does not exist")
    try:
        report = evaluate_output(args.output, args.ground_truth)
    except FileNotFoundError as exc:  # the evaluator names the folder that lacks *.gt.parquet or masks/
        raise ConfigError(str(exc).strip("'\"")) from exc
    print(report.to_table())
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from batchtrack.demo import render_frame, render_video

    if args.video_out is not None:
        if args.frame is not None:
            raise ConfigError("render: give FRAME PICTURE (one frame) or --video-out FILE (the whole video), not both")
        path = render_video(args.output, args.video_id, Path(args.video_out), fps=args.fps, max_frames=args.max_frames)
    elif args.frame is None or args.picture is None:
        raise ConfigError("render: give FRAME PICTURE (one frame as a PNG) or --video-out FILE (.gif or .mp4)")
    else:
        try:
            frame = int(args.frame)
        except ValueError:
            raise ConfigError(f"render: FRAME must be a frame number, got {args.frame!r}") from None
        path = render_frame(args.output, args.video_id, frame, Path(args.picture))
    print(f"wrote {path}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from batchtrack.demo import describe_output

    print(describe_output(args.output))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from batchtrack.dataset.exports import export_dataset

    summary = export_dataset(
        args.output,
        args.dest,
        args.format,
        frames=args.frames,
        video_ids=args.video,
        storage_options=_storage_options(args.storage_option),
    )
    print(summary.describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchtrack",
        description="Track objects through a video archive with a SAM 2-style memory tracker on Ray.",
    )
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="print the traceback of an error too"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=summary)

    run = add_command("run", "run the batch tracking job on a corpus (local Ray or RAY_ADDRESS)")
    _add_job_flags(run)
    run.set_defaults(func=_cmd_run)

    corpus = add_command("demo-corpus", "write a small synthetic corpus with ground truth and prompts")
    corpus.add_argument("directory")
    corpus.add_argument("--videos", type=int, default=3)
    corpus.add_argument("--seed", type=int, default=0)
    corpus.add_argument("--frames", type=int, default=90, help="frames per video")
    corpus.set_defaults(func=_cmd_demo_corpus)

    demo = add_command("demo", "make a demo corpus, track it with the default model, summarise, draw")
    demo.add_argument("--workdir", default="demo")
    demo.add_argument("--model", default=None, help="model name (default: the shipped tiny-synthetic)")
    demo.add_argument("--actors", type=int, help="number of tracker actors (default: autoscale to the CPUs)")
    demo.add_argument("--max-actors", type=int, help="upper bound of an autoscaling actor pool")
    demo.add_argument("--cpus-per-actor", type=float, help="CPUs per actor (torch threads follow)")
    demo.set_defaults(func=_cmd_demo)

    evaluate = add_command("eval", "J&F of a finished job's masks against synthetic ground truth")
    evaluate.add_argument("output")
    evaluate.add_argument("ground_truth", help="folder with NAME.gt.parquet files")
    evaluate.set_defaults(func=_cmd_eval)

    render = add_command("render", "draw one output frame's masks over the video frame, or the whole video")
    render.add_argument("output")
    render.add_argument("video_id")
    render.add_argument("frame", nargs="?", help="frame number (with PICTURE)")
    render.add_argument("picture", nargs="?", help="PNG file to write")
    render.add_argument("--video-out", metavar="FILE", help="write every frame with its tracks as a .gif or .mp4")
    render.add_argument("--fps", type=float, default=10.0, help="frames per second of --video-out")
    render.add_argument("--max-frames", type=int, help="only the first N frames in --video-out")
    render.set_defaults(func=_cmd_render)

    inspect = add_command("inspect", "summarise a job's output (counts, failures)")
    inspect.add_argument("output")
    inspect.set_defaults(func=_cmd_inspect)

    export = add_command("export", "write a job's output as SA-V JSON, YouTube-VIS JSON or DAVIS PNGs")
    export.add_argument("output", help="job output (folder or s3://bucket/prefix)")
    export.add_argument("dest", help="destination folder or URI")
    export.add_argument("--format", required=True, choices=("sav", "ytvis", "davis"))
    export.add_argument("--frames", action="store_true", help="also decode the videos into JPEGImages/")
    export.add_argument("--video", action="append", metavar="VIDEO_ID", help="export only this video (repeatable)")
    export.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option, repeatable")
    export.set_defaults(func=_cmd_export)
    return parser


def _one_line(message: str) -> str:
    return " ".join(message.split())


EMBEDDED_RAY_COMMANDS = ("run", "demo")


def _settle_ray_auth_mode(command: str) -> None:
    """Say RAY_AUTH_MODE=token (Ray's default for a new local cluster) out loud for an embedded Ray, when unset.

    Ray warns on every start of a local cluster whose auth mode is left implicit; the documented way to keep
    the default without the warning is the environment variable, read once when Ray is imported, so it is set
    here, before the command imports Ray, and never when Ray is already loaded (in-process callers).
    """
    if command in EMBEDDED_RAY_COMMANDS and "ray" not in sys.modules and not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error (BatchtrackError) is one line on stderr and exit code 2; `--debug` adds
    its traceback. Anything else is a bug and keeps its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _settle_ray_auth_mode(args.command)
    try:
        return int(args.func(args))
    except BatchtrackError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"batchtrack: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("batchtrack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
