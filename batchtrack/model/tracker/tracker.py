"""The memory tracker: encode → attend to the bank → decode → encode memory → update the bank.

A SAM 2.1-compatible video tracker that streams: frames are pulled from an iterator, encoded ahead
in small batches (the image encoder does not depend on memory), and every object of the clip goes
through memory attention → mask decoder → memory encoder together as one batch per frame. Only the
memory bank survives a frame; it is bounded (see memory_bank.py), so memory does not grow with the
clip length. Module attribute names are SAM 2.1's state-dict keys, so official checkpoints load
strictly.

Behaviour equals the official `SAM2VideoPredictor.propagate_in_video` after all prompts were added,
for a clip whose objects are each prompted on the frame where they join (see `Tracker.track`).

Letters: N objects on a frame, C channels (256), M memory channels (64), h x w the feature grid
(image_size / 16), S the model input side (image_size), H x W the video frame, P prompt points.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from itertools import islice

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.errors import ConfigError, PromptError
from batchtrack.model.configs import PEViTConfig, TrackerConfig
from batchtrack.model.nn.postprocess import fill_holes_and_remove_specks, fill_small_holes
from batchtrack.model.nn.preprocess import preprocess_frames
from batchtrack.model.tracker.image_encoder import ImageEncoder, ImageFeatures
from batchtrack.model.tracker.mask_decoder import ChosenMask, MaskDecoder, choose_mask
from batchtrack.model.tracker.memory_attention import MemoryAttention
from batchtrack.model.tracker.memory_bank import MemoryBank, MemorySelection
from batchtrack.model.tracker.memory_encoder import MASK_DOWNSAMPLE_LAYERS, MemoryEncoder
from batchtrack.model.tracker.object_pointer import (
    build_obj_ptr_proj,
    build_obj_ptr_tpos_proj,
    gate_pointer,
    pointer_tokens,
)
from batchtrack.model.tracker.planning import (
    DetectionPrompt,
    FramePlanner,
    KeyframeView,
    PromptPlan,
    validate_prompt,
)
from batchtrack.model.tracker.prompt_encoder import PromptEncoder
from batchtrack.model.tracker.step import BOX_LABELS, ClipState, Decoded, FrameFeatures, ObjectPrompt, Rows, no_points
from batchtrack.model.types import FrameResult, Prompt

# Low-res logits of an object predicted to be absent (SAM 2's NO_OBJ_SCORE).
NO_OBJECT_LOGIT = -1024.0
# A mask prompt becomes logits of +10 / -10, its object score +10 / -10 (SAM 2's mask-as-output rule).
MASK_PROMPT_SCALE, MASK_PROMPT_BIAS = 20.0, -10.0
# A mask suppressed by a FramePlanner is clamped to at most this logit (SAM 3's area-shrink suppression).
SUPPRESSED_LOGIT = -10.0
# SAM 3 clamps a tracked mask to +-32 before feeding it back as the mask input of a click correction.
TRACKED_MASK_INPUT_LIMIT = 32.0
# SAM 3 suppresses a mask that keeps less than this fraction of its area under pixel-wise non-overlap.
SHRINK_KEEP_FRACTION = 0.3
MEMORY_MASK_STRIDE = 2**MASK_DOWNSAMPLE_LAYERS


def _trunc_normal_param(*shape: int) -> nn.Parameter:
    p = nn.Parameter(torch.zeros(*shape))
    nn.init.trunc_normal_(p, std=0.02)
    return p


class Tracker(nn.Module):
    """SAM 2.1-style memory tracker. Build it with `batchtrack.model.loading.build.build_tracker`.

    image_encoder: (B, 3, S, S) images -> `ImageFeatures`; the builder passes SAM 3's (PE ViT + dual neck) in,
    so the tracker does not depend on SAM 3. Without one, a Hiera config gets SAM 2.1's `ImageEncoder`.
    """

    def __init__(self, config: TrackerConfig, image_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        c, m = config.d_model, config.mem_dim
        self.image_encoder = image_encoder if image_encoder is not None else _hiera_image_encoder(config)
        self.memory_attention = MemoryAttention(
            c,
            m,
            config.memory_attention_layers,
            config.memory_attention_num_heads,
            config.memory_attention_dim_feedforward,
            config.rope_theta,
        )
        # SAM 3 resizes memory masks so that its stride-16 downsampler lands on the stride-14 grid.
        mask_size = config.feature_size * MEMORY_MASK_STRIDE if config.memory_mask_resize else None
        self.memory_encoder = MemoryEncoder(c, m, config.memory_fuser_layers, mask_size)
        self.sam_prompt_encoder = PromptEncoder(c, config.feature_size, config.image_size, config.prompt_mask_in_chans)
        self.sam_mask_decoder = MaskDecoder(
            c,
            config.decoder_depth,
            config.decoder_num_heads,
            config.decoder_mlp_dim,
            config.num_multimask_outputs,
            config.iou_head_depth,
            config.iou_head_hidden_dim,
        )
        self.obj_ptr_proj = build_obj_ptr_proj(c)
        self.obj_ptr_tpos_proj = build_obj_ptr_tpos_proj(c, m)
        # Turns a S x S mask prompt into a 4h x 4w dense prompt for the decoder pass that yields its pointer.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.maskmem_tpos_enc = _trunc_normal_param(config.num_maskmem, 1, 1, m)
        self.no_mem_embed = _trunc_normal_param(1, 1, c)
        # Part of the checkpoint; SAM 2.1 inference never reads it (initial frames add no_mem_embed directly).
        self.no_mem_pos_enc = _trunc_normal_param(1, 1, c)
        self.no_obj_ptr = _trunc_normal_param(1, c)
        self.no_obj_embed_spatial = _trunc_normal_param(1, m)

    @property
    def device(self) -> torch.device:
        return self.no_obj_ptr.device

    # ------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------

    def track(
        self,
        frames: Iterable[tuple[int, np.ndarray]],
        prompts: Sequence[Prompt],
        *,
        reverse: bool = False,
        num_frames: int | None = None,
        planner: FramePlanner | None = None,
        bank: MemoryBank | None = None,
    ) -> Iterator[FrameResult]:
        """Track the prompted objects through `frames`, yielding one FrameResult per frame, in order.

        frames: (absolute frame index, (H, W, 3) uint8 RGB) in processing order (last to first when
        `reverse`). prompts: points / box / mask per object and frame, indices as in `frames`.
        An object joins on the first of its prompted frames that the stream reaches; every prompted
        frame of an object becomes one of its conditioning frames (predicted without memory, as SAM 2
        does for prompts added before propagation). Frames before any object joins yield an empty
        result and are not encoded. Streaming has one consequence: a conditioning frame is read from
        the moment the stream reaches it, whereas the official predictor, holding the whole video,
        also lets earlier frames attend to later prompted frames; the two agree whenever each object's
        prompts are on the frame where it joins (checked in tests/parity). With `correction_reads_tracked_mask`
        (SAM 3), clicks on an object already live are decoded with its tracked mask there as mask input, as the
        official predictor does for a frame it has tracked. A reverse pass is a pass of
        its own: it does not reuse memory of an earlier forward pass.

        num_frames: the clip length. SAM 2 normalises pointer distances by min(length, 16) - 1; give it
        for clips shorter than 16 frames (taken from `len(frames)` when frames has a length).

        bank: the clip's memory bank, from `new_bank` (default: a fresh one); pass one to inspect it.

        planner: automatic and concept mode's hook: on the frames it wants, it sees the live objects'
        predictions and may add mask prompts (new objects), re-condition live objects (conditioning frame and
        pointer from a mask, output and memory from the propagated prediction), suppress objects before memory
        is written, and remove objects (they stop there and their memory is dropped).
        """
        plan = PromptPlan(prompts)
        if num_frames is None and hasattr(frames, "__len__"):
            num_frames = len(frames)  # type: ignore[arg-type]
        if bank is None:
            bank = self.new_bank(reverse=reverse, num_frames=num_frames)
        elif bank.sign != (-1 if reverse else 1):
            raise ValueError(f"the memory bank was made for reverse={bank.sign < 0}, not reverse={reverse}")
        clip: ClipState | None = None
        step = -1 if reverse else 1
        iterator = iter(frames)
        while chunk := list(islice(iterator, self.config.encoder_batch_size)):
            if clip is None:
                h, w = _check_frame(chunk[0][1], None)
                clip = ClipState.start(h, w, bank)
            for _, frame in chunk:
                _check_frame(frame, (clip.height, clip.width))
            # A frame needs features when an object is live on it: joined before, or prompted on it.
            live_from = [
                bool(clip.live)
                or any(plan.at(i) or (planner is not None and planner.wants(i)) for i, _ in chunk[: k + 1])
                for k in range(len(chunk))
            ]
            needed = [f for (_, f), need in zip(chunk, live_from, strict=True) if need]
            with torch.no_grad(), self._autocast():
                features = self.encode(np.stack(needed)) if needed else []
            feats = iter(features)
            for (index, _), need in zip(chunk, live_from, strict=True):
                if not need:
                    yield _empty_result(index, clip.height, clip.width, self.config.d_model)
                    continue
                with torch.no_grad(), self._autocast():
                    result = self._step(clip, index, next(feats), plan, planner)
                bank.prune(index + step)
                yield result
            del features, feats, chunk, needed

    def new_bank(self, *, reverse: bool = False, num_frames: int | None = None) -> MemoryBank:
        """An empty memory bank for one clip (SAM 2 reads min(clip length, 16) pointers)."""
        max_ptrs = self.config.max_obj_ptrs_in_encoder
        if num_frames is not None:
            max_ptrs = max(1, min(num_frames, max_ptrs))
        return MemoryBank(
            self.config.num_maskmem,
            max_ptrs,
            self.config.max_cond_frames_in_attn,
            self.config.memory_temporal_stride_for_eval,
            reverse,
            self.config.memory_selection,
        )

    # ------------------------------------------------------------------------------------------
    # The per-frame step (public: training/unroll.py takes the same step; see step.py)
    # ------------------------------------------------------------------------------------------

    def encode(self, frames: np.ndarray | torch.Tensor) -> list[FrameFeatures]:
        """(B, H, W, 3) uint8 RGB frames -> per-frame features: the stride-16 level and the projected high-res levels
        (all the tracker reads), normalised with the config's `image_mean` / `image_std`. Gradients flow when the
        caller allows them (training)."""
        images = preprocess_frames(
            frames, self.config.image_size, self.device, self.config.image_mean, self.config.image_std
        )  # (B, 3, S, S)
        out: ImageFeatures = self.image_encoder(images)
        level0, level1 = out.backbone_fpn[0], out.backbone_fpn[1]
        s0, s1 = self.sam_mask_decoder.project_high_res(level0, level1)
        vision, pos = out.backbone_fpn[-1], out.vision_pos_enc[-1]
        return [
            FrameFeatures(vision[i : i + 1], pos[i : i + 1], (s0[i : i + 1], s1[i : i + 1]))
            for i in range(images.shape[0])
        ]

    def attend_memory(
        self, clip: ClipState, feat: FrameFeatures, object_ids: list[int], selection: MemorySelection
    ) -> torch.Tensor:
        """Memory-conditioned features (N, C, h, w) for objects sharing one bank selection."""
        assert clip.memory_pos is not None, "a tracked object always has a conditioning frame in the bank"
        n = len(object_ids)
        _, c, h, w = feat.vision.shape
        mem = clip.bank.gather(object_ids, selection)
        s, m = mem.maskmem.shape[1], mem.maskmem.shape[2]
        spatial = mem.maskmem.to(feat.vision.dtype).flatten(3).transpose(2, 3).reshape(n, s * h * w, m)  # (N, S*hw, M)
        base_pos = clip.memory_pos.flatten(2).transpose(1, 2)  # (1, hw, M)
        rows = torch.tensor(mem.tpos_rows, device=base_pos.device)
        tpos = self.maskmem_tpos_enc[rows].reshape(s, 1, m)  # (S, 1, M)
        spatial_pos = (base_pos + tpos).reshape(1, s * h * w, m).expand(n, -1, -1)  # (N, S*hw, M)
        ptr_tok, ptr_pos = pointer_tokens(
            mem.pointers, mem.offsets, clip.max_ptr_offset, self.obj_ptr_tpos_proj, m
        )  # (N, 4P, M) each
        memory = torch.cat([spatial, ptr_tok.to(spatial.dtype)], dim=1)  # (N, K, M)
        memory_pos = torch.cat([spatial_pos, ptr_pos.to(spatial_pos.dtype)], dim=1)  # (N, K, M)
        curr = feat.vision.flatten(2).transpose(1, 2).expand(n, -1, -1)  # (N, hw, C)
        curr_pos = feat.vision_pos.flatten(2).transpose(1, 2).expand(n, -1, -1)  # (N, hw, C)
        out = self.memory_attention(curr, curr_pos, memory, memory_pos, (h, w), ptr_tok.shape[1])  # (N, hw, C)
        return out.transpose(1, 2).reshape(n, c, h, w)

    def decode(
        self,
        image: torch.Tensor,
        feat: FrameFeatures,
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor | None = None,
        *,
        multimask: bool,
        stability: bool = True,
    ) -> Decoded:
        """The SAM heads on (N, C, h, w) features: prompt encoder, decoder, mask choice.

        stability: whether the config's dynamic multimask via stability may pick the mask (SAM 2 applies it in eval
        only, so the training unroll passes False in train mode)."""
        n = image.shape[0]
        sparse, dense = self.sam_prompt_encoder(coords, labels, mask_input)
        high_res = (feat.high_res[0].expand(n, -1, -1, -1), feat.high_res[1].expand(n, -1, -1, -1))
        out = self.sam_mask_decoder(image, self.sam_prompt_encoder.dense_pe(), sparse, dense, high_res)
        dynamic = stability and self.config.dynamic_multimask_via_stability
        delta = self.config.dynamic_multimask_stability_delta if dynamic else None
        return Decoded(out, choose_mask(out, multimask, delta, self.config.dynamic_multimask_stability_thresh))

    def uses_multimask(self, num_points: int) -> bool:
        """Whether the decoder picks among its multimask candidates for a prompt of this many points (0: tracked)."""
        return self.config.multimask_min_pt_num <= num_points <= self.config.multimask_max_pt_num

    def rows_from_decoder(self, object_ids: list[int], chosen: ChosenMask, prompted: bool) -> Rows:
        """The decoder's chosen masks as rows: an object predicted absent gets NO_OBJECT_LOGIT and `no_obj_ptr`."""
        visible = chosen.object_score_logits > 0  # (N, 1)
        low_res = torch.where(visible[:, :, None, None], chosen.low_res.float(), NO_OBJECT_LOGIT)
        pointers = gate_pointer(self.obj_ptr_proj(chosen.token), visible, self.no_obj_ptr)
        return Rows(
            object_ids=object_ids,
            low_res=low_res,
            iou=chosen.iou.float(),
            pointers=pointers,
            scores=chosen.object_score_logits.float(),
            prompted=torch.full((len(object_ids),), prompted, dtype=torch.bool, device=low_res.device),
        )

    def mask_as_output(self, feat: FrameFeatures, prompts: list[ObjectPrompt]) -> Rows:
        """Mask prompts bypass the decoder for the mask; a decoder pass on the raw features gives the pointer."""
        video_res = self.config.mask_prompt_at_video_res
        # SAM 3 reads the mask at 4 x its low-res side, so the 4x mask_downsample lands on the decoder's mask grid.
        side = 16 * self.config.feature_size if video_res else self.config.image_size
        masks = torch.stack(
            [
                p.input_mask if p.input_mask is not None else self._mask_to_input(p.mask, side, binarise=not video_res)
                for p in prompts
                if p.mask is not None
            ]
        )  # (N, 1, side, side)
        n = masks.shape[0]
        low_side = 4 * self.config.feature_size  # S / 4 for SAM 2.1; 288 for SAM 3 at 1008
        low_hw = (low_side, low_side)
        if video_res:
            low_res = F.interpolate(
                self._video_res_mask_logits(prompts), size=low_hw, mode="bilinear", align_corners=False, antialias=True
            )
        else:
            high = masks * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
            low_res = F.interpolate(high, size=low_hw, mode="bilinear", align_corners=False, antialias=True)
        image = feat.vision.expand(n, -1, -1, -1)
        coords, labels = no_points(n, image.device)
        dense = self.mask_downsample(masks)  # (N, 1, side/4, side/4)
        if dense.shape[-1] != low_side:
            # SAM 2.1's rule at stride 14: the official heads resize a mask prompt to the decoder's mask grid like this.
            dense = F.interpolate(dense, size=low_hw, mode="bilinear", align_corners=False, antialias=True)
        chosen = self.decode(image, feat, coords, labels, dense, multimask=False).chosen
        # SAM 2 gates this pointer twice: by the decoder's own object score, then by the mask being non-empty.
        pointers = gate_pointer(self.obj_ptr_proj(chosen.token), chosen.object_score_logits > 0, self.no_obj_ptr)
        visible = (masks.flatten(1) > 0).any(dim=1, keepdim=True)  # (N, 1)
        pointers = gate_pointer(pointers, visible, self.no_obj_ptr)
        return Rows(
            object_ids=[p.object_id for p in prompts],
            low_res=low_res,
            iou=torch.ones(n, device=low_res.device),
            pointers=pointers,
            scores=visible.float() * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS,
            prompted=torch.ones(n, dtype=torch.bool, device=low_res.device),
        )

    def memorise(
        self,
        clip: ClipState,
        frame_index: int,
        feat: FrameFeatures,
        rows: Rows,
        low_res: torch.Tensor,
        from_prompt: torch.Tensor,
        video_loop: torch.Tensor | None = None,
    ) -> None:
        """Encode every object's prediction into memory and store it in the bank.

        from_prompt: (N,) bool, rows whose mask is a prompt's (binarised, made non-overlapping as configured);
        the bank's conditioning flag is `rows.prompted`. video_loop: (N,) bool, rows whose memory SAM 3's video
        loop re-encodes itself (`_video_loop_memory`); the others are encoded together here."""
        if video_loop is not None and bool(video_loop.any()):
            own = torch.nonzero(~video_loop).flatten().tolist()
            loop = torch.nonzero(video_loop).flatten().tolist()
            features, absent = self._video_loop_memory(feat, low_res[loop], clip.bystanders)
            if own:
                own_rows = rows.reorder([rows.object_ids[i] for i in own])
                own_features, own_absent = self._memory_features(feat, own_rows, low_res[own], from_prompt[own])
                order = torch.tensor(loop + own, device=features.device)
                inverse = torch.argsort(order)
                features = torch.cat([features, own_features.to(features.dtype)])[inverse]
                absent = torch.cat([absent, own_absent.to(absent.dtype)])[inverse]
        else:
            features, absent = self._memory_features(feat, rows, low_res, from_prompt)
        features = features + absent[:, :, None, None] * self.no_obj_embed_spatial[..., None, None]
        self._store_memory(clip, frame_index, rows, features)

    # ------------------------------------------------------------------------------------------
    # One frame of `track`
    # ------------------------------------------------------------------------------------------

    def _step(
        self, clip: ClipState, frame_index: int, feat: FrameFeatures, plan: PromptPlan, planner: FramePlanner | None
    ) -> FrameResult:
        prompted = {oid: self._merge_prompts(ps, clip) for oid, ps in plan.at(frame_index).items()}
        corrected = any(oid in clip.live for oid in prompted)
        # SAM 3 decodes clicks on a tracked object with its tracked mask here as the decoder's mask input.
        refined = (
            [oid for oid in clip.live if oid in prompted and prompted[oid].mask is None]
            if self.config.correction_reads_tracked_mask
            else []
        )
        for oid in sorted(prompted, key=lambda o: plan.order[o]):
            if oid not in clip.live:
                clip.live.append(oid)
                if self._keeps_cohorts(planner):  # SAM 3's video loop: a visually prompted object's own state
                    clip.bank.new_cohort([oid])
        tracked = [oid for oid in clip.live if oid not in prompted]
        parts = self._predict_tracked(clip, frame_index, feat, tracked + refined)
        previous: dict[int, torch.Tensor] = {}
        if refined:
            rows = Rows.cat(parts)
            previous = {
                oid: rows.low_res[i].clamp(-TRACKED_MASK_INPUT_LIMIT, TRACKED_MASK_INPUT_LIMIT)
                for i, oid in enumerate(rows.object_ids)
                if oid in refined
            }
            parts = [rows.reorder(tracked)] if tracked else []
        video_loop = planner is not None and planner.wants(frame_index)
        if video_loop and self.config.video_fill_hole_area > 0:
            # SAM 3's video loop cleans the propagated masks before its rules, outputs and memory read them.
            area = self.config.video_fill_hole_area
            parts = [replace(p, low_res=fill_holes_and_remove_specks(p.low_res, area)) for p in parts]
        parts = self._predict_prompted(feat, list(prompted.values()), previous) + parts
        reconditioned: set[int] = set()
        outputs: dict[int, torch.Tensor] = {}
        if planner is not None and video_loop:
            parts, reconditioned, outputs = self._apply_planner(clip, frame_index, feat, parts, planner)
        if not parts:
            return _empty_result(frame_index, clip.height, clip.width, self.config.d_model)
        rows = Rows.cat(parts).reorder(clip.live)
        if corrected and self.config.correction_conditions_all_objects:
            rows = replace(rows, prompted=torch.ones_like(rows.prompted))
        # Rows whose memory mask is a prompt's; a re-conditioned row is a conditioning frame memorised as tracked.
        from_prompt = rows.prompted & torch.tensor(
            [o not in reconditioned for o in rows.object_ids], dtype=torch.bool, device=rows.prompted.device
        )

        fill = self.config.fill_hole_area
        filled = fill_small_holes(rows.low_res, fill) if fill > 0 else rows.low_res
        # SAM 2 encodes prompted frames from the stored (hole-filled) prediction, tracked frames from the raw one.
        mem_source = torch.where(from_prompt[:, None, None, None], filled, rows.low_res)
        loop_memory = None
        if video_loop and self.config.video_loop_memory:
            loop_memory = ~from_prompt & ~torch.tensor(
                [o in outputs for o in rows.object_ids], dtype=torch.bool, device=from_prompt.device
            )
        self.memorise(clip, frame_index, feat, rows, mem_source, from_prompt, loop_memory)
        clip.bystanders = None
        if outputs:
            index = torch.tensor([i for i, o in enumerate(rows.object_ids) if o in outputs], device=filled.device)
            shown = torch.stack([outputs[o] for o in rows.object_ids if o in outputs]).to(filled.dtype)
            filled = filled.index_copy(0, index, shown)
        return self._result(clip, frame_index, rows, filled)

    def _apply_planner(
        self, clip: ClipState, frame_index: int, feat: FrameFeatures, parts: list[Rows], planner: FramePlanner
    ) -> tuple[list[Rows], set[int], dict[int, torch.Tensor]]:
        """Let the planner add mask prompts, re-condition, suppress and remove objects on this frame; returns the
        new rows, the re-conditioned objects and the output low-res logits (1, 4h, 4w) of objects born from
        detections (their frame's output is not their memory's mask)."""
        rows = Rows.cat(parts).reorder(clip.live) if parts else None
        n_pix = 4 * self.config.feature_size
        view = KeyframeView(
            frame_index=frame_index,
            height=clip.height,
            width=clip.width,
            vision=feat.vision,
            high_res=feat.high_res,
            object_ids=list(clip.live),
            low_res_logits=rows.low_res[:, 0] if rows is not None else feat.vision.new_zeros(0, n_pix, n_pix),
            object_score_logits=rows.scores[:, 0] if rows is not None else feat.vision.new_zeros(0),
            pointers=rows.pointers if rows is not None else feat.vision.new_zeros(0, self.config.d_model),
        )
        update = planner.plan(view)
        for n, p in enumerate([*update.prompts, *update.recondition]):
            validate_prompt(p, n)
            if p.mask is None or p.frame_index != frame_index:
                raise PromptError(f"planner prompt #{n} must be a mask on frame {frame_index}")
        recondition = {int(p.object_id) for p in update.recondition}
        recondition |= {int(d.object_id) for d in update.recondition_detections}
        kept_live = set(clip.live) - set(update.remove) - {int(p.object_id) for p in update.prompts}
        if not recondition <= kept_live:
            bad = sorted(recondition - kept_live)
            raise PromptError(f"frame {frame_index}: re-conditioned objects {bad} are not live, or removed or prompted")
        if rows is not None and update.suppress:
            hit = torch.tensor([o in update.suppress for o in rows.object_ids], device=rows.low_res.device)
            clamped = rows.low_res.clamp(max=SUPPRESSED_LOGIT)
            rows = replace(rows, low_res=torch.where(hit[:, None, None, None], clamped, rows.low_res))
        if update.remove:
            gone = set(update.remove)
            clip.live = [o for o in clip.live if o not in gone]
            for oid in gone:
                clip.bank.forget(oid)
            kept_ids = [o for o in (rows.object_ids if rows is not None else []) if o not in gone]
            gone_ids = [o for o in (rows.object_ids if rows is not None else []) if o in gone]
            if rows is not None and gone_ids:
                # SAM 3 removes objects after re-encoding the frame's memory: their masks still shape the others'.
                clip.bystanders = rows.reorder(gone_ids).low_res
            rows = rows.reorder(kept_ids) if rows is not None and kept_ids else None
        if rows is not None and recondition:
            sources = [self._merge_prompts([p], clip) for p in update.recondition]
            sources += [self._detection_prompt(d, clip) for d in update.recondition_detections]
            rows = self._recondition(feat, rows, sources)
            if self._keeps_cohorts(planner):
                mates = {m for o in recondition for m in clip.bank.cohort_mates(o)} & set(rows.object_ids)
                rows = _as_conditioning(rows, mates - recondition)
                recondition |= mates
        born = [d for d in update.detections if int(d.object_id) not in clip.live]
        if len(born) != len(update.detections) or len({int(d.object_id) for d in born}) != len(born):
            raise PromptError(f"frame {frame_index}: detections must start new objects, each once")
        if not update.prompts and not born:
            return ([rows] if rows is not None else []), recondition, {}
        replaced = {int(p.object_id) for p in update.prompts}
        for oid in [*(int(p.object_id) for p in update.prompts), *(int(d.object_id) for d in born)]:
            if oid not in clip.live:
                clip.live.append(oid)
        if self._keeps_cohorts(planner):  # SAM 3 adds a frame's new objects to one new tracker state
            clip.bank.new_cohort([o for o in clip.live if o not in clip.bank.cohorts])
        kept = [o for o in (rows.object_ids if rows is not None else []) if o not in replaced]
        new_prompts = [self._merge_prompts([p], clip) for p in update.prompts]
        new_prompts += [self._detection_prompt(d, clip) for d in born]
        new_parts = self._predict_prompted(feat, new_prompts)
        area = self.config.video_fill_hole_area
        outputs = {
            int(d.object_id): fill_holes_and_remove_specks(d.mask_logits.float().to(self.device)[None, None], area)[0]
            for d in born
        }
        return ([rows.reorder(kept)] if rows is not None and kept else []) + new_parts, recondition, outputs

    def _detection_prompt(self, detection: DetectionPrompt, clip: ClipState) -> ObjectPrompt:
        """A detection as SAM 3's `_tracker_add_new_objects` hands it to `add_new_mask` (see DetectionPrompt)."""
        side = 16 * self.config.feature_size
        logits = detection.mask_logits.float().to(self.device)[None, None]  # (1, 1, h, w)
        binary = (F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=False) > 0).float()
        size = (clip.height, clip.width)
        video = F.interpolate(binary, size=size, mode="bilinear", align_corners=False, antialias=True)  # (1, 1, H, W)
        mask = (video[0, 0] > 0.5).cpu().numpy()
        return ObjectPrompt(int(detection.object_id), mask=mask, input_mask=binary[0])

    def _recondition(self, feat: FrameFeatures, rows: Rows, prompts: list[ObjectPrompt]) -> Rows:
        """`rows` with the prompted objects turned conditioning, their pointers from the masks (SAM 3's add_new_mask);
        masks, scores and IoUs stay the propagated ones."""
        masked = self.mask_as_output(feat, prompts)
        index = {o: i for i, o in enumerate(rows.object_ids)}
        idx = torch.tensor([index[o] for o in masked.object_ids], dtype=torch.long, device=rows.pointers.device)
        pointers = rows.pointers.index_copy(0, idx, masked.pointers.to(rows.pointers.dtype))
        prompted = rows.prompted.index_fill(0, idx, True)
        return replace(rows, pointers=pointers, prompted=prompted)

    def _predict_prompted(
        self, feat: FrameFeatures, prompts: list[ObjectPrompt], previous: dict[int, torch.Tensor] | None = None
    ) -> list[Rows]:
        """Conditioning outputs: points/boxes through the decoder without memory, masks used as output.

        previous: object id -> (1, 4h, 4w) low-res logits given to the decoder as mask input with its points."""
        previous = previous or {}
        parts = []
        masks = [p for p in prompts if p.mask is not None]
        if masks:
            parts.append(self.mask_as_output(feat, masks))
        groups: dict[tuple[int, bool], list[ObjectPrompt]] = {}
        for p in prompts:
            if p.mask is None:
                groups.setdefault((p.num_points, p.object_id in previous), []).append(p)
        # Objects with different point counts cannot share a batch: padding would change the tokens; nor can
        # objects with and without a mask input (the dense prompt is the mask's embedding or no_mask_embed).
        for (count, with_mask), group in groups.items():
            n = len(group)
            image = (feat.vision + self.no_mem_embed.view(1, -1, 1, 1)).expand(n, -1, -1, -1)  # (N, C, h, w)
            coords = torch.stack([g.coords for g in group if g.coords is not None])  # (N, P, 2)
            labels = torch.stack([g.labels for g in group if g.labels is not None])  # (N, P)
            mask_input = torch.stack([previous[g.object_id] for g in group]) if with_mask else None  # (N, 1, 4h, 4w)
            chosen = self.decode(image, feat, coords, labels, mask_input, multimask=self.uses_multimask(count)).chosen
            parts.append(self.rows_from_decoder([g.object_id for g in group], chosen, prompted=True))
        return parts

    def _predict_tracked(
        self, clip: ClipState, frame_index: int, feat: FrameFeatures, object_ids: list[int]
    ) -> list[Rows]:
        """Tracking outputs: memory attention over each object's bank selection, then the decoder."""
        groups: dict[MemorySelection, list[int]] = {}
        for oid in object_ids:
            groups.setdefault(clip.bank.select(oid, frame_index), []).append(oid)
        parts = []
        for selection, ids in groups.items():
            image = self.attend_memory(clip, feat, ids, selection)
            coords, labels = no_points(len(ids), image.device)
            chosen = self.decode(image, feat, coords, labels, multimask=self.uses_multimask(0)).chosen
            parts.append(self.rows_from_decoder(ids, chosen, prompted=False))
        return parts

    def _video_res_mask_logits(self, prompts: list[ObjectPrompt]) -> torch.Tensor:
        """SAM 3: mask prompts as +-1024 logits at video resolution, (N, 1, H, W); each pixel goes to the last mask
        prompted on it, as the official add_new_mask takes a new mask's pixels from the masks added before it."""
        masks = [torch.from_numpy(np.asarray(p.mask, dtype=bool)) for p in prompts if p.mask is not None]
        video = torch.stack(masks).to(self.device)  # (N, H, W)
        taken_later = torch.zeros_like(video[0])  # (H, W)
        for i in range(video.shape[0] - 1, -1, -1):
            video[i] &= ~taken_later
            taken_later |= video[i]
        return torch.where(video, -NO_OBJECT_LOGIT, NO_OBJECT_LOGIT)[:, None].float()

    def _mask_to_input(self, mask: np.ndarray | None, side: int, binarise: bool) -> torch.Tensor:
        """(H, W) bool → (1, side, side) float, resized (antialiased) like SAM 2's / SAM 3's add_new_mask;
        SAM 2 thresholds the resized mask at 0.5, SAM 3 keeps it soft."""
        assert mask is not None
        m = torch.from_numpy(np.asarray(mask, dtype=bool)).to(self.device).float()[None, None]  # (1, 1, H, W)
        if m.shape[-2:] != (side, side):
            m = F.interpolate(m, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
            if binarise:
                m = (m >= 0.5).float()
        return m[0]

    def _video_loop_memory(
        self, feat: FrameFeatures, low_res: torch.Tensor, bystanders: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 3's `_tracker_update_memories` for (T, 1, 4h, 4w) tracked logits: resized straight to the memory
        encoder's mask size, masks that shrink under pixel-wise non-overlap (with each other and with the
        `bystanders`, objects removed on this frame) suppressed, object scores from area.
        Returns memory features (T, M, h, w) and (T, 1) 1 where the mask is empty."""
        side = self.config.feature_size * MEMORY_MASK_STRIDE
        t = low_res.shape[0]
        everyone = low_res if bystanders is None else torch.cat([low_res, bystanders.to(low_res.dtype)])
        high = F.interpolate(everyone, size=(side, side), mode="bilinear", align_corners=False)  # (A, 1, side, side)
        if high.shape[0] > 1 and self.config.video_loop_shrink_suppression:
            owner = high.argmax(dim=0, keepdim=True)  # (1, 1, side, side)
            own = owner == torch.arange(high.shape[0], device=high.device)[:, None, None, None]  # (A, 1, side, side)
            kept = torch.where(own, high, high.clamp(max=SUPPRESSED_LOGIT))
            before = (high > 0).flatten(1).sum(1).clamp(min=1)  # (T,)
            after = (kept > 0).flatten(1).sum(1)  # (T,)
            shrunk = (after / before) < SHRINK_KEEP_FRACTION  # (T,)
            high = torch.where(shrunk[:, None, None, None], high.clamp(max=SUPPRESSED_LOGIT), high)
        high = high[:t]  # (T, 1, side, side)
        visible = (high > 0).flatten(1).any(1, keepdim=True)  # (T, 1) the sign of the area-based object score
        mask = torch.sigmoid(high) * self.config.sigmoid_scale_for_mem_enc + self.config.sigmoid_bias_for_mem_enc
        memory = self.memory_encoder(feat.vision.expand(t, -1, -1, -1), mask.to(feat.vision.dtype))
        return memory.features, 1 - visible.float()

    def _memory_features(
        self, feat: FrameFeatures, rows: Rows, low_res: torch.Tensor, from_prompt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory features (N, M, h, w) of the rows' own predictions, and (N, 1) 1 where the object is absent."""
        s = self.config.image_size
        n = len(rows.object_ids)
        high = F.interpolate(low_res, size=(s, s), mode="bilinear", align_corners=False)  # (N, 1, S, S)
        if self.config.non_overlap_prompted_memory and n > 1 and bool(from_prompt.any()):
            owner = high.argmax(dim=0, keepdim=True)  # (1, 1, S, S) object with the highest logit per pixel
            own = owner == torch.arange(n, device=high.device)[:, None, None, None]  # (N, 1, S, S)
            high = torch.where(own, high, high.clamp(max=SUPPRESSED_LOGIT))
        binarise = self.config.binarize_mask_from_pts_for_mem_enc
        hard = from_prompt[:, None, None, None] if binarise else torch.zeros_like(from_prompt)[:, None, None, None]
        mask = torch.where(hard, (high > 0).float(), torch.sigmoid(high))
        mask = mask * self.config.sigmoid_scale_for_mem_enc + self.config.sigmoid_bias_for_mem_enc
        memory = self.memory_encoder(feat.vision.expand(n, -1, -1, -1), mask.to(feat.vision.dtype))
        return memory.features, 1 - (rows.scores > 0).float()

    def _store_memory(self, clip: ClipState, frame_index: int, rows: Rows, features: torch.Tensor) -> None:
        if clip.memory_pos is None:
            clip.memory_pos = self.memory_encoder.position_encoding(features[:1]).float()
        selectable = self._memory_verdicts(clip, rows)
        for i, oid in enumerate(rows.object_ids):
            prompted = bool(rows.prompted[i])
            clip.bank.add(oid, frame_index, features[i], rows.pointers[i], cond=prompted, selectable=selectable[i])

    def _memory_verdicts(self, clip: ClipState, rows: Rows) -> list[bool]:
        """Per row, SAM 3's criterion for keeping this frame's tracked memory readable (always True when it is off).

        One verdict per tracker state: per cohort where the bank keeps them, else per frame. Over the objects
        tracked in it together, as the official `cal_mem_score` gives it: its product of (N, 1) scores and (N,)
        IoUs broadcasts to (N, N), so its mean is mean(score) x mean(IoU).
        """
        if not self.config.memory_selection:
            return [True] * len(rows.object_ids)
        states: dict[int | None, list[int]] = {}
        for i, oid in enumerate(rows.object_ids):
            if not bool(rows.prompted[i]):
                states.setdefault(clip.bank.cohorts.get(oid), []).append(i)
        verdicts = [True] * len(rows.object_ids)
        for members in states.values():
            index = torch.tensor(members, device=rows.scores.device)
            logits = rows.scores[index, 0]  # (T,)
            norm = torch.where(logits > 0, torch.sigmoid(logits) * 2 - 1, torch.zeros_like(logits))
            passed = bool(norm.mean() * rows.iou[index].mean() > self.config.memory_selection_threshold)
            for i in members:
                verdicts[i] = passed
        return verdicts

    def _keeps_cohorts(self, planner: FramePlanner | None) -> bool:
        """Whether objects join cohorts (SAM 3's tracker states): in its video loop only, where a planner drives."""
        return planner is not None and self.config.video_loop_cohorts

    def _result(self, clip: ClipState, frame_index: int, rows: Rows, low_res: torch.Tensor) -> FrameResult:
        video = F.interpolate(low_res, size=(clip.height, clip.width), mode="bilinear", align_corners=False)
        return FrameResult(
            frame_index=frame_index,
            object_ids=list(rows.object_ids),
            mask_logits=video[:, 0].float().cpu(),
            object_score_logits=rows.scores[:, 0].float().cpu(),
            iou_predictions=rows.iou.float().cpu(),
            object_pointers=rows.pointers.float().cpu(),
        )

    def _merge_prompts(self, prompts: list[Prompt], clip: ClipState) -> ObjectPrompt:
        """One object's prompts on one frame → model coordinates (box corners first, as SAM 2 trains)."""
        oid = int(prompts[0].object_id)
        where = f"object {oid}, frame {prompts[0].frame_index}"
        masks = [p.mask for p in prompts if p.mask is not None]
        boxes = [p.box for p in prompts if p.box is not None]
        if masks:
            if len(prompts) > 1:
                raise PromptError(f"{where}: a mask prompt cannot be combined with other prompts on the same frame")
            mask = np.asarray(masks[0], dtype=bool)
            if mask.shape != (clip.height, clip.width):
                frame_hw = (clip.height, clip.width)
                raise PromptError(f"{where}: mask shape {mask.shape} differs from the frame size {frame_hw}")
            return ObjectPrompt(oid, mask=mask)
        if len(boxes) > 1:
            raise PromptError(f"{where}: at most one box per object and frame, got {len(boxes)}")
        coords: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        if boxes:
            coords.append(np.asarray(boxes[0], dtype=np.float32).reshape(2, 2))
            labels.append(np.asarray(BOX_LABELS, dtype=np.int32))
        for p in prompts:
            if p.points is not None and p.point_labels is not None:
                coords.append(np.asarray(p.points, dtype=np.float32).reshape(-1, 2))
                labels.append(np.asarray(p.point_labels, dtype=np.int32).reshape(-1))
        xy = torch.from_numpy(np.concatenate(coords)).to(self.device)  # (P, 2)
        scale = torch.tensor([clip.width, clip.height], dtype=torch.float32, device=self.device)
        xy = xy / scale * self.config.image_size
        return ObjectPrompt(oid, coords=xy, labels=torch.from_numpy(np.concatenate(labels)).to(self.device))

    def _autocast(self) -> AbstractContextManager[object]:
        if self.device.type == "cuda" and self.config.cuda_dtype == "bfloat16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()


def _hiera_image_encoder(config: TrackerConfig) -> ImageEncoder:
    if isinstance(config.image_encoder, PEViTConfig):
        # The PE ViT encoder lives with SAM 3 (model/sam3/), above the tracker: only the builder knows both.
        raise ConfigError(
            f"model {config.name!r} has a PE ViT (SAM 3) image encoder: build it with batchtrack.build_tracker, "
            "or pass image_encoder= to Tracker"
        )
    return ImageEncoder(config.image_encoder)


def _check_frame(frame: np.ndarray, size: tuple[int, int] | None) -> tuple[int, int]:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        shape = getattr(frame, "shape", None)
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB arrays, got {type(frame).__name__} {shape}")
    hw = (int(frame.shape[0]), int(frame.shape[1]))
    if size is not None and hw != size:
        raise ValueError(f"frame size changed within a clip: {hw} after {size}")
    return hw


def _as_conditioning(rows: Rows, object_ids: set[int]) -> Rows:
    """`rows` with these objects' frames made conditioning frames, their outputs and pointers unchanged (a
    re-conditioned object's cohort mates: SAM 3's preflight consolidates the whole tracker state's frame)."""
    if not object_ids:
        return rows
    hit = torch.tensor([o in object_ids for o in rows.object_ids], dtype=torch.bool, device=rows.prompted.device)
    return replace(rows, prompted=rows.prompted | hit)


def _empty_result(frame_index: int, height: int, width: int, dim: int) -> FrameResult:
    return FrameResult(
        frame_index=frame_index,
        object_ids=[],
        mask_logits=torch.zeros(0, height, width),
        object_score_logits=torch.zeros(0),
        iou_predictions=torch.zeros(0),
        object_pointers=torch.zeros(0, dim),
    )


__all__ = ["NO_OBJECT_LOGIT", "Tracker"]
