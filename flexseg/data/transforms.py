"""Training-time image/label transforms: the DAFormer/DGInStyle data pipelines in numpy + OpenCV.

Every random choice comes from a ``numpy.random.Generator`` passed in, so a sample's augmentation
is a pure function of the generator's seed (``flexseg.data.training_set`` derives one per draw).

Source images (GTA5 / its RCS subset), as in DAFormer's GTA pipeline:
keep-ratio resize into ``source_resize`` (mmcv rounding) -> random crop of ``crop_size`` with
``cat_max_ratio`` -> horizontal flip (p = 0.5) -> PhotoMetricDistortion -> ImageNet normalization ->
pad to the crop (image 0 after normalization, label 255).

Generated images (DGInStyle): used as they are, or keep-ratio resized into ``generated_resize``
(HRDA: 512 -> 1024), then flip, PhotoMetricDistortion, normalization; no random crop in the
reference. Decision left open there: a generated image whose size differs from the crop cannot be
batched with the source crops, so a larger one gets the same random crop as the source (with
``cat_max_ratio``) and a smaller one is padded (bottom/right, image 0, label 255). At the intended
sizes (generated side = crop side) both are no-ops.

RCS re-crop (DGInStyle-SegModel's "class-aware recrop" of its offline RCS subset, and DAFormer's
online RCS): for a source sample with an RCS class (a subset row, or an online RCS draw), the
``cat_max_ratio`` crop is drawn again, up to ``rcs_recrop_tries`` crops in all, until one holds
more than ``rcs_recrop_min_pixels`` pixels of that class; the last crop is kept when none does.
The anchors (``get_gta_rcs_crop``, ``get_rare_class_sample``) draw a first crop and then up to 10
more: ``rcs_recrop_tries`` 11 (the demo keeps 10).

PhotoMetricDistortion follows mmseg's defaults on uint8 RGB: each operation with probability 0.5;
brightness + U(-32, 32); contrast x U(0.5, 1.5), applied before or after the HSV operations with
equal odds; saturation x U(0.5, 1.5); hue shifted by an integer in [-18, 18] on OpenCV's 0-180
scale. mmseg draws the hue shift with ``randint(-18, 18)`` (upper bound excluded); the symmetric
range is used here. mmseg works on BGR; the HSV values are the same for RGB with the matching
OpenCV conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from flexseg.labels import IGNORE_INDEX

IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
IMAGENET_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

CAT_MAX_RATIO_REDRAWS = 10
BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18


@dataclass(frozen=True)
class CropBox:
    """A crop window in pixel coordinates: rows ``y0:y1``, columns ``x0:x1``."""

    y0: int
    y1: int
    x0: int
    x1: int


@dataclass(frozen=True)
class PipelineSettings:
    """The transform settings of ``training`` (workflow/schemas/training.schema.yaml)."""

    crop_size: int
    source_resize: tuple[int, int] | None
    generated_resize: tuple[int, int] | None
    cat_max_ratio: float
    rcs_recrop_min_pixels: int
    rcs_recrop_tries: int
    flip: bool
    photometric: bool


@dataclass
class TrainSample:
    """One transformed sample: a normalized float32 (3, S, S) image and an int64 (S, S) label."""

    image: np.ndarray
    label: np.ndarray


def _check_pair(image: np.ndarray, label: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if label.ndim != 2 or label.shape != image.shape[:2]:
        raise ValueError(f"label shape {label.shape} does not match image shape {image.shape[:2]}")


def keep_ratio_size(height: int, width: int, box: Sequence[int]) -> tuple[int, int]:
    """The (height, width) of a keep-ratio resize into ``box`` = (long side, short side) bounds.

    mmcv's ``rescale_size``: scale = min(long_max / long, short_max / short), each side rounded as
    ``int(side * scale + 0.5)``.
    """
    long_max, short_max = max(box), min(box)
    scale = min(long_max / max(height, width), short_max / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_keep_ratio(
    image: np.ndarray, label: np.ndarray, box: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Keep-ratio resize into ``box``: bilinear for the image, nearest for the label."""
    _check_pair(image, label)
    new_h, new_w = keep_ratio_size(image.shape[0], image.shape[1], box)
    if (new_h, new_w) == image.shape[:2]:
        return image, label
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    return image, label


def random_crop_box(height: int, width: int, crop: int, rng: np.random.Generator) -> CropBox:
    """A uniformly placed ``crop`` x ``crop`` window (clipped to the image when it is smaller)."""
    y0 = int(rng.integers(0, max(height - crop, 0) + 1))
    x0 = int(rng.integers(0, max(width - crop, 0) + 1))
    return CropBox(y0, min(y0 + crop, height), x0, min(x0 + crop, width))


def dominant_class_ok(label: np.ndarray, cat_max_ratio: float) -> bool:
    """mmseg's crop test: at least two non-ignore classes and none above ``cat_max_ratio``."""
    ids, counts = np.unique(label, return_counts=True)
    counts = counts[ids != IGNORE_INDEX]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def cat_max_ratio_box(
    label: np.ndarray, crop: int, cat_max_ratio: float, rng: np.random.Generator
) -> CropBox:
    """mmseg's RandomCrop: a first window, re-drawn up to 10 times while one class dominates; the
    last window drawn is kept."""
    h, w = label.shape
    box = random_crop_box(h, w, crop, rng)
    if cat_max_ratio >= 1.0:
        return box
    for _ in range(CAT_MAX_RATIO_REDRAWS):
        if dominant_class_ok(label[box.y0 : box.y1, box.x0 : box.x1], cat_max_ratio):
            break
        box = random_crop_box(h, w, crop, rng)
    return box


def rcs_crop_box(
    label: np.ndarray,
    crop: int,
    cat_max_ratio: float,
    rcs_class: int,
    min_pixels: int,
    tries: int,
    rng: np.random.Generator,
) -> CropBox:
    """The RCS re-crop: ``cat_max_ratio`` crops drawn until one holds more than ``min_pixels``
    pixels of ``rcs_class`` (at most ``tries`` crops; the last is kept)."""
    if tries < 1:
        raise ValueError(f"rcs_recrop_tries must be at least 1, got {tries}")
    for _ in range(tries):
        box = cat_max_ratio_box(label, crop, cat_max_ratio, rng)
        window = label[box.y0 : box.y1, box.x0 : box.x1]
        if int(np.count_nonzero(window == rcs_class)) > min_pixels:
            break
    return box


def apply_box(image: np.ndarray, label: np.ndarray, box: CropBox) -> tuple[np.ndarray, np.ndarray]:
    return image[box.y0 : box.y1, box.x0 : box.x1], label[box.y0 : box.y1, box.x0 : box.x1]


def random_flip(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, prob: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip of image and label together with probability ``prob``."""
    if rng.random() < prob:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def _affine_uint8(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # mmseg's ``convert``: float arithmetic, clip to [0, 255], truncate back to uint8.
    out = values.astype(np.float32) * alpha + beta
    return np.clip(out, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg's PhotoMetricDistortion with its default ranges on an RGB uint8 image."""
    if image.dtype != np.uint8:
        raise ValueError(f"photometric_distortion expects uint8, got {image.dtype}")
    img = np.ascontiguousarray(image)
    if rng.integers(2):
        img = _affine_uint8(img, beta=rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
    contrast_first = bool(rng.integers(2))
    if contrast_first and rng.integers(2):
        img = _affine_uint8(img, alpha=rng.uniform(*CONTRAST_RANGE))
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = _affine_uint8(hsv[:, :, 1], alpha=rng.uniform(*SATURATION_RANGE))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        shift = int(rng.integers(-HUE_DELTA, HUE_DELTA + 1))
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int32) + shift) % 180).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first and rng.integers(2):
        img = _affine_uint8(img, alpha=rng.uniform(*CONTRAST_RANGE))
    return img


def normalize(image: np.ndarray) -> np.ndarray:
    """ImageNet normalization of an RGB uint8 (H, W, 3) image -> float32 (3, H, W)."""
    out = (image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def pad_to(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad a normalized (3, h, w) image with 0 and its (h, w) label with 255 at the bottom/right
    up to ``size`` x ``size`` (mmseg's Pad, which runs after Normalize)."""
    _, h, w = image.shape
    if h > size or w > size:
        raise ValueError(f"cannot pad a {h}x{w} sample to a smaller {size}x{size} crop")
    if (h, w) == (size, size):
        return image, label
    padded = np.zeros((3, size, size), dtype=image.dtype)
    padded[:, :h, :w] = image
    padded_label = np.full((size, size), IGNORE_INDEX, dtype=label.dtype)
    padded_label[:h, :w] = label
    return padded, padded_label


def transform_sample(
    image: np.ndarray,
    label: np.ndarray,
    generated: bool,
    rcs_class: int,
    settings: PipelineSettings,
    rng: np.random.Generator,
) -> TrainSample:
    """The whole training pipeline for one (RGB uint8, train-id uint8) pair (see the module doc).

    ``rcs_class`` >= 0 on a source row turns on the RCS re-crop; it is ignored on generated rows.
    """
    _check_pair(image, label)
    crop = settings.crop_size
    box_size = settings.generated_resize if generated else settings.source_resize
    if box_size is not None:
        image, label = resize_keep_ratio(image, label, box_size)
    if image.shape[0] > crop or image.shape[1] > crop:
        if not generated and rcs_class >= 0:
            box = rcs_crop_box(
                label,
                crop,
                settings.cat_max_ratio,
                rcs_class,
                settings.rcs_recrop_min_pixels,
                settings.rcs_recrop_tries,
                rng,
            )
        else:
            box = cat_max_ratio_box(label, crop, settings.cat_max_ratio, rng)
        image, label = apply_box(image, label, box)
    if settings.flip:
        image, label = random_flip(image, label, rng)
    if settings.photometric:
        image = photometric_distortion(image, rng)
    chw = normalize(image)
    chw, label = pad_to(chw, np.ascontiguousarray(label), crop)
    return TrainSample(image=chw, label=label.astype(np.int64))
