"""Ray metrics of the tracker actors (`ray.util.metrics`): throughput per node in the Ray dashboard and Prometheus.

Each actor counts what its committed units did; Ray tags every sample with the node it came from.
"""

from __future__ import annotations

from ray.util.metrics import Counter

from batchtrack.pipeline.unit_summary import UnitSummary


class TrackerMetrics:
    """Counters of frames tracked, units committed, failed clips, and seconds spent decoding and tracking."""

    def __init__(self) -> None:
        self.frames = Counter("batchtrack_frames_tracked", description="Frames tracked (rows of every object).")
        self.units = Counter("batchtrack_units_committed", description="Work units committed by this job's actors.")
        self.failed_clips = Counter("batchtrack_failed_clips", description="Clips recorded as failed (clips/ rows).")
        self.decode_seconds = Counter(
            "batchtrack_decode_seconds", description="Seconds spent opening, downloading and decoding videos."
        )
        self.track_seconds = Counter("batchtrack_track_seconds", description="Seconds spent in the tracker.")

    def record(self, unit: UnitSummary) -> None:
        """Count one committed unit (units an earlier run committed did no work here and are not counted)."""
        if unit.resumed:
            return
        self.units.inc(1)
        for counter, value in (
            (self.frames, unit.frames),
            (self.failed_clips, unit.failed),
            (self.decode_seconds, unit.decode_seconds),
            (self.track_seconds, unit.track_seconds),
        ):
            if value > 0:  # Ray's counters refuse a zero increment
                counter.inc(value)
