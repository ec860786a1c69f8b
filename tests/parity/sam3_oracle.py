"""The official SAM 3 (PyPI `sam3==0.1.4`) as a CPU test oracle: import shims and CPU patches, test-only.

Nothing here is used by batchtrack itself. sam3.md lists why each piece is needed:
- torchvision: the only build on the package index is a CUDA one whose `_C` extension does not load with the
  CPU torch. The tracker path never calls torchvision; the detector/image-processor modules import it at module
  level. A stub package satisfies those imports; calling anything in it raises.
- triton: `sam3/model/edt.py` imports it at module level (only training uses the kernel).
- `device="cuda"` allocations and `.cuda()` / `.pin_memory()` calls, and explicit `.to(torch.bfloat16)` casts of
  stored memories (on GPU the official code runs under a persistent bf16 autocast; on CPU it is fp32, so the
  casts are replaced by a bf16 round trip that keeps the rounding but returns fp32).

`oracle_modules()` installs the shims with a MonkeyPatch for the duration of the imports only, so the rest of
the test session (sam2's parity tests included) sees no fake torchvision.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import math
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from batchtrack.model.configs import PEViTConfig


class _UnavailableMeta(type):
    """Any attribute of a stub class is another stub class (enum members, nested helpers)."""

    def __getattr__(cls, item: str) -> type:
        if item.startswith("__"):
            raise AttributeError(item)
        return _unavailable(f"{cls.__qualname__}.{item}")

    def __getitem__(cls, item: object) -> type:
        return cls


def _unavailable(name: str) -> type:
    """A stand-in class for any torchvision/triton object: importable, subclassable, annotatable, never usable."""

    def __init__(self: object, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{name} is a test-only stub (no CPU torchvision/triton in this venv)")

    return _UnavailableMeta(name.rsplit(".", 1)[-1], (), {"__init__": __init__, "__qualname__": name})


def _stub_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so `import name.sub` resolves through sys.modules

    def __getattr__(item: str) -> object:
        if item.startswith("__"):
            raise AttributeError(item)
        return _unavailable(f"{name}.{item}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


_STUBBED = ("torchvision", "triton")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `torchvision` / `triton` and every submodule of them to a stub module."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] in _STUBBED:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _stub_module(spec.name)
        if spec.name == "triton":
            module.jit = _identity_decorator  # type: ignore[attr-defined]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def _identity_decorator(*args: Any, **kwargs: Any) -> Any:
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda fn: fn


@contextmanager
def _shimmed_imports() -> Iterator[None]:
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "meta_path", [_StubFinder(), *sys.meta_path])
        try:
            yield
        finally:
            for name in set(sys.modules) - before:
                if name.split(".")[0] in _STUBBED:
                    del sys.modules[name]


def oracle_modules() -> types.SimpleNamespace:
    """The oracle's modules the parity tests use, imported under the shims."""
    with _shimmed_imports():
        ns = types.SimpleNamespace(
            builder=importlib.import_module("sam3.model_builder"),
            vitdet=importlib.import_module("sam3.model.vitdet"),
            necks=importlib.import_module("sam3.model.necks"),
            vl=importlib.import_module("sam3.model.vl_combiner"),
            pos=importlib.import_module("sam3.model.position_encoding"),
            memory=importlib.import_module("sam3.model.memory"),
            predictor=importlib.import_module("sam3.model.sam3_tracking_predictor"),
            tracker_base=importlib.import_module("sam3.model.sam3_tracker_base"),
            transformer=importlib.import_module("sam3.sam.transformer"),
            video=importlib.import_module("sam3.model.sam3_video_inference"),
            tracker_utils=importlib.import_module("sam3.model.sam3_tracker_utils"),
        )
    return ns


def detector_modules() -> types.SimpleNamespace:
    """The oracle's detector modules (fusion encoder, DETR decoder, heads, geometry encoder), under the shims."""
    names = {
        "builder": "sam3.model_builder",
        "encoder": "sam3.model.encoder",
        "decoder": "sam3.model.decoder",
        "segmentation": "sam3.model.maskformer_segmentation",
        "geometry": "sam3.model.geometry_encoders",
        "image": "sam3.model.sam3_image",
        "misc": "sam3.model.model_misc",
        "pos": "sam3.model.position_encoding",
        "vitdet": "sam3.model.vitdet",
        "necks": "sam3.model.necks",
        "vl": "sam3.model.vl_combiner",
        "text": "sam3.model.text_encoder_ve",
        "tokenizer": "sam3.model.tokenizer_ve",
    }
    with _shimmed_imports():
        return types.SimpleNamespace(**{k: importlib.import_module(v) for k, v in names.items()})


def reference_roi_align(
    features: torch.Tensor, boxes: list[torch.Tensor], output_size: int, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """torchvision.ops.roi_align(features, boxes, output_size) (spatial_scale 1, sampling_ratio -1, aligned False).

    Test-only stand-in for the geometry encoder's call into the torchvision stub, written as the operator is
    documented: per box and output cell, ceil(side / output_size)^2 bilinear samples averaged; a sample more
    than one pixel outside the map is 0, one within a pixel of an edge is clamped to it; boxes >= 1 px.
    Deliberately a plain loop (no vectorisation), so that it is not the model's own implementation.
    """
    if args or kwargs:
        raise NotImplementedError("reference_roi_align covers the geometry encoder's call only")
    _, _, height, width = features.shape

    def sample(image: torch.Tensor, y: float, x: float) -> torch.Tensor:
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return torch.zeros(image.shape[0], dtype=image.dtype)
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        if y0 >= height - 1:
            y0 = y1 = height - 1
            y = float(y0)
        else:
            y1 = y0 + 1
        if x0 >= width - 1:
            x0 = x1 = width - 1
            x = float(x0)
        else:
            x1 = x0 + 1
        ly, lx = y - y0, x - x0
        hy, hx = 1.0 - ly, 1.0 - lx
        return (
            hy * hx * image[:, y0, x0]
            + hy * lx * image[:, y0, x1]
            + ly * hx * image[:, y1, x0]
            + ly * lx * image[:, y1, x1]
        )

    out = []
    for image, image_boxes in zip(features, boxes, strict=True):
        for bx0, by0, bx1, by1 in image_boxes.tolist():
            roi_w, roi_h = max(bx1 - bx0, 1.0), max(by1 - by0, 1.0)
            bin_w, bin_h = roi_w / output_size, roi_h / output_size
            grid_w, grid_h = math.ceil(roi_w / output_size), math.ceil(roi_h / output_size)
            cells = torch.zeros(image.shape[0], output_size, output_size, dtype=image.dtype)
            for ph in range(output_size):
                for pw in range(output_size):
                    acc = torch.zeros(image.shape[0], dtype=image.dtype)
                    for iy in range(grid_h):
                        for ix in range(grid_w):
                            y = by0 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                            x = bx0 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            acc = acc + sample(image, y, x)
                    cells[:, ph, pw] = acc / max(grid_h * grid_w, 1)
            out.append(cells)
    if not out:
        return features.new_zeros(0, features.shape[1], output_size, output_size)
    return torch.stack(out)


def _cpu_device(kwargs: dict[str, Any]) -> None:
    device = kwargs.get("device")
    if device is not None and torch.device(device).type == "cuda":
        kwargs["device"] = "cpu"


@contextmanager
def cpu_patches(mp: pytest.MonkeyPatch) -> Iterator[None]:
    """Map the oracle's CUDA allocations to CPU and its bf16 storage casts to a bf16 round trip (fp32 out)."""
    for fn_name in ("zeros", "ones", "empty", "full", "arange", "tensor", "randn", "zeros_like", "ones_like"):
        original: Callable[..., torch.Tensor] = getattr(torch, fn_name)

        def patched(*args: Any, _orig: Callable[..., torch.Tensor] = original, **kwargs: Any) -> torch.Tensor:
            _cpu_device(kwargs)
            return _orig(*args, **kwargs)

        mp.setattr(torch, fn_name, patched)
    mp.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    mp.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    original_to = torch.Tensor.to

    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        args = tuple("cpu" if (isinstance(a, str) and a.startswith("cuda")) else a for a in args)
        args = tuple(torch.device("cpu") if (isinstance(a, torch.device) and a.type == "cuda") else a for a in args)
        _cpu_device(kwargs)
        if args and args[0] is torch.bfloat16 and self.dtype == torch.float32:
            # Stored memories are bf16 on GPU; keep the rounding, stay in fp32 (no autocast on CPU).
            return original_to(original_to(self, torch.bfloat16), torch.float32)
        return original_to(self, *args, **kwargs)

    mp.setattr(torch.Tensor, "to", to)
    yield


def official_dual_neck(
    ns: types.SimpleNamespace, image_size: int, trunk: PEViTConfig, d_model: int = 256
) -> torch.nn.Module:
    """The official PE ViT `trunk` at `image_size` inside `Sam3DualViTDetNeck` (detector and tracker branches)."""
    vit = ns.vitdet.ViT(
        img_size=image_size,
        pretrain_img_size=trunk.pretrain_img_size,
        patch_size=14,
        embed_dim=trunk.embed_dim,
        depth=trunk.depth,
        num_heads=trunk.num_heads,
        mlp_ratio=trunk.mlp_ratio,
        norm_layer="LayerNorm",
        drop_path_rate=0.0,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=trunk.global_att_blocks,
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        window_size=trunk.window_size,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
    )
    pos = ns.pos.PositionEmbeddingSine(num_pos_feats=d_model, normalize=True, scale=None, temperature=10000)
    return ns.necks.Sam3DualViTDetNeck(
        trunk=vit, position_encoding=pos, d_model=d_model, scale_factors=[4.0, 2.0, 1.0, 0.5], add_sam2_neck=True
    )


def official_tracker(
    ns: types.SimpleNamespace, image_size: int, trunk: PEViTConfig, with_backbone: bool = True
) -> torch.nn.Module:
    """`build_tracker(with_backbone=...)`'s model (sam3==0.1.4) at `image_size` with the PE ViT trunk `trunk`;
    build it under `cpu_patches`. Without a backbone it reads the features the video loop's detector caches."""
    grid = image_size // 14
    backbone = (
        ns.vl.SAM3VLBackbone(scalp=1, visual=official_dual_neck(ns, image_size, trunk), text=None)
        if with_backbone
        else None
    )
    maskmem = ns.memory.SimpleMaskEncoder(
        out_dim=64,
        position_encoding=ns.pos.PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None, temperature=10000),
        mask_downsampler=ns.memory.SimpleMaskDownSampler(
            kernel_size=3, stride=2, padding=1, interpol_size=[grid * 16, grid * 16]
        ),
        fuser=ns.memory.SimpleFuser(
            layer=ns.memory.CXBlock(dim=256, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True),
            num_layers=2,
        ),
    )
    rope = {"rope_theta": 10000.0, "feat_sizes": [grid, grid], "use_fa3": False, "use_rope_real": False}
    layer = ns.builder.TransformerDecoderLayerv2(
        cross_attention_first=False,
        activation="relu",
        dim_feedforward=2048,
        dropout=0.1,
        pos_enc_at_attn=False,
        pre_norm=True,
        self_attention=ns.transformer.RoPEAttention(
            embedding_dim=256, num_heads=1, downsample_rate=1, dropout=0.1, **rope
        ),
        d_model=256,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=ns.transformer.RoPEAttention(
            embedding_dim=256, num_heads=1, downsample_rate=1, dropout=0.1, kv_in_dim=64, rope_k_repeat=True, **rope
        ),
    )
    encoder = ns.builder.TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[],
        batch_first=True,
        d_model=256,
        frozen=False,
        pos_enc_at_input=True,
        layer=layer,
        num_layers=4,
        use_act_checkpoint=False,
    )
    transformer = ns.builder.TransformerWrapper(encoder=encoder, decoder=None, d_model=256)
    return ns.predictor.Sam3TrackerPredictor(
        image_size=image_size,
        num_maskmem=7,
        backbone=backbone,
        backbone_stride=14,
        transformer=transformer,
        maskmem_backbone=maskmem,
        multimask_output_in_sam=True,
        forward_backbone_per_frame_for_eval=True,
        trim_past_non_cond_mem_for_eval=False,
        multimask_output_for_tracking=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        always_start_from_first_ann_frame=False,
        non_overlap_masks_for_mem_enc=False,
        non_overlap_masks_for_output=False,
        max_cond_frames_in_attn=4,
        offload_output_to_cpu_for_eval=False,
        sam_mask_decoder_extra_args={
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
        clear_non_cond_mem_around_input=True,
        fill_hole_area=0,
        use_memory_selection=False,
    )


def meta_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The oracle tracker's weights under the names Meta's sam3.pt uses."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("backbone.vision_backbone."):
            out["detector." + k] = v
        elif not k.startswith("backbone."):
            out["tracker." + k] = v
    return out


def perturb_for_comparison(model: torch.nn.Module, seed: int = 1) -> None:
    """Make a freshly built oracle's random weights fit for comparison, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # Perturb the image side so every path (pos embed, norms, both necks) carries signal.
        for p in model.backbone.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator))
        # Forced presence: random heads give object scores near 0 of either sign; a positive bias keeps every
        # object present, so the compared masks are real predictions, not the -1024 "absent" fill.
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(1.0)
