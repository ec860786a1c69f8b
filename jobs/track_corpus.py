"""Track a video corpus into a mask dataset: the entry point for `ray job submit`.

    python jobs/track_corpus.py --config jobs/configs/demo.yaml
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/track_corpus.py --config job.yaml
    python jobs/track_corpus.py --config job.yaml --corpus s3://bucket/videos --output s3://bucket/masks

The demo config reads the git-ignored demo/corpus, so it runs where that folder is; a cluster job reads its corpus
from object storage or a path every node sees (`--working-dir` uploads no data: see .rayignore and the README).

Connects to RAY_ADDRESS when set (ray job submit sets it), else runs on an embedded local Ray.
Flags override the YAML file, which BATCHTRACK_* environment variables also override.
Exit code: 0, or 1 when more than `max_failed_fraction` of the clips failed, or 2 on a user error (one line on
stderr; `--debug` adds the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from batchtrack.config import load_config
from batchtrack.errors import BatchtrackError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="job YAML file")
    parser.add_argument("--corpus", help="folder, glob, s3://bucket/prefix or JSONL/Parquet manifest of videos")
    parser.add_argument("--output", help="output URI (folder or s3://bucket/prefix)")
    parser.add_argument("--prompts", help="prompt manifest (JSONL or Parquet)")
    parser.add_argument("--text", action="append", metavar="PHRASE", help="concept prompt for every video (sam3)")
    parser.add_argument("--model", help="model name, e.g. sam2.1_hiera_tiny, tiny-synthetic, baseline-flow")
    parser.add_argument("--checkpoint", help="checkpoint (.pt / .safetensors) for the model")
    parser.add_argument("--num-actors", type=int, help="tracker actors in the pool")
    parser.add_argument("--num-gpus", type=float, help="GPUs per actor (0 = CPU)")
    parser.add_argument("--random-weights", action="store_true", help="random weights (tests and benchmarks only)")
    parser.add_argument("--retry-failed", action="store_true", help="track again units a run recorded as failed")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    model_flags = {"name": args.model, "checkpoint": args.checkpoint, "random_weights": args.random_weights or None}
    model = {k: v for k, v in model_flags.items() if v is not None}
    actors = {k: v for k, v in {"num_actors": args.num_actors, "num_gpus": args.num_gpus}.items() if v is not None}
    try:
        cfg = load_config(
            args.config, corpus=args.corpus, output=args.output, prompts=args.prompts, text=args.text,
            model=model or None, actors=actors or None, retry_failed=args.retry_failed or None,
        )  # fmt: skip
        from batchtrack.pipeline.job import run_job  # after validation: a config error needs no Ray

        summary = run_job(cfg)
    except BatchtrackError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"track_corpus: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(summary.to_table())
    return summary.exit_code(cfg.max_failed_fraction)


if __name__ == "__main__":
    sys.exit(main())
