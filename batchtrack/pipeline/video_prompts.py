"""A video's manifest prompts as the tracker's prompts, numbered as the tracker sees its frames.

The manifest numbers frames in the video; with frame sampling (--sample-fps) the tracker sees only some of
them and numbers those 0, 1, 2, ... (`FrameSample.position`), so a prompt on a frame sampling skips is refused.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from batchtrack.errors import PromptError
from batchtrack.io.prompts import PromptRecord
from batchtrack.io.rle import decode_mask
from batchtrack.io.video import VideoInfo
from batchtrack.model.types import Prompt
from batchtrack.pipeline.plan import VideoTask
from batchtrack.pipeline.sampling import FrameSample

log = logging.getLogger(__name__)


def to_model_prompt(record: PromptRecord, height: int, width: int) -> Prompt:
    """A manifest prompt as the tracker's Prompt; a mask must be at the video's resolution."""
    points = labels = box = mask = None
    if record.points is not None:
        table = np.asarray(record.points, dtype=np.float32)  # (P, 3): x, y, label
        points = np.ascontiguousarray(table[:, :2])  # (P, 2)
        labels = table[:, 2].astype(np.int32)  # (P,)
    if record.box is not None:
        box = np.asarray(record.box, dtype=np.float32)
    if record.mask is not None:
        if tuple(record.mask.size) != (height, width):
            raise PromptError(
                f"{record.video}: mask prompt of object {record.object_id} on frame {record.frame} has size "
                f"{list(record.mask.size)} but the video is {height}x{width}"
            )
        mask = decode_mask(record.mask.counts, height, width)
    return Prompt(
        frame_index=record.frame, object_id=record.object_id, points=points, point_labels=labels, box=box, mask=mask
    )


def video_prompts(video: VideoTask, info: VideoInfo, sample: FrameSample | None = None) -> list[Prompt]:
    """The video's prompts as the tracker's, numbered as the tracker sees the frames (`sample`); a prompt on
    a frame sampling skips is a PromptError naming the nearest tracked frames."""
    if sample is None:
        sample = FrameSample.every_frame(info.num_frames)
    beyond = [p for p in video.prompts if p.frame >= info.num_frames]
    if beyond:
        log.warning(
            "%s: %d prompt(s) on frames >= %d (the video's length) are ignored, e.g. object %d on frame %d",
            video.ref.uri,
            len(beyond),
            info.num_frames,
            beyond[0].object_id,
            beyond[0].frame,
        )
    prompts = []
    for record in video.prompts:
        if record.frame >= info.num_frames:
            continue
        prompt = to_model_prompt(record, info.height, info.width)
        what = f"{video.ref.uri}: the prompt of object {record.object_id}"
        prompts.append(replace(prompt, frame_index=sample.position(record.frame, what)))
    return prompts
