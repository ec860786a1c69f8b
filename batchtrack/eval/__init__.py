"""Evaluation: DAVIS-style J&F, the classical baseline trackers, and overlays to look at results."""

from batchtrack.eval.baselines import FlowTracker, HomographyTracker, build_baseline
from batchtrack.eval.evaluate import EvalReport, evaluate_output, evaluate_tracker
from batchtrack.eval.metrics import boundary_f, jaccard
from batchtrack.eval.visualize import render_overlay

__all__ = [
    "EvalReport",
    "FlowTracker",
    "HomographyTracker",
    "boundary_f",
    "build_baseline",
    "evaluate_output",
    "evaluate_tracker",
    "jaccard",
    "render_overlay",
]
