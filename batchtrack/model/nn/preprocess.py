"""Video frames to model input: SAM 2's resize (PIL's, reproduced) and normalisation, for every image encoder.

Letters: B frames, H x W the frame, S the model input side.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PIL_VERTICAL_FIRST_ASPECT = 1.44


def preprocess_frames(
    frames: np.ndarray | torch.Tensor,
    image_size: int,
    device: torch.device | str | None = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """RGB uint8 frames (B, H, W, 3) -> normalised float32 (B, 3, S, S), as the official video predictor loads them.

    The official predictor resizes each frame with PIL's default filter (antialiased bicubic, a = -0.5)
    to S x S, then divides by 255 and normalises with ImageNet mean/std. PIL resizes in two passes,
    one per axis, rounding and clipping to uint8 after each; bicubic overshoot makes that
    intermediate clipping visible (up to ~20 grey levels on noisy frames), so the same two passes are
    done here with torch's antialiased bicubic, in the order Pillow picks (see below). What remains is
    PIL's fixed-point arithmetic: a few pixels in 10^4 differ by one grey level (1/255/std ~ 0.017
    after normalisation). Portrait frames near the pass-order boundary (H ~ 1.1-1.4 W, shrinking) may
    still differ by more, because the order Pillow picks there is not fully reproduced. The aspect ratio
    is not kept, as in SAM 2.
    The resize runs on `device` (the frames' own device when None), all frames at once.
    `mean` / `std`: ImageNet's for SAM 2.1, 0.5 for SAM 3.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)  # (1, H, W, 3)
    if tensor.ndim != 4 or tensor.shape[-1] != 3 or tensor.dtype != torch.uint8:
        raise ValueError(f"expected uint8 RGB frames shaped (B, H, W, 3), got {tuple(tensor.shape)} {tensor.dtype}")
    if device is not None:
        tensor = tensor.to(device, non_blocking=True)
    x = tensor.permute(0, 3, 1, 2).to(torch.float32)  # (B, 3, H, W)
    height, width = x.shape[-2:]
    # Pillow 13 picks the pass order itself. Measured on 214 random sizes: horizontal first for every
    # frame at least as wide as tall; vertical first when the height shrinks and H > 1.44 W (2 misses).
    vertical_first = height > image_size and height > _PIL_VERTICAL_FIRST_ASPECT * width
    first = (image_size, width) if vertical_first else (height, image_size)
    for size in (first, (image_size, image_size)):
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
            x = x.round_().clamp_(0, 255)  # quantised like PIL's uint8 intermediate and output
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean_t) / std_t
