"""Single-scale test-time inference as in the DAFormer/HRDA evaluation (mmseg 0.16 ``slide`` mode).

Per test image: keep-ratio resize into the dataset's test box ``[long, short]`` times the model's
``test_scale_factor`` (mmcv ``imrescale``: ``s = min(long / max(h, w), short / min(h, w))``, new
side ``int(side * s + 0.5)``, bilinear on the uint8 image), ImageNet normalization, then either
one forward pass on the whole image or a sliding window: windows of ``window`` px placed every
``stride`` px, the last one in each direction moved back to be flush with the image edge (so every
pixel is covered; an image smaller than the window gets one window of the image's size in that
direction), the logits of overlapping windows averaged. The logits are then turned into class
probabilities (softmax), resized bilinearly (``align_corners=False``) to the ground-truth size and
reduced to labels by argmax.

Decisions the references leave open:
- mmseg resizes the *logits* to the ground-truth size and applies the softmax afterwards; here
  the probabilities are resized (softmax first), as the evaluation protocol is written. The two
  differ only where bilinear interpolation of logits and of probabilities disagree on the argmax.
- Windows of one image are batched ``batch_size`` at a time; in ``whole`` mode each image is its
  own batch (images of a split may differ in size, as in Mapillary).
- The model is any object with ``predict(images) -> logits (B, C, H, W)`` at the input size
  (``flexseg.models.Segmentor``; HRDA runs its own multi-resolution inference inside ``predict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
MODES = ("slide", "whole")


class Predictor(Protocol):
    def predict(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class InferenceSettings:
    """How a test image is fed to the model.

    ``scale`` is the keep-ratio test box ``(long, short)`` before ``scale_factor`` is applied.
    """

    mode: str
    window: int
    stride: int
    batch_size: int
    scale: tuple[int, int]
    scale_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"inference mode must be one of {MODES}, got {self.mode!r}")
        for name in ("window", "stride", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"inference {name} must be >= 1, got {getattr(self, name)}")
        if len(self.scale) != 2 or min(self.scale) < 1:
            raise ValueError(
                f"test scale must be two positive sides [long, short], got {self.scale}"
            )
        if not self.scale_factor > 0:
            raise ValueError(f"test scale factor must be > 0, got {self.scale_factor}")


@dataclass(frozen=True)
class Window:
    """A window in pixel coordinates of the resized image: rows y0:y1, columns x0:x1."""

    y0: int
    y1: int
    x0: int
    x1: int


@dataclass
class Prediction:
    """The result for one image."""

    labels: np.ndarray  # (H, W) uint8 train ids at the ground-truth size
    input_size: tuple[int, int]  # (width, height) the model saw after the keep-ratio resize
    num_windows: int  # forward windows used (1 in whole mode)


def keep_ratio_size(
    width: int, height: int, scale: tuple[int, int], factor: float = 1.0
) -> tuple[int, int]:
    """(width, height) after mmcv's keep-ratio rescale into the box ``scale`` x ``factor``."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    box_long = max(scale) * factor
    box_short = min(scale) * factor
    s = min(box_long / max(width, height), box_short / min(width, height))
    return int(width * s + 0.5), int(height * s + 0.5)


def resize_for_test(rgb: np.ndarray, settings: InferenceSettings) -> np.ndarray:
    """The uint8 RGB image resized (bilinear, keep ratio) to the test size."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    new_w, new_h = keep_ratio_size(w, h, settings.scale, settings.scale_factor)
    if (new_w, new_h) == (w, h):
        return rgb
    return cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def normalize(rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 3, H, W) float32 tensor of an RGB uint8 image, ImageNet-normalized."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1).float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return ((x - mean) / std)[None]


def _starts(size: int, window: int, stride: int) -> list[int]:
    # mmseg's grid: enough strides to reach the end, the last window pulled back to the edge.
    steps = max(size - window + stride - 1, 0) // stride + 1
    out = []
    for i in range(steps):
        end = min(i * stride + window, size)
        out.append(max(end - window, 0))
    return out


def window_grid(height: int, width: int, window: int, stride: int) -> list[Window]:
    """The sliding windows over an image of ``height`` x ``width``, row-major."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    wins = []
    for y0 in _starts(height, window, stride):
        for x0 in _starts(width, window, stride):
            wins.append(Window(y0, min(y0 + window, height), x0, min(x0 + window, width)))
    return wins


def _forward(model: Predictor, images: torch.Tensor) -> torch.Tensor:
    logits = model.predict(images)
    if (
        logits.ndim != 4
        or logits.shape[0] != images.shape[0]
        or logits.shape[2:] != images.shape[2:]
    ):
        raise ValueError(
            f"model.predict returned logits of shape {tuple(logits.shape)} for input "
            f"{tuple(images.shape)}; expected (B, C, H, W) at the input size"
        )
    return logits.float()


@torch.inference_mode()
def slide_logits(
    model: Predictor, image: torch.Tensor, window: int, stride: int, batch_size: int
) -> tuple[torch.Tensor, int]:
    """Window-averaged logits (1, C, H, W) of a normalized image (1, 3, H, W); the window count."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (1, 3, H, W), got {tuple(image.shape)}")
    _, _, h, w = image.shape
    wins = window_grid(h, w, window, stride)
    total: torch.Tensor | None = None
    count = torch.zeros((1, 1, h, w), device=image.device)
    for i in range(0, len(wins), batch_size):
        chunk = wins[i : i + batch_size]
        # All windows of one image share a size: the grid clips each to min(window, side).
        crops = torch.cat([image[:, :, c.y0 : c.y1, c.x0 : c.x1] for c in chunk], dim=0)
        logits = _forward(model, crops)
        if total is None:
            total = torch.zeros((1, logits.shape[1], h, w), device=image.device)
        for c, lg in zip(chunk, logits, strict=True):
            total[0, :, c.y0 : c.y1, c.x0 : c.x1] += lg
            count[0, :, c.y0 : c.y1, c.x0 : c.x1] += 1
    assert total is not None
    return total / count, len(wins)


@torch.inference_mode()
def whole_logits(model: Predictor, image: torch.Tensor) -> torch.Tensor:
    """Logits (1, C, H, W) of one forward pass on the whole normalized image."""
    return _forward(model, image)


@torch.inference_mode()
def predict_image(
    model: Predictor,
    rgb: np.ndarray,
    gt_size: tuple[int, int],
    settings: InferenceSettings,
    device: torch.device | str = "cpu",
) -> Prediction:
    """Labels of one RGB uint8 image at ``gt_size`` = (height, width) of its ground truth."""
    resized = resize_for_test(rgb, settings)
    image = normalize(resized, device)
    if settings.mode == "slide":
        logits, n = slide_logits(
            model, image, settings.window, settings.stride, settings.batch_size
        )
    else:
        logits, n = whole_logits(model, image), 1
    probs = torch.softmax(logits, dim=1)
    if tuple(probs.shape[2:]) != tuple(gt_size):
        probs = F.interpolate(probs, size=tuple(gt_size), mode="bilinear", align_corners=False)
    labels = probs.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
    return Prediction(labels=labels, input_size=(resized.shape[1], resized.shape[0]), num_windows=n)
