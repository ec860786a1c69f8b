"""Detection↔track association: SAM 3's mask-IoU rules, and a learned association head.

The geometric rules follow SAM 3's detect-and-track loop (reference/sam-trackers.md §4.4-4.7):

- a track is *matched* when some proposal overlaps it with mask IoU >= `match_iou`;
- a proposal is *new* when it is confident (score >= `new_object_min_score`) and overlaps every
  track with IoU < `new_object_max_iou`; new proposals are de-duplicated by mask NMS;
- a track that keeps less than `hidden_min_area_fraction` of its area once every pixel is given to
  a single object is *suppressed* (mostly hidden behind others);
- a confident track whose best proposal is confident and nearly identical (IoU >= 0.8, score >=
  0.8, track object score logit > 0.8) is a *reconditioning* candidate: that proposal's mask becomes
  a new conditioning frame of the track.

Concept mode (SAM 3's video loop, `track_planning.py` and `concept.py`) matches the detector's
detections with SAM 3's exact per-frame rule instead: `select_detections` (score, mask NMS),
`match_detections` (`_associate_det_trk`: tracks matched at one IoU, detections overlapping at
another, many tracks to one detection, re-conditioning candidates) and `occlusion_suppression`
(the more recently occluded of two overlapping tracks). These are stateless; what carries across
frames (hot-start, keep-alive, last occlusion) is in track_planning.py.

The learned head (`AssociationHead`) scores proposal embeddings against track object pointers with
a "new object" column. SAM 3 only trains such a head (its inference uses the IoU rules); here it is
an option of automatic mode. Its weights are not part of SAM 2.1 checkpoints, so it is a module of
its own with its own safetensors file, and the tracker's state dict stays exactly the official one.

Shapes: N proposals, M tracks, H x W mask resolution, C embedding channels (256), `...` leading
batch dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from batchtrack.errors import CheckpointError, ConfigError
from batchtrack.model.nn.masks import as_logits, mask_iou_matrix, mask_nms


class _AutoSettings(Protocol):
    """The fields of `batchtrack.config.AutoConfig` this module reads (kept structural so that
    model/ does not depend on the job config)."""

    match_iou: float
    new_object_max_iou: float
    new_object_min_score: float
    nms_iou: float


@dataclass(frozen=True)
class AssociationConfig:
    """Thresholds of the association rules. Defaults are SAM 3's values."""

    match_iou: float = 0.5  # proposal↔track IoU that counts as a match (SAM 3 trk_assoc_iou_thresh)
    new_object_max_iou: float = 0.1  # a proposal is new below this IoU with every track (assoc_iou_thresh)
    new_object_min_score: float = 0.7  # minimum proposal score of a new object (new_det_thresh)
    nms_iou: float = 0.5  # mask NMS among new proposals
    hidden_min_area_fraction: float = 0.3  # tracks keeping less of their area after non-overlap are suppressed
    recondition_min_iou: float = 0.8  # hard-coded in SAM 3
    recondition_min_score: float = 0.8  # hard-coded in SAM 3
    recondition_min_track_logit: float = 0.8  # the track's object-score logit must exceed this

    def __post_init__(self) -> None:
        for name in (
            "match_iou",
            "new_object_max_iou",
            "new_object_min_score",
            "nms_iou",
            "hidden_min_area_fraction",
            "recondition_min_iou",
            "recondition_min_score",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"association.{name} must be in [0, 1], got {value}")

    @classmethod
    def from_auto(cls, auto: _AutoSettings) -> AssociationConfig:
        """The thresholds an `AutoConfig` sets; the rest keep SAM 3's values."""
        return cls(
            match_iou=auto.match_iou,
            new_object_max_iou=auto.new_object_max_iou,
            new_object_min_score=auto.new_object_min_score,
            nms_iou=auto.nms_iou,
        )


@dataclass
class AssociationResult:
    """Outcome of one association step. Tracks are named by their ids, proposals by their index."""

    matched: dict[int, int] = field(default_factory=dict)  # track id -> best-IoU proposal (IoU >= match_iou)
    new_proposals: list[int] = field(default_factory=list)  # proposals that start tracks, best score first
    unmatched_tracks: list[int] = field(default_factory=list)  # non-empty tracks that no proposal matched
    empty_tracks: list[int] = field(default_factory=list)  # tracks with an empty mask on this frame
    recondition: dict[int, int] = field(default_factory=dict)  # track id -> proposal to recondition from
    suppressed_tracks: list[int] = field(default_factory=list)  # tracks mostly hidden by others


# ---------------------------------------------------------------------------------------------
# Mask geometry


def hidden_tracks(masks: torch.Tensor, min_area_fraction: float) -> list[int]:
    """Indices of (M, H, W) mask logits that keep < `min_area_fraction` of their area under non-overlap.

    Non-overlap gives every pixel to the object with the highest logit there (SAM 2's
    `_apply_non_overlapping_constraints`); SAM 3 suppresses an object that loses most of its area
    this way (`_suppress_object_pw_area_shrinkage`). Empty masks are never reported.
    """
    m = masks.shape[0]
    if m < 2:
        return []
    logits = as_logits(masks)
    area = (logits > 0).flatten(1).sum(1)  # (M,)
    winner = logits.argmax(dim=0)  # (H, W)
    owned = (logits > 0) & (winner[None] == torch.arange(m)[:, None, None])  # (M, H, W)
    kept_area = owned.flatten(1).sum(1)  # (M,)
    hidden = (area > 0) & (kept_area < min_area_fraction * area)
    return torch.nonzero(hidden).flatten().tolist()


# ---------------------------------------------------------------------------------------------
# SAM 3's association rules


def associate(
    proposal_masks: torch.Tensor,
    proposal_scores: torch.Tensor,
    track_masks: torch.Tensor,
    track_score_logits: torch.Tensor,
    track_ids: Sequence[int] | None = None,
    config: AssociationConfig | None = None,
) -> AssociationResult:
    """Associate N proposals with M live tracks by mask IoU (SAM 3's rules, see the module docstring).

    proposal_masks: (N, H, W) logits or bools; proposal_scores: (N,) in [0, 1];
    track_masks: (M, H', W') logits or bools of the tracks on the same frame;
    track_score_logits: (M,) object-score logits of the tracks; track_ids: the tracks' ids
    (default 0..M-1).
    """
    cfg = config or AssociationConfig()
    n, m = proposal_masks.shape[0], track_masks.shape[0]
    ids = list(range(m)) if track_ids is None else [int(t) for t in track_ids]
    if len(ids) != m or proposal_scores.shape[0] != n or track_score_logits.shape[0] != m:
        raise ValueError(
            f"association inputs disagree: {n} proposal masks, {proposal_scores.shape[0]} scores; "
            f"{m} track masks, {track_score_logits.shape[0]} score logits, {len(ids)} ids"
        )
    result = AssociationResult()
    scores = proposal_scores.float()
    ious = mask_iou_matrix(proposal_masks, track_masks)  # (N, M)
    track_nonempty = (as_logits(track_masks) > 0).flatten(1).any(1) if m else torch.zeros(0, dtype=torch.bool)

    for j, tid in enumerate(ids):
        if not track_nonempty[j]:
            result.empty_tracks.append(tid)
            continue
        if n > 0:
            best = int(ious[:, j].argmax())
            if ious[best, j] >= cfg.match_iou:
                result.matched[tid] = best
                continue
        result.unmatched_tracks.append(tid)

    max_iou = ious.max(dim=1).values if m > 0 else torch.zeros(n)  # (N,)
    is_new = (scores >= cfg.new_object_min_score) & (max_iou < cfg.new_object_max_iou)  # (N,)
    candidates = torch.nonzero(is_new).flatten()
    if candidates.numel() > 0:
        kept = mask_nms(proposal_masks[candidates], scores[candidates], cfg.nms_iou)
        result.new_proposals = [int(candidates[k]) for k in kept]

    # Reconditioning: each confident, near-duplicate proposal points at its best-IoU track; a track
    # that several proposals point at takes the highest-IoU one.
    if m > 0:
        best_track = ious.argmax(dim=1)  # (N,)
        for p in range(n):
            if is_new[p] or scores[p] < cfg.recondition_min_score or max_iou[p] < cfg.recondition_min_iou:
                continue
            j = int(best_track[p])
            if float(track_score_logits[j]) <= cfg.recondition_min_track_logit:
                continue
            tid = ids[j]
            current = result.recondition.get(tid)
            if current is None or ious[p, j] > ious[current, j]:
                result.recondition[tid] = p

    result.suppressed_tracks = [ids[j] for j in hidden_tracks(track_masks, cfg.hidden_min_area_fraction)]
    return result


# ---------------------------------------------------------------------------------------------
# SAM 3's video rules, one frame (concept mode; the state across frames is in track_planning.py)


@dataclass
class DetectionMatch:
    """Detections of one frame against the tracks propagated onto it (SAM 3's `_associate_det_trk`).

    Detections are named by their index, tracks by their id.
    """

    new_detections: list[int] = field(default_factory=list)  # confident detections that overlap no track
    unmatched_tracks: list[int] = field(default_factory=list)  # non-empty tracks no detection matches
    empty_tracks: list[int] = field(default_factory=list)  # tracks whose propagated mask is empty
    det_to_tracks: dict[int, list[int]] = field(default_factory=dict)  # detection -> tracks it overlaps
    recondition: dict[int, int] = field(default_factory=dict)  # track id -> high-confidence, high-IoU detection


def select_detections(masks: torch.Tensor, scores: torch.Tensor, min_score: float, nms_iou: float) -> list[int]:
    """Detections kept by SAM 3's detection stage: score > `min_score`, then mask NMS at `nms_iou`.

    Returns indices, best score first. `nms_iou` <= 0 keeps every confident detection.
    """
    confident = torch.nonzero(scores.float() > min_score).flatten()  # (K,)
    if confident.numel() == 0:
        return []
    if nms_iou <= 0:
        order = torch.argsort(-scores[confident].float(), stable=True)
        return [int(confident[k]) for k in order]
    kept = mask_nms(masks[confident], scores[confident], nms_iou)
    return [int(confident[k]) for k in kept]


def match_detections(
    det_masks: torch.Tensor,
    det_scores: torch.Tensor,
    track_masks: torch.Tensor,
    track_ids: Sequence[int],
    *,
    assoc_iou: float,
    track_assoc_iou: float,
    new_min_score: float,
    recondition_min_score: float,
    recondition_min_iou: float,
) -> DetectionMatch:
    """Match D detections with M tracks by mask IoU, as SAM 3's video loop does on every frame.

    det_masks: (D, H, W) logits or bools; det_scores: (D,) probabilities; track_masks: (M, H', W')
    logits or bools of the tracks propagated onto this frame (before memory is written).

    - a track is matched when some detection overlaps it with IoU >= `track_assoc_iou` (many
      tracks may match one detection); a non-empty track that none matches is unmatched;
    - a detection overlaps the tracks with IoU >= `assoc_iou` (the lists feed keep-alive and the
      hot-start duplicate rule); a detection with score >= `new_min_score` that overlaps none is new (with no
      track at all, every detection is new, as in SAM 3);
    - a detection that is not new, with score >= `recondition_min_score` and IoU >=
      `recondition_min_iou` with its best track, is that track's re-conditioning candidate (a
      later detection of the same track replaces an earlier one, as in SAM 3).
    """
    d, m = det_masks.shape[0], track_masks.shape[0]
    ids = [int(t) for t in track_ids]
    if len(ids) != m or det_scores.shape[0] != d:
        raise ValueError(
            f"match inputs disagree: {d} detection masks, {det_scores.shape[0]} scores; {m} tracks, {len(ids)} ids"
        )
    scores = det_scores.float()
    nonempty = (as_logits(track_masks) > 0).flatten(1).any(1).tolist() if m else []
    result = DetectionMatch(empty_tracks=[t for t, full in zip(ids, nonempty, strict=True) if not full])
    if m == 0:
        # SAM 3's `_associate_det_trk` with no track at all takes every detection as new, whatever its score.
        result.new_detections = list(range(d))
        return result
    ious = mask_iou_matrix(det_masks, track_masks)  # (D, M)
    matched = (ious >= track_assoc_iou).any(dim=0).tolist() if d else [False] * m  # (M,)
    result.unmatched_tracks = [t for t, full, hit in zip(ids, nonempty, matched, strict=True) if full and not hit]
    if d == 0:
        return result
    overlaps = ious >= assoc_iou  # (D, M)
    is_new = (scores >= new_min_score) & ~overlaps.any(dim=1)  # (D,)
    result.new_detections = torch.nonzero(is_new).flatten().tolist()
    best_iou, best_track = ious.max(dim=1)  # (D,), (D,)
    candidate = ~is_new & (scores >= recondition_min_score) & (best_iou >= recondition_min_iou)  # (D,)
    for k in range(d):
        result.det_to_tracks[k] = [ids[j] for j in torch.nonzero(overlaps[k]).flatten().tolist()]
        if candidate[k]:
            result.recondition[ids[int(best_track[k])]] = k
    return result


def occlusion_suppression(
    masks: torch.Tensor, last_occluded: torch.Tensor, iou_threshold: float, reverse: bool = False
) -> torch.Tensor:
    """(M,) bool: tracks to suppress because they overlap another track and were occluded more recently.

    masks: (M, H, W) logits or bools of the tracks on this frame; last_occluded: (M,) int64, the last
    frame each track was empty or suppressed (-1: never). Of two tracks with mask IoU >=
    `iou_threshold`, the one occluded more recently (later; earlier when `reverse`) is suppressed,
    provided the other one was occluded at some point too (SAM 3's
    `_get_objects_to_suppress_based_on_most_recently_occluded`, including that last condition).
    """
    m = masks.shape[0]
    if m < 2:
        return torch.zeros(m, dtype=torch.bool)
    ious = mask_iou_matrix(masks, masks)  # (M, M)
    pairs = torch.triu(ious >= iou_threshold, diagonal=1)  # (M, M) i < j
    li, lj = last_occluded[:, None], last_occluded[None, :]  # (M, 1), (1, M)
    later_i, later_j = (li < lj, lj < li) if reverse else (li > lj, lj > li)
    suppress_i = pairs & later_i & (lj > -1)  # (M, M)
    suppress_j = pairs & later_j & (li > -1)  # (M, M)
    return suppress_i.any(dim=1) | suppress_j.any(dim=0)


# ---------------------------------------------------------------------------------------------
# Learned association head


class _MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, out)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](F.relu(self.layers[0](x)))


class AssociationHead(nn.Module):
    """Affinity logits between proposals and tracks, with a "new object" column.

    Proposal embeddings (the mask decoder's output token of each proposal) and track object pointers
    are projected by two small MLPs; the affinity is their scaled dot product. The last column is a
    per-proposal "new object" logit from a third projection, so a softmax over a row says which
    track the proposal continues, or that it starts a new one (SAM 3's `Det2TrkAssoc` target).
    """

    def __init__(self, dim: int = 256, hidden: int = 256, key_dim: int = 128) -> None:
        super().__init__()
        self.dim = dim
        self.proposal_proj = _MLP(dim, hidden, key_dim)
        self.track_proj = _MLP(dim, hidden, key_dim)
        self.new_object = _MLP(dim, hidden, 1)
        self.scale = 1.0 / math.sqrt(key_dim)

    def forward(
        self,
        proposal_embeddings: torch.Tensor,
        track_pointers: torch.Tensor,
        track_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(..., N, C) proposals and (..., M, C) tracks -> (..., N, M + 1) logits; column M = new object.

        `track_valid` (..., M) bool marks padded tracks as absent (their logits are -inf).
        """
        if proposal_embeddings.shape[-1] != self.dim or track_pointers.shape[-1] != self.dim:
            raise ValueError(
                f"association head expects {self.dim}-d inputs, got {tuple(proposal_embeddings.shape)} "
                f"and {tuple(track_pointers.shape)}"
            )
        q = self.proposal_proj(proposal_embeddings)  # (..., N, K)
        k = self.track_proj(track_pointers)  # (..., M, K)
        affinity = (q @ k.transpose(-1, -2)) * self.scale  # (..., N, M)
        if track_valid is not None:
            affinity = affinity.masked_fill(~track_valid[..., None, :], float("-inf"))  # (..., N, M)
        new = self.new_object(proposal_embeddings)  # (..., N, 1)
        return torch.cat([affinity, new], dim=-1)  # (..., N, M + 1)


def association_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of (..., N, M + 1) association logits against (..., N) targets.

    A target is the index of the track the proposal continues, M for a new object, or -1 to ignore
    the proposal. The mean is over the non-ignored proposals (0 with a gradient when there are none).
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree")
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (B*N, M + 1)
    flat_targets = targets.reshape(-1).long()  # (B*N,)
    valid = flat_targets >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(flat_logits[valid], flat_targets[valid])


def learned_assignment(logits: torch.Tensor, min_probability: float = 0.5) -> tuple[dict[int, int], list[int]]:
    """Read a (N, M + 1) logit matrix as (track index -> proposal, proposals that are new objects).

    Each proposal takes its most probable column; a track claimed by several proposals keeps the
    most probable one. Proposals below `min_probability` are left out.
    """
    probs = logits.softmax(dim=-1)  # (N, M + 1)
    m = logits.shape[-1] - 1
    best_p, best_col = probs.max(dim=-1)  # (N,), (N,)
    matched: dict[int, int] = {}
    new: list[int] = []
    for p in torch.argsort(-best_p, stable=True).tolist():
        if best_p[p] < min_probability:
            continue
        col = int(best_col[p])
        if col == m:
            new.append(p)
        elif col not in matched:
            matched[col] = p
    return matched, new


def save_association_head(head: AssociationHead, path: str | Path) -> None:
    """Write the head's weights to a safetensors file of its own (never into a SAM 2.1 checkpoint)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    save_file(tensors, str(path), metadata={"dim": str(head.dim)})


def load_association_head(path: str | Path, head: AssociationHead | None = None) -> AssociationHead:
    """Load a head saved by `save_association_head`, strictly: any key or shape difference is an error."""
    try:
        tensors = load_file(str(path))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read association-head weights: {exc}") from exc
    target = head or AssociationHead()
    expected = target.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(
        f"{k}: {tuple(tensors[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    )
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{path}: association-head weights do not fit: missing {missing}, unexpected {unexpected}, "
            f"mis-shaped {mismatched}",
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )
    target.load_state_dict(tensors, strict=True)
    return target
