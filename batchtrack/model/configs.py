"""Model sizes: one frozen config object per tracker size, looked up by name in `TRACKER_CONFIGS`.

The four `sam2.1_hiera_*` entries carry the hyperparameters of Meta's SAM 2.1 yaml files
(sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml) plus the predictor-time overrides that
`build_sam2_video_predictor` applies; only the Hiera trunk differs between them. `tiny-synthetic`
is the shipped default (same classes, a much smaller trunk and input); `test-tiny` is the smallest
model the code accepts, for unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

from batchtrack.errors import ConfigError

# The trunk halves the resolution at each of its 3 stage transitions after the stride-4 patch embedding.
PATCH_STRIDE = 4
NUM_STAGES = 4
TRUNK_STRIDE = PATCH_STRIDE * 2 ** (NUM_STAGES - 1)


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Hiera trunk + FPN neck. Field names follow the official yaml keys."""

    embed_dim: int  # channels of stage 1; doubled at every stage transition
    num_heads: int  # attention heads of stage 1; doubled at every stage transition
    stages: tuple[int, ...]  # blocks per stage (4 stages)
    global_att_blocks: tuple[int, ...]  # block indices that use global instead of windowed attention
    window_spec: tuple[int, ...] = (8, 4, 14, 7)  # attention window side per stage
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)  # side of the interpolated background pos_embed
    d_model: int = 256  # FPN output channels
    scalp: int = 1  # number of lowest-resolution FPN levels dropped from the output
    fpn_top_down_levels: tuple[int, ...] = (2, 3)  # levels that receive the upsampled coarser level
    drop_path_rate: float = 0.0  # stochastic depth (training only)
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if len(self.stages) != NUM_STAGES or any(n < 1 for n in self.stages):
            raise ConfigError(f"image_encoder.stages must be {NUM_STAGES} positive block counts, got {self.stages}")
        if len(self.window_spec) != NUM_STAGES or any(w < 0 for w in self.window_spec) or self.window_spec[0] < 1:
            raise ConfigError(f"image_encoder.window_spec must be {NUM_STAGES} window sides, got {self.window_spec}")
        depth = sum(self.stages)
        bad = [b for b in self.global_att_blocks if not 0 <= b < depth]
        if bad:
            raise ConfigError(f"image_encoder.global_att_blocks {bad} are outside 0..{depth - 1}")
        if self.embed_dim % self.num_heads != 0:
            raise ConfigError(
                f"image_encoder.embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if not 0 <= self.scalp < NUM_STAGES:
            raise ConfigError(f"image_encoder.scalp must be in 0..{NUM_STAGES - 1}, got {self.scalp}")

    @property
    def depth(self) -> int:
        return sum(self.stages)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channels per stage, highest resolution first."""
        return tuple(self.embed_dim * 2**i for i in range(NUM_STAGES))

    @property
    def backbone_channel_list(self) -> tuple[int, ...]:
        """Trunk output channels, lowest resolution first (the neck's `convs[0]` takes the coarsest map)."""
        return self.stage_dims[::-1]


@dataclass(frozen=True)
class PEViTConfig:
    """SAM 3's image side: Perception Encoder ViT trunk + dual ViTDet neck. Names follow the official builder.

    The trunk is a plain ViT at one resolution (patch 14): windowed blocks of `window_size` tokens with a
    few global blocks, 2-D axial RoPE per block (a window-sized table in windowed blocks, the whole grid
    scaled to the window's range in global blocks), an absolute position embedding learned at
    `pretrain_img_size` and tiled over the grid, `ln_pre`, no patch-embed bias. Its output is the last
    global block's. The neck turns it into maps at `scale_factors` twice: `convs` (detector) and
    `sam2_convs` (tracker); `scalp` drops the coarsest ones.
    """

    embed_dim: int = 1024
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: float = 4.625
    patch_size: int = 14
    window_size: int = 24  # side of a windowed block's attention window, in tokens
    global_att_blocks: tuple[int, ...] = (7, 15, 23, 31)  # the last one is the trunk's output
    pretrain_img_size: int = 336  # pos_embed holds (pretrain_img_size / patch_size)^2 + 1 (cls) rows
    rope_theta: float = 10000.0
    d_model: int = 256  # neck output channels
    scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    scalp: int = 1  # coarsest neck levels dropped from the output

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads != 0 or (self.embed_dim // self.num_heads) % 4 != 0:
            raise ConfigError(
                f"image_encoder.embed_dim {self.embed_dim} / num_heads {self.num_heads} must be a multiple of 4 "
                "(2-D RoPE rotates channel pairs, half per axis)"
            )
        if self.embed_dim % 4 != 0:
            raise ConfigError(
                f"image_encoder.embed_dim must be a multiple of 4 (the x4 neck level), got {self.embed_dim}"
            )
        if not self.global_att_blocks or any(not 0 <= b < self.depth for b in self.global_att_blocks):
            raise ConfigError(
                f"image_encoder.global_att_blocks {self.global_att_blocks} must be non-empty "
                f"and inside 0..{self.depth - 1}"
            )
        if self.window_size < 1 or self.pretrain_img_size % self.patch_size != 0:
            raise ConfigError(
                f"image_encoder.window_size {self.window_size} must be >= 1 and pretrain_img_size "
                f"{self.pretrain_img_size} a multiple of patch_size {self.patch_size}"
            )
        bad = [f for f in self.scale_factors if f not in (4.0, 2.0, 1.0, 0.5)]
        if bad or not 0 <= self.scalp < len(self.scale_factors):
            raise ConfigError(
                f"image_encoder.scale_factors {self.scale_factors} must be from 4, 2, 1, 0.5 and scalp "
                f"{self.scalp} below their count"
            )


@dataclass(frozen=True)
class DetectorConfig:
    """SAM 3's concept detector beside the tracker: text encoder sizes and the detector head (`build_sam3_video_model`).

    The head reads the neck's detector branch (`convs`): a fusion encoder (image tokens attend to the prompt),
    a DETR decoder (`num_queries` queries, box refinement, log-scaled box relative position bias, a presence
    token), dot-product scoring against the pooled prompt, a segmentation head (pixel decoder over the neck's
    levels) and a geometry encoder for exemplar boxes and points. Its width is the neck's `d_model`.
    The text encoder's sizes are here (not a TextEncoderConfig) so that this module does not import torch.
    """

    num_heads: int = 8  # attention heads of every detector attention
    dim_feedforward: int = 2048  # MLP width of fusion encoder, decoder and geometry encoder layers
    encoder_layers: int = 6  # fusion encoder
    decoder_layers: int = 6  # DETR decoder
    num_queries: int = 200  # object queries (one detection candidate each)
    geometry_layers: int = 3  # geometry encoder layers over exemplar tokens
    roi_size: int = 7  # exemplar boxes are pooled to roi_size x roi_size cells
    scoring_mlp_dim: int = 2048  # hidden width of the dot-product scorer's prompt MLP
    pixel_decoder_convs: int = 3  # conv + GroupNorm stages of the pixel decoder (the state dict has them all)
    text_width: int = 1024  # text transformer channels
    text_heads: int = 16
    text_layers: int = 24

    def __post_init__(self) -> None:
        sizes = {
            f: getattr(self, f)
            for f in ("num_heads", "dim_feedforward", "decoder_layers", "num_queries", "roi_size", "scoring_mlp_dim")
        }
        bad = {f: v for f, v in sizes.items() if v < 1}
        if bad or self.encoder_layers < 0 or self.geometry_layers < 0 or self.pixel_decoder_convs < 1:
            raise ConfigError(f"detector sizes must be positive, got {bad or self}")
        if self.text_width % self.text_heads != 0:
            raise ConfigError(f"detector.text_width {self.text_width} is not divisible by text_heads {self.text_heads}")


@dataclass(frozen=True)
class TrackerConfig:
    """Everything that shapes a tracker at inference. Defaults are SAM 2.1's values for every size."""

    name: str
    image_encoder: ImageEncoderConfig | PEViTConfig  # Hiera + FPN (SAM 2.1) or PE ViT + dual neck (SAM 3)
    image_size: int = 1024  # frames are resized to image_size x image_size
    backbone_stride: int = 16  # stride of the feature map the memory attention and decoder work on
    d_model: int = 256  # width of memory attention, mask decoder, prompt encoder and object pointers
    mem_dim: int = 64  # channels of the memory features (memory encoder output)
    num_maskmem: int = 7  # 1 current + 6 past frames; rows of maskmem_tpos_enc
    max_obj_ptrs_in_encoder: int = 16
    # Conditioning frames memory attention reads per object: the closest to the current frame (SAM 3's
    # rule and value); the others are dropped from the bank once no frame can read them, so automatic
    # mode, which re-conditions on every keyframe, stays bounded. -1 reads (and keeps) all of them, as
    # SAM 2.1's yaml does; with at most 4 prompted frames per object the two are identical.
    max_cond_frames_in_attn: int = 4
    memory_temporal_stride_for_eval: int = 1
    memory_attention_layers: int = 4
    memory_attention_dim_feedforward: int = 2048
    memory_attention_num_heads: int = 1
    rope_theta: float = 10000.0
    memory_fuser_layers: int = 2
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True  # as set by build_sam2_video_predictor
    # SAM heads
    prompt_mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    dynamic_multimask_via_stability: bool = True  # as set by build_sam2_video_predictor
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    # Post-processing of predicted masks: fill background holes up to this many pixels (0 = off).
    fill_hole_area: int = 8
    # Frame normalisation after scaling to [0, 1]: ImageNet statistics for SAM 2.1, 0.5 / 0.5 for SAM 3.
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # SAM 3: masks entering the memory encoder are resized (bilinear, antialiased) to feature grid x 16 first,
    # because its 16x mask downsampler must land on the 14-stride grid (1008 px -> 1152). None: no resize.
    memory_mask_resize: bool = False
    # SAM 3: on a frame where objects are prompted, memory is encoded from masks made non-overlapping across
    # objects first (each pixel kept by the highest logit, the others clamped to <= -10), as its predictor's
    # consolidation does unconditionally. SAM 2.1 encodes each object's own mask.
    non_overlap_prompted_memory: bool = False
    # SAM 3's mask prompt (its add_new_mask): the frame's output and memory come from the mask at video resolution
    # as +-1024 logits (a later mask prompt on the frame takes its pixels from earlier ones), downsampled with
    # antialiasing to the low-res grid; the decoder pass that gives the pointer reads the mask resized, unthresholded,
    # to 16 x feature grid (its input_mask_size). SAM 2.1: the mask thresholded at image_size, as +-10 logits.
    mask_prompt_at_video_res: bool = False
    # SAM 3's add_all_frames_to_correct_as_cond with its predictor's consolidation: a frame where an object that is
    # already tracked gets a prompt again (a correction) becomes a conditioning frame of every live object, each
    # encoded into memory from its binarised mask. SAM 2.1: only the prompted object is conditioned there.
    correction_conditions_all_objects: bool = False
    # SAM 3's add_new_points on a frame already tracked (is_init_cond_frame False): the clicks (or box) are decoded
    # without memory (its use_prev_mem_frame=False), but with the object's tracked low-res logits on that frame,
    # clamped to +-32, as the decoder's mask input (iter_use_prev_mask_pred). SAM 2.1 here: the prompt alone.
    correction_reads_tracked_mask: bool = False
    # SAM 3's memory selection: a non-conditioning frame is read later (as memory and pointer) only when its
    # criterion passes: mean over the frame's tracked objects of the normalised object score (2 sigmoid - 1
    # where positive, else 0) times mean of their predicted IoU, > memory_selection_threshold. Frames are then
    # read by rank among the passing ones (see memory_bank.py). Off: SAM 2.1's fixed windows.
    memory_selection: bool = False
    memory_selection_threshold: float = 0.01
    # SAM 3's video loop (concept mode: a planner drives the tracker), sam3_video_base.py. Hole filling and speck
    # removal (fill_holes_in_mask_scores, this many pixels; 0 = off) of the propagated masks before the planner,
    # the outputs and memory read them, and of a new detection's mask for its first frame's output.
    video_fill_hole_area: int = 0
    # Its `_tracker_update_memories`: tracked objects' memory re-encoded from their (filled, suppressed) low-res
    # masks resized straight to the memory encoder's mask size, with object scores +-10 from mask area.
    video_loop_memory: bool = False
    # ... and, before that, a mask that keeps under 30% of its area under pixel-wise non-overlap with the other
    # tracked objects is suppressed (clamped to <= -10) for memory (`_suppress_object_pw_area_shrinkage`).
    video_loop_shrink_suppression: bool = False
    # ... which keeps the objects born on one frame in one tracker state (a cohort; each visually prompted object
    # in one of its own): re-conditioning an object makes the frame a conditioning frame of its cohort mates too
    # (with their own propagated outputs and pointers), and memory selection gives one verdict per cohort
    # (`cal_mem_score` over the state's objects). Off: one verdict per frame, a re-conditioning touches its object.
    video_loop_cohorts: bool = False
    # --- memory tracker runtime (owned by the tracker engineer; see model/tracker.py) ---
    # Frames encoded together by the image encoder, read ahead from the frame iterator; this bounds
    # the look-ahead (and the raw frames held) to this many frames.
    encoder_batch_size: int = 4
    # Arithmetic on CUDA: bfloat16 autocast (SAM 2's inference setting) or plain float32 (bench/gpu.py
    # measures both and the mask IoU between them). CPU always runs float32.
    cuda_dtype: Literal["bfloat16", "float32"] = "bfloat16"
    # SAM 3's concept detector (text encoder + detector head) sharing the image encoder; None: not built.
    detector: DetectorConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.image_encoder, PEViTConfig):
            self._check_pe_vit(self.image_encoder)
        else:
            self._check_hiera(self.image_encoder)
        if self.detector is not None:
            self._check_detector(self.detector)
        if self.encoder_batch_size < 1:
            raise ConfigError(f"{self.name}: encoder_batch_size must be >= 1, got {self.encoder_batch_size}")
        if self.num_maskmem < 1:
            raise ConfigError(f"{self.name}: num_maskmem must be >= 1, got {self.num_maskmem}")
        if self.memory_selection and self.memory_temporal_stride_for_eval != 1:
            raise ConfigError(
                f"{self.name}: memory_selection needs memory_temporal_stride_for_eval 1, "
                f"got {self.memory_temporal_stride_for_eval}"
            )
        if self.max_cond_frames_in_attn != -1 and self.max_cond_frames_in_attn < 2:
            raise ConfigError(
                f"{self.name}: max_cond_frames_in_attn must be -1 (all) or >= 2, got {self.max_cond_frames_in_attn}"
            )

    def _check_hiera(self, enc: ImageEncoderConfig) -> None:
        # Windows tile the stride-4 map exactly (pos_embed_window is tiled over it) and the
        # trunk halves it three times without remainders.
        multiple = max(TRUNK_STRIDE, PATCH_STRIDE * enc.window_spec[0])
        if self.image_size <= 0 or self.image_size % multiple != 0:
            raise ConfigError(
                f"{self.name}: image_size must be a positive multiple of {multiple} "
                f"(trunk stride and stage-1 window), got {self.image_size}"
            )
        level_strides = [PATCH_STRIDE * 2**i for i in range(NUM_STAGES - enc.scalp)]
        if self.backbone_stride not in level_strides:
            raise ConfigError(
                f"{self.name}: backbone_stride {self.backbone_stride} is not one of the FPN strides {level_strides}"
            )

    def _check_detector(self, det: DetectorConfig) -> None:
        if not isinstance(self.image_encoder, PEViTConfig):
            raise ConfigError(f"{self.name}: a detector needs SAM 3's image encoder (PEViTConfig)")
        d = self.image_encoder.d_model
        # Sine encodings split d_model into 2 or 4 coordinate blocks of sin/cos pairs; GroupNorm uses 8 groups.
        if d % det.num_heads != 0 or d % 8 != 0:
            raise ConfigError(
                f"{self.name}: detector width d_model {d} must be divisible by num_heads {det.num_heads} and by 8"
            )

    def _check_pe_vit(self, enc: PEViTConfig) -> None:
        # The grid must hold whole windows: the official trunk would pad partial ones with zero tokens that
        # join the attention, a regime no checkpoint was trained in.
        multiple = enc.patch_size * enc.window_size
        if self.image_size <= 0 or self.image_size % multiple != 0:
            raise ConfigError(
                f"{self.name}: image_size must be a positive multiple of {multiple} "
                f"(patch_size {enc.patch_size} x window_size {enc.window_size}), got {self.image_size}"
            )
        if self.backbone_stride != enc.patch_size:
            raise ConfigError(
                f"{self.name}: backbone_stride {self.backbone_stride} must equal the PE ViT patch size {enc.patch_size}"
            )
        if 1.0 not in enc.scale_factors[: len(enc.scale_factors) - enc.scalp]:
            raise ConfigError(f"{self.name}: the neck must keep a x1 level (scale_factors {enc.scale_factors})")

    @property
    def feature_size(self) -> int:
        """Side of the feature map the memory attention and mask decoder see (64 for SAM 2.1)."""
        return self.image_size // self.backbone_stride


def _sam21(name: str, image_encoder: ImageEncoderConfig) -> TrackerConfig:
    return TrackerConfig(name=name, image_encoder=image_encoder)


# What SAM 3's tracker changes in SAM 2.1's (reference/sam3.md): stride-14 grids, 0.5 normalisation, the memory
# encoder's mask resize, non-overlapping prompted memory, mask prompts at video resolution, corrections that
# condition every object, no hole filling, memory selection.
_SAM3_TRACKER: dict[str, Any] = {
    "backbone_stride": 14,
    "image_mean": (0.5, 0.5, 0.5),
    "image_std": (0.5, 0.5, 0.5),
    "memory_mask_resize": True,
    "non_overlap_prompted_memory": True,
    "mask_prompt_at_video_res": True,
    "correction_conditions_all_objects": True,
    "correction_reads_tracked_mask": True,
    "fill_hole_area": 0,
    "memory_selection": True,
    "video_fill_hole_area": 16,
    "video_loop_memory": True,
    "video_loop_shrink_suppression": True,
    "video_loop_cohorts": True,
}

_CONFIGS: dict[str, TrackerConfig] = {
    "sam2.1_hiera_tiny": _sam21(
        "sam2.1_hiera_tiny",
        ImageEncoderConfig(
            embed_dim=96,
            num_heads=1,
            stages=(1, 2, 7, 2),
            global_att_blocks=(5, 7, 9),
            window_pos_embed_bkg_spatial_size=(7, 7),
        ),
    ),
    "sam2.1_hiera_small": _sam21(
        "sam2.1_hiera_small",
        ImageEncoderConfig(
            embed_dim=96,
            num_heads=1,
            stages=(1, 2, 11, 2),
            global_att_blocks=(7, 10, 13),
            window_pos_embed_bkg_spatial_size=(7, 7),
        ),
    ),
    "sam2.1_hiera_base_plus": _sam21(
        "sam2.1_hiera_base_plus",
        ImageEncoderConfig(
            embed_dim=112,
            num_heads=2,
            stages=(2, 3, 16, 3),
            global_att_blocks=(12, 16, 20),
            window_pos_embed_bkg_spatial_size=(14, 14),
        ),
    ),
    "sam2.1_hiera_large": _sam21(
        "sam2.1_hiera_large",
        ImageEncoderConfig(
            embed_dim=144,
            num_heads=2,
            stages=(2, 6, 36, 4),
            global_att_blocks=(23, 33, 43),
            window_spec=(8, 4, 16, 8),
            window_pos_embed_bkg_spatial_size=(7, 7),
        ),
    ),
    # Shipped default: a 5-block trunk at 256 px (feature map 16x16), 2 memory-attention layers and
    # 512-wide MLPs in memory attention and decoder, so that jobs/train.py trains it on 2 CPU cores in
    # about half an hour. Widths (256-d features and pointers, 64-d memory) and every code path are
    # SAM 2.1's.
    "tiny-synthetic": TrackerConfig(
        name="tiny-synthetic",
        image_encoder=ImageEncoderConfig(
            embed_dim=24,
            num_heads=1,
            stages=(1, 1, 2, 1),
            global_att_blocks=(3,),
            window_spec=(8, 4, 8, 4),
            window_pos_embed_bkg_spatial_size=(7, 7),
        ),
        image_size=256,
        memory_attention_layers=2,
        memory_attention_dim_feedforward=512,
        decoder_mlp_dim=512,
    ),
    # SAM 3's image side (PE ViT-L+ trunk, dual neck) and tracker (SAM 2.1's modules at stride 14: grids
    # 72 / 144 / 288 at 1008 px), as `build_sam3_video_model` sets them (sam3==0.1.4). The tracker
    # checkpoint keys are renamed by batchtrack.model.loading.checkpoint.SAM3_KEY_TABLE.
    "sam3": TrackerConfig(
        name="sam3",
        image_encoder=PEViTConfig(),
        image_size=1008,
        max_cond_frames_in_attn=4,
        detector=DetectorConfig(),
        **_SAM3_TRACKER,
    ),
    # Tests only: SAM 3's code paths at 112 px (grid 8 = 2 x 2 windows of 4), 3 blocks, 64 wide.
    "sam3-test-tiny": TrackerConfig(
        name="sam3-test-tiny",
        image_encoder=PEViTConfig(
            embed_dim=64, depth=3, num_heads=2, window_size=4, global_att_blocks=(1, 2), pretrain_img_size=56
        ),
        image_size=112,
        **_SAM3_TRACKER,
        memory_attention_layers=2,
        memory_attention_dim_feedforward=256,
        decoder_mlp_dim=256,
        detector=DetectorConfig(
            dim_feedforward=64,
            encoder_layers=2,
            decoder_layers=2,
            num_queries=8,
            geometry_layers=1,
            scoring_mlp_dim=64,
            text_width=32,
            text_heads=2,
            text_layers=2,
        ),
    ),
    # Tests only: SAM 3 at 224 px with a small PE ViT (4 blocks, 128 wide) and detector head, its tracker full
    # size: the model tests/parity checks end to end against the official video loop, and the job runs on.
    "sam3-test-parity": TrackerConfig(
        name="sam3-test-parity",
        image_encoder=PEViTConfig(
            embed_dim=128, depth=4, num_heads=4, window_size=8, global_att_blocks=(1, 3), pretrain_img_size=112
        ),
        image_size=224,
        max_cond_frames_in_attn=4,
        detector=DetectorConfig(
            dim_feedforward=256,
            encoder_layers=2,
            decoder_layers=3,
            geometry_layers=2,
            scoring_mlp_dim=256,
            num_queries=200,
            text_width=64,
            text_heads=4,
            text_layers=2,
        ),
        **_SAM3_TRACKER,
    ),
    # Unit tests only: 64 px input, 5 blocks, feature map 4x4.
    "test-tiny": TrackerConfig(
        name="test-tiny",
        image_encoder=ImageEncoderConfig(
            embed_dim=8,
            num_heads=1,
            stages=(1, 1, 2, 1),
            global_att_blocks=(3,),
            window_spec=(4, 2, 2, 1),
            window_pos_embed_bkg_spatial_size=(4, 4),
        ),
        image_size=64,
    ),
}

TRACKER_CONFIGS: Mapping[str, TrackerConfig] = MappingProxyType(_CONFIGS)

# Models whose weights are random by design (unit tests); every other model needs weights: shipped,
# a checkpoint, or an explicit request for random ones.
RANDOM_BY_DESIGN: tuple[str, ...] = ("test-tiny", "sam3-test-tiny")

# Names a user may pass as `model`; test-tiny exists for tests and is not advertised.
SAM21_NAMES: tuple[str, ...] = (
    "sam2.1_hiera_tiny",
    "sam2.1_hiera_small",
    "sam2.1_hiera_base_plus",
    "sam2.1_hiera_large",
)
SAM3_NAMES: tuple[str, ...] = ("sam3",)


def get_config(name: str) -> TrackerConfig:
    """The registered config called `name`; ConfigError listing the known names otherwise."""
    try:
        return TRACKER_CONFIGS[name]
    except KeyError:
        known = ", ".join(sorted(TRACKER_CONFIGS))
        raise ConfigError(f"unknown model {name!r}; known models: {known}") from None


def tracker_config(
    name: str,
    *,
    image_size: int | None = None,
    encoder_batch_size: int | None = None,
    max_cond_frames: int | None = None,
) -> TrackerConfig:
    """The registered config `name` with the runtime settings a job may change (None keeps the model's value).

    None of them changes a parameter's shape, so any of the model's checkpoints still loads.
    """
    overrides = {
        "image_size": image_size,
        "encoder_batch_size": encoder_batch_size,
        "max_cond_frames_in_attn": max_cond_frames,
    }
    return replace(get_config(name), **{k: v for k, v in overrides.items() if v is not None})
