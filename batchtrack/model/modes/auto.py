"""Automatic mode: find objects on keyframes with a grid of clicks, and keep them as tracks.

On every keyframe the SAM heads are prompted with a `points_per_side`² grid of single positive
clicks on that frame's image features (as SAM's automatic mask generator does); each click gives
its best multimask output. Proposals are kept when their predicted IoU and stability score are
high enough, then de-duplicated by mask NMS. They are associated with the live tracks by SAM 3's
mask-IoU rules (`association.associate`): confident unmatched proposals become new objects (a mask
prompt, i.e. a conditioning frame, on this keyframe), near-identical confident ones recondition
their track, and tracks mostly hidden by others are suppressed.

Letters: N proposals (grid points), C channels (256), h x w the feature grid, S the model's input
side, H x W video resolution.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from batchtrack.errors import ConfigError
from batchtrack.model.modes.association import (
    AssociationConfig,
    AssociationHead,
    AssociationResult,
    associate,
    learned_assignment,
)
from batchtrack.model.nn.masks import mask_nms as nms
from batchtrack.model.tracker.mask_decoder import MaskDecoder, choose_mask, stability_scores
from batchtrack.model.tracker.memory_bank import MemoryBank
from batchtrack.model.tracker.planning import FramePlan, KeyframeView
from batchtrack.model.tracker.prompt_encoder import PromptEncoder
from batchtrack.model.tracker.tracker import Tracker
from batchtrack.model.types import FrameResult, Prompt

POSITIVE_CLICK = 1


@dataclass(frozen=True)
class ProposalConfig:
    """How keyframe proposals are made and filtered (mirrors the proposal fields of AutoConfig)."""

    points_per_side: int = 8  # grid of single-click prompts
    min_pred_iou: float = 0.6  # keep proposals whose predicted IoU is at least this
    min_stability: float = 0.8  # keep proposals whose stability score is at least this
    stability_offset: float = 1.0  # stability = area(logit > +offset) / area(logit > -offset)
    nms_iou: float = 0.5  # mask NMS among proposals
    points_per_batch: int = 64  # grid points decoded together; bounds decoder memory

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ConfigError(
                f"points_per_side ({self.points_per_side}) and points_per_batch ({self.points_per_batch}) must be >= 1"
            )


@dataclass
class Proposals:
    """Object proposals of one frame, best score first."""

    low_res_logits: torch.Tensor  # (N, 4h, 4w) mask logits at the decoder's resolution
    scores: torch.Tensor  # (N,) predicted IoU, used as the proposal's confidence
    stability: torch.Tensor  # (N,)
    object_score_logits: torch.Tensor  # (N,)
    tokens: torch.Tensor  # (N, C) the chosen mask token (the proposal embedding for the learned head)
    points: torch.Tensor  # (N, 2) the click, in model-input pixels

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, index: torch.Tensor | list[int]) -> Proposals:
        idx = torch.as_tensor(index, dtype=torch.long, device=self.scores.device)
        return Proposals(
            self.low_res_logits[idx],
            self.scores[idx],
            self.stability[idx],
            self.object_score_logits[idx],
            self.tokens[idx],
            self.points[idx],
        )

    def video_masks(self, height: int, width: int) -> torch.Tensor:
        """(N, H, W) bool masks at video resolution (bilinear upsampling of the logits, then > 0)."""
        if len(self) == 0:
            return torch.zeros(0, height, width, dtype=torch.bool)
        up = F.interpolate(self.low_res_logits[:, None], size=(height, width), mode="bilinear", align_corners=False)
        return up[:, 0] > 0  # (N, H, W)


def grid_points(points_per_side: int, image_size: int) -> torch.Tensor:
    """Centres of a points_per_side x points_per_side grid over the model input: (N, 2) x, y pixels."""
    centres = (torch.arange(points_per_side, dtype=torch.float32) + 0.5) * (image_size / points_per_side)
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    # The prompt encoder adds half a pixel (pixel centres), so pass pixel indices.
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1) - 0.5  # (N, 2)


@torch.no_grad()
def propose_objects(
    vision: torch.Tensor,
    high_res: tuple[torch.Tensor, torch.Tensor],
    prompt_encoder: PromptEncoder,
    mask_decoder: MaskDecoder,
    no_mem_embed: torch.Tensor,
    image_size: int,
    config: ProposalConfig,
    mask_nms: bool = True,
) -> Proposals:
    """Object proposals on one frame, filtered and de-duplicated, best score first.

    vision: (1, C, h, w) stride-16 image features (no memory); high_res: the decoder's projected
    stride-4 / stride-8 levels, (1, C/8, 4h, 4w) and (1, C/4, 2h, 2w). The frame is treated as SAM 2
    treats a frame without memory: `no_mem_embed` is added to the stride-16 features.
    """
    c = vision.shape[1]
    image = vision + no_mem_embed.reshape(1, c, 1, 1)  # (1, C, h, w)
    feat_s0, feat_s1 = high_res
    image_pe = prompt_encoder.dense_pe()  # (1, C, h, w)
    points = grid_points(config.points_per_side, image_size).to(image.device)  # (N, 2)

    chunks: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, points.shape[0], config.points_per_batch):
        pts = points[start : start + config.points_per_batch]  # (n, 2)
        n = pts.shape[0]
        labels = torch.full((n, 1), POSITIVE_CLICK, dtype=torch.int64, device=image.device)
        sparse, dense = prompt_encoder(pts[:, None], labels, None)  # (n, 2, C), (n, C, h, w)
        out = mask_decoder(
            image.expand(n, -1, -1, -1),
            image_pe,
            sparse,
            dense,
            (feat_s0.expand(n, -1, -1, -1), feat_s1.expand(n, -1, -1, -1)),
        )
        chosen = choose_mask(out, multimask=True, stability_delta=None, stability_thresh=0.0)
        low_res = chosen.low_res[:, 0].float()  # (n, 4h, 4w)
        chunks.append(
            (
                low_res,
                chosen.iou.float(),
                stability_scores(low_res, config.stability_offset),
                chosen.object_score_logits[:, 0].float(),
                chosen.token.float(),
                pts,
            )
        )
    low_res, iou, stability, obj, tokens, pts = (torch.cat(parts) for parts in zip(*chunks, strict=True))
    proposals = Proposals(low_res, iou, stability, obj, tokens, pts)

    nonempty = (low_res > 0).flatten(1).any(1)
    keep = (iou >= config.min_pred_iou) & (stability >= config.min_stability) & (obj > 0) & nonempty  # (N,)
    proposals = proposals.select(torch.nonzero(keep).flatten())
    if len(proposals) == 0:
        return proposals
    if mask_nms:
        order = nms(proposals.low_res_logits.cpu(), proposals.scores.cpu(), config.nms_iou)
    else:
        order = torch.argsort(-proposals.scores.cpu(), stable=True).tolist()
    return proposals.select(order)


# ---------------------------------------------------------------------------------------------
# Track management


class _AutoSettings(Protocol):
    """The fields of `batchtrack.config.AutoConfig` automatic mode reads (structural: model/ does
    not depend on the job config)."""

    keyframe_every: int
    points_per_side: int
    min_pred_iou: float
    min_stability: float
    nms_iou: float
    match_iou: float
    new_object_max_iou: float
    new_object_min_score: float
    max_objects: int
    association: str


@dataclass(frozen=True)
class AutoTrackConfig:
    """Automatic mode: when to propose, how proposals are made, and how they become tracks."""

    keyframe_every: int = 15  # propose on the first frame and every N frames after it
    max_objects: int = 16  # cap on tracks per clip (prompted objects included)
    proposal: ProposalConfig = field(default_factory=ProposalConfig)
    association: AssociationConfig = field(default_factory=AssociationConfig)
    rule: Literal["iou", "learned"] = "iou"  # "learned" needs an AssociationHead
    learned_min_probability: float = 0.5  # a learned assignment below this is ignored

    def __post_init__(self) -> None:
        if self.keyframe_every < 1 or self.max_objects < 1:
            raise ConfigError(
                f"auto.keyframe_every ({self.keyframe_every}) and auto.max_objects ({self.max_objects}) must be >= 1"
            )

    @classmethod
    def from_auto(cls, auto: _AutoSettings) -> AutoTrackConfig:
        """The automatic-mode settings of a job's `AutoConfig`."""
        rule = auto.association
        if rule not in ("iou", "learned"):
            raise ConfigError(f"auto.association must be 'iou' or 'learned', got {rule!r}")
        return cls(
            keyframe_every=auto.keyframe_every,
            max_objects=auto.max_objects,
            proposal=ProposalConfig(
                points_per_side=auto.points_per_side,
                min_pred_iou=auto.min_pred_iou,
                min_stability=auto.min_stability,
                nms_iou=auto.nms_iou,
            ),
            association=AssociationConfig.from_auto(auto),
            rule="learned" if rule == "learned" else "iou",
        )


class _KeyframePlanner:
    """The `FramePlanner` of one `AutoTracker.track` call: proposes, associates, adds and suppresses."""

    def __init__(self, owner: AutoTracker, prompts: Sequence[Prompt]) -> None:
        self.owner = owner
        self.config = owner.config
        self.first_frame: int | None = None
        # New ids continue after every prompted id, so automatic objects never collide with prompted ones.
        self.next_id = max((int(p.object_id) for p in prompts), default=-1) + 1
        self.log: list[KeyframeLog] = []

    def watch(self, frames: Iterable[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
        """Pass the frames through, noting the first one: keyframes count from it."""
        for index, frame in frames:
            if self.first_frame is None:
                self.first_frame = int(index)
            yield index, frame

    def wants(self, frame_index: int) -> bool:
        assert self.first_frame is not None, "the tracker asks about frames only after pulling them"
        return abs(frame_index - self.first_frame) % self.config.keyframe_every == 0

    def plan(self, view: KeyframeView) -> FramePlan:
        tracker = self.owner.tracker
        proposals = propose_objects(
            view.vision,
            view.high_res,
            tracker.sam_prompt_encoder,
            tracker.sam_mask_decoder,
            tracker.no_mem_embed,
            tracker.config.image_size,
            self.config.proposal,
        )
        track_masks = view.low_res_logits.float().cpu()  # (M, 4h, 4w)
        track_scores = view.object_score_logits.float().cpu()  # (M,)
        result = associate(
            proposals.low_res_logits.cpu(),
            proposals.scores.cpu(),
            track_masks,
            track_scores,
            view.object_ids,
            self.config.association,
        )
        if self.config.rule == "learned" and self.owner.head is not None and len(proposals) > 0:
            result = self._learned(result, proposals, view)

        # Only proposals that become prompts are upsampled to video resolution.
        recondition = {t: p for t, p in sorted(result.recondition.items()) if t not in result.suppressed_tracks}
        room = max(0, self.config.max_objects - len(view.object_ids))
        wanted = list(dict.fromkeys(result.new_proposals[:room] + list(recondition.values())))
        upsampled = proposals.select(wanted).video_masks(view.height, view.width) if wanted else None  # (K, H, W)
        video_mask = {p: upsampled[k].cpu().numpy() for k, p in enumerate(wanted)} if upsampled is not None else {}
        prompts: list[Prompt] = []
        born: list[int] = []
        for p in result.new_proposals[:room]:
            if not video_mask[p].any():
                continue
            prompts.append(Prompt(view.frame_index, self.next_id, mask=video_mask[p]))
            born.append(self.next_id)
            self.next_id += 1
        for tid, p in recondition.items():
            if video_mask[p].any():
                prompts.append(Prompt(view.frame_index, tid, mask=video_mask[p]))
        self.log.append(KeyframeLog(view.frame_index, len(proposals), result, born))
        return FramePlan(prompts=prompts, suppress=list(result.suppressed_tracks))

    def _learned(self, result: AssociationResult, proposals: Proposals, view: KeyframeView) -> AssociationResult:
        """Matches and new objects from the learned head; suppression and re-conditioning stay geometric."""
        head = self.owner.head
        assert head is not None
        device = next(head.parameters()).device
        logits = head(proposals.tokens.to(device), view.pointers.float().to(device)).cpu()  # (N, M + 1)
        matched_idx, new = learned_assignment(logits, self.config.learned_min_probability)
        matched = {view.object_ids[j]: p for j, p in matched_idx.items()}
        confident = [p for p in new if float(proposals.scores[p]) >= self.config.association.new_object_min_score]
        unmatched = [t for t in view.object_ids if t not in matched and t not in result.empty_tracks]
        return AssociationResult(
            matched=matched,
            new_proposals=confident,
            unmatched_tracks=unmatched,
            empty_tracks=result.empty_tracks,
            recondition={t: p for t, p in result.recondition.items() if matched.get(t) == p},
            suppressed_tracks=result.suppressed_tracks,
        )


@dataclass(frozen=True)
class KeyframeLog:
    """What automatic mode decided on one keyframe (for tests, debugging and benchmarks)."""

    frame_index: int
    num_proposals: int
    association: AssociationResult
    new_object_ids: list[int]


class AutoTracker:
    """A `Tracker` that also finds objects by itself: same `track` interface, prompts optional.

    Prompted objects are tracked as usual; on keyframes, proposals that match no live track start
    new objects (ids after the largest prompted id), in order of proposal score.
    """

    def __init__(
        self, tracker: Tracker, config: AutoTrackConfig | None = None, head: AssociationHead | None = None
    ) -> None:
        self.tracker = tracker
        self.config = config or AutoTrackConfig()
        if self.config.rule == "learned" and head is None:
            raise ConfigError("auto.association='learned' needs association-head weights (an AssociationHead)")
        self.head = head.eval() if head is not None else None
        self.last_log: list[KeyframeLog] = []

    def track(
        self,
        frames: Iterable[tuple[int, np.ndarray]],
        prompts: Sequence[Prompt] = (),
        *,
        reverse: bool = False,
        num_frames: int | None = None,
        bank: MemoryBank | None = None,
    ) -> Iterator[FrameResult]:
        """Like `Tracker.track`; objects found on keyframes join from the keyframe on."""
        planner = _KeyframePlanner(self, prompts)
        self.last_log = planner.log
        if num_frames is None and hasattr(frames, "__len__"):
            num_frames = len(frames)  # type: ignore[arg-type]
        yield from self.tracker.track(
            planner.watch(frames), prompts, reverse=reverse, num_frames=num_frames, planner=planner, bank=bank
        )
