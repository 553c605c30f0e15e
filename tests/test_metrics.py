"""Confusion matrix, IoU / mIoU over a split, and boundary vs interior error rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flexseg.labels import IGNORE_INDEX
from flexseg.metrics import (
    BoundaryCounts,
    SplitScores,
    boundary_interior_counts,
    confusion_matrix,
    gt_boundary,
    iou_per_class,
    mean_iou,
)

torch.set_num_threads(1)


def random_pair(rng: np.random.Generator, shape, num_classes: int, ignore_share: float = 0.1):
    gt = rng.integers(0, num_classes, size=shape).astype(np.uint8)
    gt[rng.random(shape) < ignore_share] = IGNORE_INDEX
    pred = rng.integers(0, num_classes, size=shape).astype(np.uint8)
    return pred, gt


def loop_confusion(pred, gt, num_classes):
    conf = [[0] * num_classes for _ in range(num_classes)]
    for p, g in zip(pred.reshape(-1).tolist(), gt.reshape(-1).tolist(), strict=True):
        if g == IGNORE_INDEX:
            continue
        conf[g][p] += 1
    return conf


def loop_miou(pairs, num_classes):
    """Per class TP / (TP + FP + FN) over every pixel of the split; absent classes skipped."""
    tp = [0] * num_classes
    fp = [0] * num_classes
    fn = [0] * num_classes
    for pred, gt in pairs:
        for p, g in zip(pred.reshape(-1).tolist(), gt.reshape(-1).tolist(), strict=True):
            if g == IGNORE_INDEX:
                continue
            if p == g:
                tp[g] += 1
            else:
                fp[p] += 1
                fn[g] += 1
    ious = []
    for c in range(num_classes):
        denom = tp[c] + fp[c] + fn[c]
        ious.append(tp[c] / denom if denom else None)
    defined = [v for v in ious if v is not None]
    return ious, 100.0 * sum(defined) / len(defined)


def test_confusion_matrix_matches_loop():
    rng = np.random.default_rng(0)
    pred, gt = random_pair(rng, (13, 17), 6)
    conf = confusion_matrix(pred, gt, num_classes=6)
    assert conf.dtype == np.int64
    assert conf.tolist() == loop_confusion(pred, gt, 6)
    assert conf.sum() == int((gt != IGNORE_INDEX).sum())


def test_split_miou_matches_loop_with_absent_classes():
    rng = np.random.default_rng(1)
    num_classes = 7
    pairs = []
    for shape in [(9, 11), (12, 5), (8, 8)]:
        pred, gt = random_pair(rng, shape, num_classes)
        # Class 5 never appears in the split (NaN), class 6 only in predictions (IoU 0).
        gt[gt == 5] = 0
        gt[gt == 6] = 1
        pred[pred == 5] = 2
        pairs.append((pred, gt))
    scores = SplitScores(num_classes=num_classes)
    for pred, gt in pairs:
        scores.add(confusion_matrix(pred, gt, num_classes=num_classes))
    ious, ref_miou = loop_miou(pairs, num_classes)
    got = iou_per_class(scores.confusion)
    for c in range(num_classes):
        if ious[c] is None:
            assert math.isnan(got[c]), c
        else:
            assert got[c] == pytest.approx(ious[c], abs=1e-12), c
    assert ious[5] is None and ious[6] == 0.0
    assert scores.miou == pytest.approx(ref_miou, abs=1e-9)
    assert scores.num_images == 3
    # The split total is not the mean of per-image mIoUs.
    per_image = np.mean([mean_iou(confusion_matrix(p, g, num_classes)) for p, g in pairs])
    assert not math.isclose(per_image, scores.miou, abs_tol=1e-6)


def test_per_condition_miou_uses_only_that_condition():
    rng = np.random.default_rng(2)
    scores = SplitScores(num_classes=4)
    by_cond: dict[str, list] = {"fog": [], "night": []}
    for i in range(6):
        pred, gt = random_pair(rng, (6, 7), 4)
        cond = "fog" if i % 3 else "night"
        by_cond[cond].append((pred, gt))
        scores.add(confusion_matrix(pred, gt, 4), condition=cond)
    per = scores.per_condition()
    assert set(per) == {"fog", "night"}
    for cond, pairs in by_cond.items():
        assert per[cond] == pytest.approx(loop_miou(pairs, 4)[1], abs=1e-9)


def test_empty_confusion_is_nan():
    assert math.isnan(mean_iou(np.zeros((3, 3), dtype=np.int64)))
    assert np.isnan(iou_per_class(np.zeros((3, 3)))).all()


def test_bad_values_raise():
    gt = np.array([[0, 1], [2, IGNORE_INDEX]], dtype=np.uint8)
    with pytest.raises(ValueError, match="predicted class 9"):
        confusion_matrix(np.array([[0, 9], [1, 1]]), gt, num_classes=3)
    with pytest.raises(ValueError, match="ground-truth class 7"):
        confusion_matrix(np.zeros((2, 2), dtype=np.uint8), np.full((2, 2), 7), num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 3)), gt, num_classes=3)
    with pytest.raises(ValueError, match="square"):
        iou_per_class(np.zeros((2, 3)))
    # A wrong prediction on an ignored pixel is not an error: the pixel is not counted.
    pred = np.array([[0, 1], [2, 200]], dtype=np.uint8)
    assert confusion_matrix(pred, gt, num_classes=3).trace() == 3


def loop_boundary_counts(pred, gt, boundary):
    c = {"bw": 0, "bv": 0, "iw": 0, "iv": 0}
    for p, g, b in zip(pred.reshape(-1), gt.reshape(-1), boundary.reshape(-1), strict=True):
        if g == IGNORE_INDEX:
            continue
        key = "b" if b else "i"
        c[key + "v"] += 1
        c[key + "w"] += int(p != g)
    return c


def test_boundary_interior_counts_match_loop():
    rng = np.random.default_rng(3)
    pred, gt = random_pair(rng, (10, 12), 5)
    boundary = rng.random((10, 12)) < 0.3
    got = boundary_interior_counts(pred, gt, boundary)
    ref = loop_boundary_counts(pred, gt, boundary)
    assert (got.boundary_wrong, got.boundary_valid) == (ref["bw"], ref["bv"])
    assert (got.interior_wrong, got.interior_valid) == (ref["iw"], ref["iv"])
    assert got.boundary_error == pytest.approx(100 * ref["bw"] / ref["bv"])
    assert got.interior_error == pytest.approx(100 * ref["iw"] / ref["iv"])


def test_boundary_interior_on_hand_made_label():
    # 6 x 8 label: class 0 in columns 0-3, class 1 in columns 4-7, one void pixel.
    gt = np.zeros((6, 8), dtype=np.uint8)
    gt[:, 4:] = 1
    gt[0, 0] = IGNORE_INDEX
    # Eq. 1 with a 3 x 3 kernel: the pixels whose 3 x 3 window holds the other class are
    # columns 3 and 4 (12 pixels); the void pixel is in neither region.
    boundary = gt_boundary(torch.from_numpy(gt), 3).numpy()
    expected = np.zeros((6, 8), dtype=bool)
    expected[:, 3:5] = True
    np.testing.assert_array_equal(boundary, expected)
    # Wrong: 3 boundary pixels and 2 interior pixels (plus one on the void pixel, not counted).
    pred = gt.copy()
    pred[0, 0] = 1
    pred[1, 3] = 1
    pred[2, 4] = 0
    pred[5, 4] = 0
    pred[4, 0] = 1
    pred[3, 7] = 0
    counts = boundary_interior_counts(pred, gt, boundary)
    assert counts == BoundaryCounts(
        boundary_wrong=3, boundary_valid=12, interior_wrong=2, interior_valid=35
    )
    assert counts.boundary_error == pytest.approx(25.0)
    assert counts.interior_error == pytest.approx(100 * 2 / 35)
    # A 5 x 5 kernel widens the band to columns 2-5.
    wide = gt_boundary(torch.from_numpy(gt), 5).numpy()
    assert wide[:, 2:6].all() and not wide[:, :2].any() and not wide[:, 6:].any()


def test_split_boundary_rates_pool_pixels():
    scores = SplitScores(num_classes=2)
    scores.add(np.eye(2, dtype=np.int64), BoundaryCounts(1, 2, 0, 10))
    scores.add(np.eye(2, dtype=np.int64), BoundaryCounts(0, 8, 5, 10))
    # Pooled: 1 / 10 and 5 / 20, not the mean of the per-image rates (25 % and 25 %).
    assert scores.boundary.boundary_error == pytest.approx(10.0)
    assert scores.boundary.interior_error == pytest.approx(25.0)
    assert math.isnan(BoundaryCounts().boundary_error)


def test_boundary_counts_reject_mismatch():
    gt = np.zeros((3, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        boundary_interior_counts(gt, gt, np.zeros((3, 2), dtype=bool))
    with pytest.raises(ValueError, match="bool"):
        boundary_interior_counts(gt, gt, np.zeros((3, 3), dtype=np.uint8))
