"""Training transforms against plainly written references (DAFormer/mmseg pipeline semantics)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from flexseg.config import build
from flexseg.data import transforms as T
from flexseg.labels import IGNORE_INDEX

torch.set_num_threads(1)


def _settings(**over) -> T.PipelineSettings:
    base = dict(
        crop_size=32,
        source_resize=None,
        generated_resize=None,
        cat_max_ratio=0.75,
        rcs_recrop_min_pixels=50,
        rcs_recrop_tries=10,
        flip=True,
        photometric=True,
    )
    base.update(over)
    return T.PipelineSettings(**base)


# ---------------------------------------------------------------------------------------------
# Keep-ratio resize


def _reference_size(h: int, w: int, box: tuple[int, int]) -> tuple[int, int]:
    long_max, short_max = max(box), min(box)
    long_side, short_side = max(h, w), min(h, w)
    scale = min(long_max / long_side, short_max / short_side)
    # mmcv: int(x * scale + 0.5), i.e. halves round up (Python's round() would round to even).
    return int(np.floor(h * scale + 0.5)), int(np.floor(w * scale + 0.5))


def test_keep_ratio_size_known_cases() -> None:
    # GTA5 (1914 x 1052) into DAFormer's (1280, 720) and HRDA's (2560, 1440), as the reference says.
    assert T.keep_ratio_size(1052, 1914, (1280, 720)) == (704, 1280)
    assert T.keep_ratio_size(1052, 1914, (2560, 1440)) == (1407, 2560)
    # 5 x 10 into (5, 5): scale 0.5, height 2.5 rounds half up to 3 (banker's rounding gives 2).
    assert T.keep_ratio_size(5, 10, (5, 5)) == (3, 5)
    # the box is (long, short) whatever the order it is written in.
    assert T.keep_ratio_size(100, 50, (20, 40)) == T.keep_ratio_size(100, 50, (40, 20))


def test_keep_ratio_size_random_against_reference() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(8, 3000, size=2))
        box = (int(rng.integers(8, 3000)), int(rng.integers(8, 3000)))
        assert T.keep_ratio_size(h, w, box) == _reference_size(h, w, box)


def test_resize_keep_ratio_interpolation() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    label = rng.choice(np.array([0, 3, 7, IGNORE_INDEX], dtype=np.uint8), size=(30, 50))
    out_img, out_lbl = T.resize_keep_ratio(image, label, (80, 60))
    assert out_img.shape == (48, 80, 3) and out_lbl.shape == (48, 80)
    # nearest for labels: only ids that were there, and the exact cv2 nearest result.
    assert set(np.unique(out_lbl)) <= {0, 3, 7, IGNORE_INDEX}
    assert np.array_equal(out_lbl, cv2.resize(label, (80, 48), interpolation=cv2.INTER_NEAREST))
    assert np.array_equal(out_img, cv2.resize(image, (80, 48), interpolation=cv2.INTER_LINEAR))
    with pytest.raises(ValueError, match="does not match"):
        T.resize_keep_ratio(image, label[:-1], (80, 60))


# ---------------------------------------------------------------------------------------------
# Random crop with cat_max_ratio and the RCS re-crop, against loop references that consume the
# generator in the documented order.


def _reference_box(h: int, w: int, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    y0 = int(rng.integers(0, max(h - crop, 0) + 1))
    x0 = int(rng.integers(0, max(w - crop, 0) + 1))
    return y0, x0


def _reference_ok(window: np.ndarray, ratio: float) -> bool:
    counts: dict[int, int] = {}
    for value in window.ravel().tolist():
        if value != IGNORE_INDEX:
            counts[value] = counts.get(value, 0) + 1
    if len(counts) < 2:
        return False
    return max(counts.values()) / sum(counts.values()) < ratio


def _reference_cat_crop(label, crop, ratio, rng):
    h, w = label.shape
    y0, x0 = _reference_box(h, w, crop, rng)
    for _ in range(10):
        if _reference_ok(label[y0 : y0 + crop, x0 : x0 + crop], ratio):
            break
        y0, x0 = _reference_box(h, w, crop, rng)
    return y0, x0


def _blob_label(rng: np.random.Generator, h: int = 60, w: int = 90) -> np.ndarray:
    label = np.zeros((h, w), dtype=np.uint8)
    for cls in (1, 2, 5, IGNORE_INDEX):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        dy, dx = rng.integers(4, 20, size=2)
        label[y : y + dy, x : x + dx] = cls
    return label


def test_cat_max_ratio_matches_reference() -> None:
    for seed in range(40):
        label = _blob_label(np.random.default_rng(seed))
        box = T.cat_max_ratio_box(label, 24, 0.75, np.random.default_rng(seed + 1000))
        y0, x0 = _reference_cat_crop(label, 24, 0.75, np.random.default_rng(seed + 1000))
        assert (box.y0, box.x0) == (y0, x0)
        assert (box.y1 - box.y0, box.x1 - box.x0) == (24, 24)


def test_cat_max_ratio_rejects_dominated_crops() -> None:
    # A road-dominated label: the rule should make balanced crops much more frequent.
    label = np.zeros((64, 64), dtype=np.uint8)
    label[:, 48:] = 2
    ok_with, ok_without = 0, 0
    for seed in range(200):
        box = T.cat_max_ratio_box(label, 24, 0.75, np.random.default_rng(seed))
        ok_with += T.dominant_class_ok(label[box.y0 : box.y1, box.x0 : box.x1], 0.75)
        plain = T.random_crop_box(64, 64, 24, np.random.default_rng(seed))
        ok_without += T.dominant_class_ok(label[plain.y0 : plain.y1, plain.x0 : plain.x1], 0.75)
    assert ok_with > 0.9 * 200
    assert ok_without < 0.5 * 200


def test_cat_max_ratio_gives_up_after_ten_redraws() -> None:
    # A single-class label never passes: 1 + 10 windows are drawn and the last one is kept.
    label = np.full((50, 70), 4, dtype=np.uint8)
    box = T.cat_max_ratio_box(label, 16, 0.75, np.random.default_rng(7))
    replay = np.random.default_rng(7)
    for _ in range(11):
        y0, x0 = _reference_box(50, 70, 16, replay)
    assert (box.y0, box.x0) == (y0, x0)


def test_dominant_class_ignores_void() -> None:
    window = np.full((10, 10), IGNORE_INDEX, dtype=np.uint8)
    window[0, :5] = 1
    window[1, :5] = 2
    assert T.dominant_class_ok(window, 0.75)  # 50/50 among labelled pixels, void not counted
    window[1, :5] = 1
    assert not T.dominant_class_ok(window, 0.75)  # one labelled class only


def test_rcs_recrop_against_reference() -> None:
    for seed in range(30):
        rng = np.random.default_rng(seed)
        label = rng.integers(0, 3, size=(80, 120)).astype(np.uint8)
        y, x = rng.integers(0, 68), rng.integers(0, 108)
        label[y : y + 12, x : x + 12] = 9
        box = T.rcs_crop_box(label, 32, 0.75, 9, 50, 10, np.random.default_rng(seed + 500))
        replay = np.random.default_rng(seed + 500)
        for _ in range(10):
            ry0, rx0 = _reference_cat_crop(label, 32, 0.75, replay)
            window = label[ry0 : ry0 + 32, rx0 : rx0 + 32]
            if int((window == 9).sum()) > 50:
                break
        assert (box.y0, box.x0) == (ry0, rx0)


def test_rcs_recrop_draws_as_many_crops_as_the_anchors() -> None:
    """DAFormer's get_rare_class_sample and DGInStyle-SegModel's get_gta_rcs_crop take a first
    crop, then up to 10 more while the class has too few pixels: 11 in all, the default."""
    from flexseg.config import schema_at

    tries = schema_at("training.rcs_recrop_tries")["default"]
    assert tries == 11
    for seed in range(20):
        rng = np.random.default_rng(seed)
        label = rng.integers(0, 3, size=(80, 120)).astype(np.uint8)
        label[:6, :6] = 9  # rarely inside a 32 crop with more than 20 px
        box = T.rcs_crop_box(label, 32, 0.75, 9, 20, tries, np.random.default_rng(seed + 9))
        replay = np.random.default_rng(seed + 9)
        ry0, rx0 = _reference_cat_crop(label, 32, 0.75, replay)  # the anchors' loop, as written
        for _ in range(10):
            if int((label[ry0 : ry0 + 32, rx0 : rx0 + 32] == 9).sum()) > 20:
                break
            ry0, rx0 = _reference_cat_crop(label, 32, 0.75, replay)
        assert (box.y0, box.x0) == (ry0, rx0), seed


def test_rcs_recrop_finds_the_class_more_often() -> None:
    hits_rcs, hits_plain = 0, 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        label = rng.integers(0, 3, size=(96, 160)).astype(np.uint8)
        y, x = rng.integers(0, 86), rng.integers(0, 150)
        label[y : y + 10, x : x + 10] = 9
        box = T.rcs_crop_box(label, 32, 0.75, 9, 50, 10, np.random.default_rng(seed))
        hits_rcs += int((label[box.y0 : box.y1, box.x0 : box.x1] == 9).sum()) > 50
        box = T.rcs_crop_box(label, 32, 0.75, 9, 50, 1, np.random.default_rng(seed))
        hits_plain += int((label[box.y0 : box.y1, box.x0 : box.x1] == 9).sum()) > 50
    assert hits_rcs > hits_plain + 30


# ---------------------------------------------------------------------------------------------
# Flip, photometric distortion, normalization, padding


def test_pad_values() -> None:
    image = np.ones((3, 20, 25), dtype=np.float32)
    label = np.full((20, 25), 3, dtype=np.int64)
    out_img, out_lbl = T.pad_to(image, label, 32)
    assert out_img.shape == (3, 32, 32) and out_lbl.shape == (32, 32)
    assert np.all(out_img[:, :20, :25] == 1) and np.all(out_lbl[:20, :25] == 3)
    assert np.all(out_img[:, 20:, :] == 0) and np.all(out_img[:, :, 25:] == 0)
    assert np.all(out_lbl[20:, :] == IGNORE_INDEX) and np.all(out_lbl[:, 25:] == IGNORE_INDEX)
    with pytest.raises(ValueError, match="cannot pad"):
        T.pad_to(image, label, 16)


def test_normalize_against_reference() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    out = T.normalize(image)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    for c in range(3):
        for y in range(4):
            for x in range(5):
                ref = (float(image[y, x, c]) - mean[c]) / std[c]
                assert out[c, y, x] == pytest.approx(ref, abs=1e-5)


def _reference_pmd(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg's PhotoMetricDistortion written out step by step (RGB uint8)."""

    def affine(x, alpha=1.0, beta=0.0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    img = image.copy()
    if rng.integers(2):  # brightness
        img = affine(img, beta=rng.uniform(-32, 32))
    mode = rng.integers(2)
    if mode == 1 and rng.integers(2):  # contrast first
        img = affine(img, alpha=rng.uniform(0.5, 1.5))
    if rng.integers(2):  # saturation
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = affine(hsv[..., 1], alpha=rng.uniform(0.5, 1.5))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):  # hue
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(-18, 19))) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if mode == 0 and rng.integers(2):  # contrast last
        img = affine(img, alpha=rng.uniform(0.5, 1.5))
    return img


def test_photometric_distortion_matches_reference() -> None:
    image = np.random.default_rng(11).integers(0, 256, size=(12, 14, 3), dtype=np.uint8)
    for seed in range(60):
        out = T.photometric_distortion(image, np.random.default_rng(seed))
        ref = _reference_pmd(image, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and np.array_equal(out, ref)


def test_photometric_brightness_contrast_range() -> None:
    # A grey image has no saturation or hue: only brightness (+-32) and contrast (x0.5..1.5) act,
    # so every output value lies in [(128 - 32) * 0.5, (128 + 32) * 1.5] = [48, 240].
    grey = np.full((4, 4, 3), 128, dtype=np.uint8)
    values = []
    for seed in range(400):
        out = T.photometric_distortion(grey, np.random.default_rng(seed))
        assert np.all(out == out[0, 0, 0])
        values.append(int(out[0, 0, 0]))
    values = np.array(values)
    assert values.min() >= 48 and values.max() <= 240
    assert values.min() < 80 and values.max() > 200  # the ranges are really used
    unchanged = np.mean(values == 128)
    assert 0.15 < unchanged < 0.4  # neither op applied: probability 1/4


def test_photometric_hue_range() -> None:
    # A mid-range colour (no channel clips under brightness/contrast, which then keep the hue):
    # the hue moves by at most 18 plus HSV round-off, and not at all about half of the time.
    hsv = np.zeros((2, 2, 3), dtype=np.uint8)
    hsv[..., 0], hsv[..., 1], hsv[..., 2] = 60, 160, 110
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    shifts = []
    for seed in range(300):
        out = T.photometric_distortion(image, np.random.default_rng(seed))
        shifts.append(int(cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[0, 0, 0]) - 60)
    shifts = np.abs(np.array(shifts))
    assert shifts.max() <= 21
    assert shifts.max() >= 15
    assert 0.3 < np.mean(shifts <= 1) < 0.7


def test_flip_moves_image_and_label_together() -> None:
    settings = _settings(crop_size=16, photometric=False, cat_max_ratio=1.0)
    label = np.tile(np.arange(16, dtype=np.uint8), (16, 1))
    image = np.repeat((label * 10)[..., None], 3, axis=2).astype(np.uint8)
    flipped = 0
    for seed in range(50):
        out = T.transform_sample(image, label, False, -1, settings, np.random.default_rng(seed))
        restored = out.image[0] * T.IMAGENET_STD[0] + T.IMAGENET_MEAN[0]
        assert np.allclose(restored, out.label * 10, atol=1e-3)
        flipped += out.label[0, 0] == 15
    assert 10 < flipped < 40


# ---------------------------------------------------------------------------------------------
# The whole pipeline


def _coded_pair(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An image whose red channel encodes the label id (so the pairing can be checked)."""
    label = rng.integers(0, 19, size=(h, w)).astype(np.uint8)
    label[rng.random((h, w)) < 0.1] = IGNORE_INDEX
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = label
    return image, label


def test_source_pipeline_crop_and_pairing() -> None:
    settings = _settings(crop_size=32, photometric=False)
    image, label = _coded_pair(48, 80, np.random.default_rng(0))
    out = T.transform_sample(image, label, False, -1, settings, np.random.default_rng(5))
    assert out.image.shape == (3, 32, 32) and out.image.dtype == np.float32
    assert out.label.shape == (32, 32) and out.label.dtype == np.int64
    red = np.rint(out.image[0] * T.IMAGENET_STD[0] + T.IMAGENET_MEAN[0]).astype(np.int64)
    assert np.array_equal(red, out.label)


def test_source_resize_then_crop() -> None:
    settings = _settings(crop_size=24, source_resize=(40, 30), photometric=False, flip=False)
    image, label = _coded_pair(60, 100, np.random.default_rng(2))
    out = T.transform_sample(image, label, False, -1, settings, np.random.default_rng(0))
    # 100 x 60 into (40, 30): scale 0.4 -> 40 x 24; the 24 px crop keeps the full height.
    resized_img, resized_lbl = T.resize_keep_ratio(image, label, (40, 30))
    assert resized_lbl.shape == (24, 40)
    found = [x0 for x0 in range(0, 17) if np.array_equal(out.label, resized_lbl[:, x0 : x0 + 24])]
    assert found, "the output is not a 24 px window of the resized label"


def test_generated_images_padded_or_cropped_to_the_crop() -> None:
    settings = _settings(crop_size=32, photometric=False, flip=False)
    small_img, small_lbl = _coded_pair(20, 28, np.random.default_rng(4))
    out = T.transform_sample(small_img, small_lbl, True, 3, settings, np.random.default_rng(0))
    assert out.image.shape == (3, 32, 32)
    assert np.array_equal(out.label[:20, :28], small_lbl.astype(np.int64))
    assert np.all(out.label[20:] == IGNORE_INDEX) and np.all(out.image[:, 20:] == 0)
    exact_img, exact_lbl = _coded_pair(32, 32, np.random.default_rng(5))
    out = T.transform_sample(exact_img, exact_lbl, True, -1, settings, np.random.default_rng(0))
    assert np.array_equal(out.label, exact_lbl.astype(np.int64))
    big_img, big_lbl = _coded_pair(40, 64, np.random.default_rng(6))
    out = T.transform_sample(big_img, big_lbl, True, -1, settings, np.random.default_rng(0))
    assert out.label.shape == (32, 32)


def test_generated_resize_box() -> None:
    settings = _settings(crop_size=32, generated_resize=(32, 32), photometric=False, flip=False)
    image, label = _coded_pair(16, 16, np.random.default_rng(8))
    out = T.transform_sample(image, label, True, -1, settings, np.random.default_rng(0))
    up = cv2.resize(label, (32, 32), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    assert np.array_equal(out.label, up)


def test_same_seed_same_sample() -> None:
    settings = _settings(crop_size=32)
    image, label = _coded_pair(48, 80, np.random.default_rng(0))
    a = T.transform_sample(image, label, False, 4, settings, np.random.default_rng(42))
    b = T.transform_sample(image, label, False, 4, settings, np.random.default_rng(42))
    c = T.transform_sample(image, label, False, 4, settings, np.random.default_rng(43))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.image, c.image)


def test_settings_from_training_section() -> None:
    training = {
        "crop_size": 128,
        "source_resize": [320, 180],
        "generated_resize": None,
        "cat_max_ratio": 0.75,
        "rcs_recrop_min_pixels": 50,
        "rcs_recrop_tries": 10,
        "flip": True,
        "photometric": True,
    }
    s = build(T.PipelineSettings, training)
    assert s.source_resize == (320, 180) and s.generated_resize is None and s.crop_size == 128
