"""batchtrack: a video archive in object storage → a tracked-mask dataset (SAM 2-style tracker on Ray).

Heavy modules are imported lazily so `import batchtrack` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["JobConfig", "Tracker", "build_tracker", "load_config", "open_dataset", "run_job"]

if TYPE_CHECKING:
    from batchtrack.config import JobConfig, load_config
    from batchtrack.dataset import open_dataset
    from batchtrack.model.loading.build import build_tracker
    from batchtrack.model.tracker.tracker import Tracker
    from batchtrack.pipeline.job import run_job

_LAZY = {
    "JobConfig": ("batchtrack.config", "JobConfig"),
    "load_config": ("batchtrack.config", "load_config"),
    "build_tracker": ("batchtrack.model.loading.build", "build_tracker"),
    "Tracker": ("batchtrack.model.tracker.tracker", "Tracker"),
    "run_job": ("batchtrack.pipeline.job", "run_job"),
    "open_dataset": ("batchtrack.dataset", "open_dataset"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'batchtrack' has no attribute {name!r}")
