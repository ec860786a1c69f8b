"""VideoTrackers: an actor's trackers, and which one tracks a video by the mode the video was planned in.

Prompted videos go to the prompted tracker, `auto` videos to the automatic one (`AutoTracker`), and `concept`
videos to the concept-mode loop over the prompted tracker (SAM 3 with its detector), made at the first of them.
"""

from __future__ import annotations

from batchtrack.config import ConceptConfig
from batchtrack.errors import ConfigError
from batchtrack.model.modes.concept import ConceptLoop
from batchtrack.pipeline.plan import VideoTask
from batchtrack.trackers import FrameTracker, build_concept_loop


class VideoTrackers:
    """The trackers one actor holds, chosen per video."""

    def __init__(
        self,
        prompted: FrameTracker,
        auto: FrameTracker | None = None,
        concept_loop: ConceptLoop | None = None,
        *,
        auto_settings_given: bool = False,
        concept: ConceptConfig | None = None,
    ) -> None:
        self.prompted = prompted
        self.auto = auto  # tracks videos planned in mode `auto`; None: such videos fail
        self._concept_loop = concept_loop  # None: made from `prompted` at the first concept video
        self._auto_settings_given = auto_settings_given  # said in the error of an `auto` video without `auto`
        self._concept = concept or ConceptConfig()  # the job's concept-mode settings, for the loop made here

    def concept_loop(self) -> ConceptLoop:
        """The concept-mode loop over the prompted tracker (its detector) with the job's concept settings, made at
        the first concept video."""
        if self._concept_loop is None:
            self._concept_loop = build_concept_loop(self.prompted, self._concept)
        return self._concept_loop

    def for_video(self, video: VideoTask) -> FrameTracker:
        """The prompted tracker, or the automatic one for a video planned in mode `auto` (concept mode wraps
        the prompted one: `concept_loop`)."""
        if video.mode != "auto":
            return self.prompted
        if self.auto is None:
            raise ConfigError(
                f"video {video.ref.uri} is planned in automatic mode but this actor has no automatic tracker "
                f"(auto settings given: {self._auto_settings_given})"
            )
        return self.auto
