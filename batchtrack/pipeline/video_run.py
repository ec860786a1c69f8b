"""VideoRun: one video of a work unit tracked in one pass, into its clips' rows and status rows.

The video is opened once (its local copy), decoded in a prefetch thread whose decoder threads are bounded by
the actor's CPUs, and tracked in one pass: the memory bank is handed from clip to clip, so objects prompted on
frame 0 (or found in automatic or concept mode) keep their ids through the whole video. `ClipCutter` cuts the
results into clips. A video that cannot be opened is one `failed` row; one whose decoding or tracking fails
midway keeps its finished clips and fails the rest.

Errors are classified: a bad video or prompt is a failed row; resource and Ray system errors, and transient I/O,
propagate so Ray restarts the actor and retries the unit.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import numpy as np
import ray
import torch

from batchtrack.errors import ConfigError, DecodeError, DecodeErrorKind, TransientIOError
from batchtrack.io.corpus import stable_hash
from batchtrack.io.video import VideoInfo, open_video
from batchtrack.model.types import FrameResult, Prompt
from batchtrack.pipeline.actor_settings import ActorSettings
from batchtrack.pipeline.clip_cutter import ClipCutter
from batchtrack.pipeline.clip_rows import ClipRows
from batchtrack.pipeline.commit import ClipStatus
from batchtrack.pipeline.plan import VideoTask, WorkUnit, clip_length, clip_spans, video_clip_id
from batchtrack.pipeline.sampling import FrameSample
from batchtrack.pipeline.timed_frames import TimedFrames
from batchtrack.pipeline.video_prompts import video_prompts
from batchtrack.pipeline.video_trackers import VideoTrackers

log = logging.getLogger(__name__)


def video_seed(seed: int, video_id: str) -> int:
    """The seed of one video's random choices: the job's seed and the video, not the actor or the order."""
    return int(stable_hash(seed, video_id), 16) % (2**31)


def seed_everything(seed: int) -> None:
    """Seed the global RNGs a tracker may use (torch; OpenCV's, which GrabCut and RANSAC read)."""
    import cv2

    torch.manual_seed(seed)
    cv2.setRNGSeed(seed)


def is_ray_system_error(exc: BaseException) -> bool:
    """A Ray error about the cluster (a lost actor or node), not one raised by the video's own task."""
    return isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, ray.exceptions.RayTaskError)


def error_fields(stage: str, exc: BaseException) -> dict[str, Any]:
    """The clips/ columns that say why a clip failed."""
    return {"error_stage": stage, "error_class": type(exc).__name__, "error_message": str(exc)[:2000]}


class VideoRun:
    """One video of a unit being tracked: its clips, their rows and statuses."""

    def __init__(
        self,
        unit: WorkUnit,
        video: VideoTask,
        trackers: VideoTrackers,
        settings: ActorSettings,
        device: str,
        node_id: str | None,
    ) -> None:
        self.unit = unit
        self.video = video
        self.trackers = trackers
        self.settings = settings
        self.device = device
        self.node_id = node_id
        self.statuses: list[ClipStatus] = []
        self.rows: list[ClipRows] = []  # rows of the ok clips, in order

    def status(self, clip_id: str, start: int, end: int, status: str, **values: Any) -> ClipStatus:
        return ClipStatus(
            video_id=self.video.video_id,
            video_uri=self.video.ref.uri,
            clip_id=clip_id,
            unit_id=self.unit.unit_id,
            start_frame=start,
            end_frame=end,
            status=status,
            model_name=self.unit.model.name,
            checkpoint_hash=self.unit.model.checkpoint_hash,
            device=self.device,
            node_id=self.node_id,
            **values,
        )

    def whole_video(self, status: str, reason: str, seconds: float = 0.0, end: int = 0, **values: Any) -> None:
        """One row for a video that was not cut into clips (skipped, unreadable, killed its actor)."""
        clip_id = video_clip_id(self.video.key, reason)
        self.statuses.append(self.status(clip_id, 0, end, status, seconds=seconds, **values))

    def run(self, local_copy: Callable[[], str]) -> None:
        """Open the video (`local_copy` gives its path on this node) and track it, or record why not."""
        began = time.perf_counter()
        video = self.video
        if video.mode == "skipped":
            self.whole_video("skipped", "skipped", error_stage="plan", error_message=video.reason)
            return
        try:
            local = local_copy()
            stream = open_video(
                local,
                prefetch=self.settings.prefetch_frames,
                prefetch_bytes=self.settings.prefetch_bytes,
                threads=self.settings.threads,
            )
        except (MemoryError, TransientIOError):
            raise
        except (DecodeError, ConfigError, OSError) as exc:
            self.whole_video("failed", "open", time.perf_counter() - began, **error_fields("decode", exc))
            return
        with stream:
            sample = FrameSample.of(stream.timestamps, self.unit.sample_fps)
            self.track(stream.info, stream.frames(keep=sample.keep), began, sample, stream.timestamps)

    def track(
        self,
        info: VideoInfo,
        frames: Iterator[np.ndarray],
        began: float,
        sample: FrameSample,
        timestamps: np.ndarray,
    ) -> None:
        """Track the whole video in one pass, closing a clip's rows and status whenever its last frame is done.

        `frames` are the sampled ones (`sample`), which the tracker numbers 0, 1, 2, ...; rows get their
        absolute index and `timestamps`."""
        spans = clip_spans(info.num_frames, clip_length(self.unit.clip, info.fps))
        if not spans:
            error = DecodeError(self.video.ref.uri, DecodeErrorKind.EMPTY, "the video has no frames")
            self.whole_video("failed", "open", time.perf_counter() - began, **error_fields("decode", error))
            return
        stage = "prompts"
        timed = TimedFrames(frames, len(sample))
        display = {"rotation": info.rotation, "mirrored": info.mirrored, "sample_fps": sample.fps}
        cutter = ClipCutter(self.video, spans, timestamps, sample, timed, began, partial(self.status, **display))
        try:
            prompts = video_prompts(self.video, info, sample)
            stage = "track"
            results = self._results(timed, prompts)
            with torch.inference_mode():
                for result in results:
                    cutter.feed(result, sample.absolute(result.frame_index))
            cutter.finish()
        except (MemoryError, torch.OutOfMemoryError):
            raise  # a resource problem, not the video's fault: let Ray restart the actor and retry
        except Exception as exc:
            if is_ray_system_error(exc) or isinstance(exc, TransientIOError):
                raise
            stage = "decode" if isinstance(exc, DecodeError) else stage
            if stage == "track":
                log.error("video %s failed in clip %d:\n%s", self.video.ref.uri, cutter.current, traceback.format_exc())
            cutter.fail_rest(error_fields(stage, exc))
        self.statuses += cutter.statuses
        self.rows += cutter.rows

    def _results(self, frames: TimedFrames, prompts: list[Prompt]) -> Iterable[FrameResult]:
        """The tracker's results over the video, by the mode it was planned in, with the video's seed set."""
        tracker = self.trackers.for_video(self.video)
        seed_everything(video_seed(self.unit.seed, self.video.video_id))
        if self.video.mode == "concept":
            return self.trackers.concept_loop().track(frames, prompts, concepts=self.video.concepts)
        return tracker.track(frames, prompts)
