"""Pipeline throughput: the same corpus tracked with 1 and then 2 actors, and a job's wall time against
the sum of its clips' own times (decode + track + write inside the actors), measured side by side.

    python bench/pipeline.py --model baseline-flow --videos 4 --frames 60
    python bench/pipeline.py --model test-tiny --videos 2 --frames 24

Runs on an embedded local Ray with --cpus CPUs (default 2). Prints one table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import ray
from pycocotools import mask as coco_mask

from batchtrack.config import load_config
from batchtrack.pipeline.job import JobSummary, run_job
from batchtrack.synthetic.corpus import make_demo_corpus


def _clip_times(output: Path) -> dict[str, float]:
    clips = ds.dataset(str(output / "clips"), format="parquet").to_table().to_pylist()
    ok = [c for c in clips if c["status"] == "ok"]
    return {key: sum(c[key] for c in ok) for key in ("seconds", "decode_seconds", "track_seconds", "write_seconds")}


def _prompt_clip_starts(videos: list[Path], manifest: Path, every: int) -> None:
    """Box prompts from ground truth on every clip's first frame, so every clip has objects to track."""
    lines = []
    for video in videos:
        for row in pq.read_table(video.with_name(video.stem + ".gt.parquet")).to_pylist():
            if row["frame_index"] % every == 0:
                rle = {"size": [row["height"], row["width"]], "counts": row["rle"].encode()}
                x, y, w, h = (float(v) for v in coco_mask.toBbox(rle))
                if w >= 2 and h >= 2:
                    box = [x, y, x + w, y + h]
                    lines.append({"video": video.name, "frame": row["frame_index"], "object_id": row["object_id"],
                                  "box": box})
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="baseline-flow")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--clip-frames", type=int, default=20)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bt-bench-"))
    corpus = work / "corpus"
    make_demo_corpus(corpus, num_videos=args.videos, width=args.width, height=args.height, num_frames=args.frames)
    _prompt_clip_starts(sorted(corpus.glob("*.mp4")), corpus / "prompts.jsonl", args.clip_frames - 2)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)

    results: list[tuple[int, JobSummary, dict[str, float]]] = []
    for actors in (1, 2):
        output = work / f"out-{actors}"
        cfg = load_config(
            None, corpus=str(corpus), output=str(output), prompts=str(corpus / "prompts.jsonl"),
            model={"name": args.model}, clip={"length_frames": args.clip_frames},
            actors={"num_actors": actors, "num_cpus": 1},
        )
        summary = run_job(cfg)
        results.append((actors, summary, _clip_times(output)))
    ray.shutdown()

    print(f"\nmodel={args.model} videos={args.videos}x{args.frames} frames at {args.width}x{args.height}, "
          f"clips of {args.clip_frames}, {args.cpus} CPUs")
    print(f"{'actors':>6} {'clips':>5} {'frames':>6} {'wall s':>7} {'frames/s':>8} {'sum clip s':>10} "
          f"{'decode':>7} {'track':>7} {'write':>7} {'wall/sum':>8}")
    for actors, summary, times in results:
        print(f"{actors:>6} {summary.ok:>5} {summary.frames:>6} {summary.wall_seconds:>7.1f} "
              f"{summary.frames_per_second:>8.2f} {times['seconds']:>10.1f} {times['decode_seconds']:>7.1f} "
              f"{times['track_seconds']:>7.1f} {times['write_seconds']:>7.1f} "
              f"{summary.wall_seconds / max(times['seconds'], 1e-9):>8.2f}")
    speedup = results[1][1].frames_per_second / max(results[0][1].frames_per_second, 1e-9)
    print(f"throughput 2 actors / 1 actor: {speedup:.2f}x")
    print(json.dumps({"speedup_2_vs_1": round(speedup, 3)}))


if __name__ == "__main__":
    main()
