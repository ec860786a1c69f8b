"""Synthetic videos with exact per-object ground truth, for tests, the demo, training and benchmarks."""

from batchtrack.synthetic.corpus import (
    BENCHMARK_SUBSETS,
    PROMPTS_FILE,
    SyntheticVideo,
    make_benchmark,
    make_demo_corpus,
    write_synthetic_video,
)
from batchtrack.synthetic.ground_truth import GroundTruth, read_ground_truth
from batchtrack.synthetic.render import RenderedFrame, render_frame, render_frames
from batchtrack.synthetic.scene import Scene, SceneSpec

__all__ = [
    "BENCHMARK_SUBSETS",
    "PROMPTS_FILE",
    "GroundTruth",
    "RenderedFrame",
    "Scene",
    "SceneSpec",
    "SyntheticVideo",
    "make_benchmark",
    "make_demo_corpus",
    "read_ground_truth",
    "render_frame",
    "render_frames",
    "write_synthetic_video",
]
