"""Evaluation: DAVIS-style J&F and overlays to look at results.

The classical baseline trackers live in batchtrack.baselines (a job runs them as trackers); they are named
here too because the evaluation protocol compares against them.
"""

from batchtrack.baselines import FlowTracker, HomographyTracker, build_baseline
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
