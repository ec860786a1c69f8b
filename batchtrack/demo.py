"""`batchtrack demo` and the small output readers behind `inspect` and `render`.

The demo is the real product path on a small scale: synthetic corpus → `run_job` on the embedded local Ray with
the shipped default model → summary table → J&F against the synthetic ground truth → a picture.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from fsspec import AbstractFileSystem

from batchtrack.dataset.layout import OutputFiles
from batchtrack.errors import ConfigError
from batchtrack.io.rle import decode_mask
from batchtrack.io.sink import MANIFEST_NAME


def _dataset(output: str, table: str) -> ds.Dataset:
    return ds.dataset(f"{output.rstrip('/')}/{table}", format="parquet")


def describe_output(output: str) -> str:
    """Counts of a finished job's output: clips by status, mask rows, videos (with their ids), failures.

    Raises OutputNotFoundError when `output` holds no committed unit.
    """
    from batchtrack.dataset import open_dataset

    data = open_dataset(output)
    clips = data.clips
    lines = [f"output: {output}", _job_status(data.files, clips), f"clips: {clips.num_rows}"]
    for status in sorted(set(clips.column("status").to_pylist())):
        count = pc.sum(pc.equal(clips.column("status"), status)).as_py()
        lines.append(f"  {status}: {count}")
    lines.append(f"mask rows: {data.masks.count_rows()}")
    videos = data.videos()
    lines.append(f"videos: {len(videos)} (video_id, frames tracked, uri)")
    lines.extend(f"  {video.video_id} {video.num_frames} {video.video_uri}" for video in videos)
    failed = clips.filter(pc.equal(clips.column("status"), "failed")).to_pylist()
    for row in failed:
        lines.append(f"  failed {row['video_uri']}: {row.get('error_class')}: {row.get('error_message')}")
    return "\n".join(lines)


def _job_status(files: OutputFiles, clips: pa.Table) -> str:
    """Finished (its `_manifest.json`, written last, is there) or still running: what the committed units did so far.

    A job that is running, or that stopped before its end, shows its progress from the units committed so far.
    """
    frames = int(pc.sum(clips.column("frames")).as_py() or 0)
    failed = int(pc.sum(pc.equal(clips.column("status"), "failed")).as_py() or 0)
    done = f"{len(files.clips)} units committed, {frames} frames tracked, {failed} failed clip(s)"
    manifest = f"{files.root}/{MANIFEST_NAME}"
    if not files.fs.exists(manifest):
        newest = max(_modified(files.fs, path) for path in files.clips.values())
        ago = f", last commit {time.time() - newest:.0f} s ago" if newest > 0 else ""
        return f"status: running, or stopped before its end (no {MANIFEST_NAME} yet): {done} so far{ago}"
    with files.fs.open(manifest, "r") as handle:
        finished = json.load(handle).get("finished_at", "?")
    return f"status: finished at {finished}: {done}"


def _modified(fs: AbstractFileSystem, path: str) -> float:
    """A file's modification time in seconds since the epoch (local, S3, GCS alike); 0 when the store has none."""
    info = fs.info(path)
    stamp = info.get("mtime") or info.get("LastModified") or info.get("updated")
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    if isinstance(stamp, str):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return float(stamp or 0)


DEMO_CLIP_FRAMES = 30  # 90-frame videos → 3 clips each, so the demo shows tracks crossing clip boundaries


def track_spans(output: str) -> str:
    """One line per video: its clips, and how many tracks run from their first frame to the video's last frame."""
    clips = _dataset(output, "clips").to_table(columns=["video_uri", "status", "end_frame"]).to_pylist()
    masks = _dataset(output, "masks").to_table(columns=["video_uri", "frame_index", "track_id"]).to_pylist()
    lines = ["whole-video tracks:"]
    for uri in sorted({c["video_uri"] for c in clips}):
        video_clips = [c for c in clips if c["video_uri"] == uri]
        last = max(c["end_frame"] for c in video_clips) - 1
        spans: dict[int, list[int]] = {}
        for row in masks:
            if row["video_uri"] == uri:
                spans.setdefault(row["track_id"], []).append(row["frame_index"])
        whole = sum(1 for frames in spans.values() if set(frames) == set(range(min(frames), last + 1)))
        lines.append(
            f"  {Path(uri).name}: {len(video_clips)} clips, {len(spans)} tracks, {whole} of them on every frame "
            f"from their first to the last ({last})"
        )
    return "\n".join(lines)


def _frame_masks(output: str, video_id: str, frame: int) -> tuple[str, list[int], list[np.ndarray]]:
    table = _dataset(output, "masks").to_table(
        filter=(pc.field("video_id") == video_id) & (pc.field("frame_index") == frame),
        columns=["video_uri", "track_id", "object_id", "height", "width", "rle"],
    )
    if table.num_rows == 0:
        raise ValueError(f"no masks for video_id={video_id} frame={frame} under {output}")
    rows = table.to_pylist()
    ids = [int(r["track_id"] if r["track_id"] is not None else r["object_id"]) for r in rows]
    masks = [decode_mask(r["rle"], r["height"], r["width"]) for r in rows]
    return rows[0]["video_uri"], ids, masks


def render_frame(output: str, video_id: str, frame: int, picture: Path) -> Path:
    """Draw the masks of one (video, frame) of a job's output over the decoded frame and save a PNG.

    Raises OutputNotFoundError for an output without committed units, UnknownVideoError for a video_id it
    does not hold and ConfigError for a frame outside the video's tracked frames; all before decoding.
    """
    import cv2

    from batchtrack.dataset import open_dataset
    from batchtrack.eval.visualize import render_overlay
    from batchtrack.io.video import iter_frames

    if picture.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ConfigError(f"cannot write {picture}: give a .png (or .jpg) file name")
    data = open_dataset(output)
    video = data.video(video_id)
    if not 0 <= frame < video.num_frames:
        tracked = f"frames 0-{video.num_frames - 1}" if video.num_frames else "no frames"
        raise ConfigError(f"frame {frame} is not a tracked frame of video {video_id!r} ({tracked} under {output})")
    masks = data.frame_masks(video_id, frame)
    image = next(iter(iter_frames(video.video_uri, frame, frame + 1)))
    overlay = render_overlay(image, list(masks.values()), list(masks))
    picture.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(picture), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f"cannot write {picture}")
    return picture


def render_video(output: str, video_id: str, path: Path, *, fps: float = 10.0, max_frames: int | None = None) -> Path:
    """Draw every tracked frame of a video (each track's mask, outline and id) and write it as a GIF or MP4.

    Same checks as `render_frame` (output, video id, file name), all before decoding; frames without
    rows are drawn bare, so the animation keeps the video's timing.
    """
    import cv2

    from batchtrack.dataset import open_dataset
    from batchtrack.eval.visualize import ANIMATION_SUFFIXES, render_overlay, write_animation
    from batchtrack.io.video import iter_frames

    if path.suffix.lower() not in ANIMATION_SUFFIXES:
        raise ConfigError(f"cannot write {path}: give a .gif or .mp4 file name")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be at least 1, got {max_frames}")
    data = open_dataset(output)
    video = data.video(video_id)
    rows = {frame.frame_index: frame for frame in data.video_rows(video_id).frames()}
    end = video.num_frames if max_frames is None else min(video.num_frames, max_frames)

    def overlays() -> Iterator[np.ndarray]:
        for index, image in enumerate(iter_frames(video.video_uri, 0, end)):
            masks = rows[index].decode() if index in rows else {}
            overlay = render_overlay(image, list(masks.values()), list(masks))
            cv2.putText(overlay, f"{index}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
            yield overlay

    try:
        write_animation(path, overlays(), fps)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from None
    return path


def shipped_protocol_summary(model: str | None) -> str | None:
    """The shipped model's test-protocol numbers (weights/NAME.test.json), when its record matches the weights."""
    from batchtrack.eval.protocol import protocol_summary, read_protocol_record
    from batchtrack.model.loading.build import shipped_weights

    name = model or "tiny-synthetic"
    weights = shipped_weights(name)
    record = read_protocol_record(weights) if weights is not None else None
    return None if record is None else protocol_summary(record, name)


def _contact_sheet(output: str, video_id: str, frames: list[int], picture: Path) -> Path:
    import cv2

    from batchtrack.eval.visualize import render_overlay
    from batchtrack.io.video import iter_frames

    tiles = []
    for frame in frames:
        video_uri, ids, masks = _frame_masks(output, video_id, frame)
        image = next(iter(iter_frames(video_uri, frame, frame + 1)))
        tiles.append(render_overlay(image, masks, ids))
    sheet = np.concatenate(tiles, axis=1)
    picture.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(picture), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return picture


def run_demo(workdir: Path, model: str | None = None, actors: dict[str, Any] | None = None) -> int:
    """Make the demo corpus, run the job, print the summary and J&F beside the shipped model's test-protocol
    numbers, write `workdir/overlay.png` (4 frames) and `workdir/tracks.gif` (the whole first video).

    Each video is a work unit of its own, so the actor pool (`actors`: ActorConfig keys; default: the node's
    CPUs) shares the few videos out instead of one actor tracking them all."""
    from batchtrack.config import load_config
    from batchtrack.eval.evaluate import evaluate_output
    from batchtrack.pipeline.job import run_job
    from batchtrack.synthetic import make_demo_corpus

    corpus = workdir / "corpus"
    output = workdir / "output"
    videos = make_demo_corpus(corpus)
    print(f"demo corpus: {len(videos)} synthetic videos with ground truth in {corpus}")
    cfg = load_config(
        corpus=str(corpus),
        output=str(output),
        prompts=str(corpus / "prompts.jsonl"),
        model={"name": model} if model else None,
        clip={"length_frames": DEMO_CLIP_FRAMES},
        unit={"max_videos": 1},
        actors=actors or None,
    )
    summary = run_job(cfg)
    print(summary.to_table())
    print(track_spans(str(output)))
    report = evaluate_output(str(output), str(corpus))
    print(report.to_table())
    protocol = shipped_protocol_summary(model)
    if protocol is not None:
        print(f"this demo: J&F {report.jf:.3f} over {len(report.objects)} objects of {len(videos)} videos (a few")
        print("videos are noisy); the shipped model on the test split, measured by bench/quality.py:")
        print(protocol)
    masks = _dataset(str(output), "masks").to_table(columns=["video_id", "frame_index"])
    if masks.num_rows:
        video_id = masks.column("video_id")[0].as_py()
        last = int(pc.max(masks.filter(pc.field("video_id") == video_id).column("frame_index")).as_py())
        frames = sorted({0, last // 3, 2 * last // 3, last})
        picture = _contact_sheet(str(output), video_id, frames, workdir / "overlay.png")
        print(f"picture: {picture} (video {video_id}, frames {frames})")
        animation = render_video(str(output), video_id, workdir / "tracks.gif")
        print(f"video: {animation} (every frame of video {video_id}, each track's mask and id)")
    return summary.exit_code(cfg.max_failed_fraction)
