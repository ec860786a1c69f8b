"""UnitSummary: what one work unit did, returned by its actor to the driver (counts and the first failures).

Small on purpose: one per unit crosses from the actor pool to the driver, which sums them into the job's summary
and its progress line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from batchtrack.pipeline.commit import ClipStatus


@dataclass
class UnitSummary:
    """What one unit did, returned to the driver (small: counts and the first failures)."""

    unit_id: str
    videos: int = 0
    resumed: bool = False
    clips: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    frames: int = 0
    objects: int = 0
    mask_rows: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    track_seconds: float = 0.0
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)  # uri, stage, class, message

    MAX_FAILURES = 10

    @classmethod
    def of(cls, unit_id: str, statuses: list[ClipStatus], seconds: float) -> UnitSummary:
        summary = cls(unit_id, videos=len({s.video_id for s in statuses}), clips=len(statuses), seconds=seconds)
        for s in statuses:
            setattr(summary, s.status, getattr(summary, s.status) + 1)
            summary.frames += s.frames
            summary.objects += s.objects
            summary.mask_rows += s.mask_rows
            summary.decode_seconds += s.decode_seconds
            summary.track_seconds += s.track_seconds
            if s.status == "failed" and len(summary.failures) < cls.MAX_FAILURES:
                summary.failures.append((s.video_uri, s.error_stage or "", s.error_class or "", s.error_message or ""))
        return summary

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))
