"""Segmentation scores: the confusion matrix, per-class IoU, mIoU, and boundary/interior error.

mIoU follows the DAFormer/HRDA evaluation (mmseg's ``mean_iou``): one confusion matrix is
accumulated over the whole split (pixels whose ground truth is ``IGNORE_INDEX`` are skipped),
then per class ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` from the split totals, and
``mIoU = 100 * nanmean_c IoU_c``. A class that occurs neither in the ground truth nor in the
predictions of the split has an undefined IoU (NaN) and is left out of the mean; a class that is
only predicted has IoU 0 and counts.

Boundary vs interior error (the paper's Fig. 1): the boundary region ``B`` is Eq. 1,
``Dilate(M, k) - Erode(M, k)`` on the ground truth ``M`` (``flexseg.losses.boundary``), with one
kernel size ``k`` for both operations. The paper does not define the rate; here it is
``wrong / valid`` pixels pooled over the whole split (not a mean of per-image rates, so large
images weigh more, as in the confusion matrix), separately for valid pixels inside ``B`` and for
valid pixels outside it, in percent. Ignored ground-truth pixels are in neither region.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from flexseg.labels import IGNORE_INDEX, NUM_CLASSES
from flexseg.losses.boundary import boundary_mask


def confusion_matrix(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """The (C, C) int64 confusion matrix of one image: rows = ground truth, columns = prediction.

    Ground-truth pixels equal to ``ignore_index`` are skipped. Any other ground-truth value
    outside ``[0, C)`` and any prediction outside ``[0, C)`` on a counted pixel is an error.
    """
    pred_t = torch.as_tensor(pred)
    gt_t = torch.as_tensor(gt)
    if pred_t.shape != gt_t.shape:
        raise ValueError(
            f"prediction shape {tuple(pred_t.shape)} differs from ground truth {tuple(gt_t.shape)}"
        )
    gt_t = gt_t.reshape(-1).long()
    pred_t = pred_t.reshape(-1).to(gt_t.device).long()
    keep = gt_t != ignore_index
    gt_t = gt_t[keep]
    pred_t = pred_t[keep]
    if gt_t.numel() and (int(gt_t.min()) < 0 or int(gt_t.max()) >= num_classes):
        bad = gt_t[(gt_t < 0) | (gt_t >= num_classes)][0].item()
        raise ValueError(
            f"ground-truth class {bad} outside [0, {num_classes}) and not the ignore index "
            f"{ignore_index}"
        )
    if pred_t.numel() and (int(pred_t.min()) < 0 or int(pred_t.max()) >= num_classes):
        bad = pred_t[(pred_t < 0) | (pred_t >= num_classes)][0].item()
        raise ValueError(f"predicted class {bad} outside [0, {num_classes})")
    counts = torch.bincount(gt_t * num_classes + pred_t, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU in [0, 1]; NaN for classes absent from both ground truth and prediction."""
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {conf.shape}")
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """mIoU in percent: 100 x the mean IoU over the classes whose IoU is defined (NaN if none)."""
    iou = iou_per_class(conf)
    if np.all(np.isnan(iou)):
        return float("nan")
    return float(np.nanmean(iou) * 100.0)


@dataclass
class BoundaryCounts:
    """Pixel counts for the boundary/interior error rates; add them up over a split."""

    boundary_wrong: int = 0
    boundary_valid: int = 0
    interior_wrong: int = 0
    interior_valid: int = 0

    def __add__(self, other: BoundaryCounts) -> BoundaryCounts:
        return BoundaryCounts(
            self.boundary_wrong + other.boundary_wrong,
            self.boundary_valid + other.boundary_valid,
            self.interior_wrong + other.interior_wrong,
            self.interior_valid + other.interior_valid,
        )

    @property
    def boundary_error(self) -> float:
        """Percent of valid boundary pixels predicted wrong (NaN when there are none)."""
        return _percent(self.boundary_wrong, self.boundary_valid)

    @property
    def interior_error(self) -> float:
        """Percent of valid interior pixels predicted wrong (NaN when there are none)."""
        return _percent(self.interior_wrong, self.interior_valid)


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole > 0 else float("nan")


def boundary_interior_counts(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    boundary: np.ndarray | torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
) -> BoundaryCounts:
    """Wrong and valid pixel counts inside and outside ``boundary`` (bool, same shape as ``gt``)."""
    pred_t = torch.as_tensor(pred)
    gt_t = torch.as_tensor(gt)
    b_t = torch.as_tensor(boundary)
    if not (pred_t.shape == gt_t.shape == b_t.shape):
        raise ValueError(
            f"prediction {tuple(pred_t.shape)}, ground truth {tuple(gt_t.shape)} and boundary "
            f"{tuple(b_t.shape)} must have the same shape"
        )
    if b_t.dtype != torch.bool:
        raise ValueError(f"the boundary mask must be bool, got {b_t.dtype}")
    device = gt_t.device
    valid = gt_t != ignore_index
    wrong = (pred_t.to(device).long() != gt_t.long()) & valid
    b_t = b_t.to(device)
    inner = valid & ~b_t
    return BoundaryCounts(
        boundary_wrong=int((wrong & b_t).sum()),
        boundary_valid=int((valid & b_t).sum()),
        interior_wrong=int((wrong & inner).sum()),
        interior_valid=int(inner.sum()),
    )


def gt_boundary(gt: torch.Tensor, kernel: int) -> torch.Tensor:
    """Eq. 1 on a ground truth (H, W): its boundary region for dilation = erosion = ``kernel``."""
    if gt.ndim != 2:
        raise ValueError(f"expected a (H, W) ground truth, got shape {tuple(gt.shape)}")
    return boundary_mask(gt[None].long(), kernel, kernel)[0]


@dataclass
class SplitScores:
    """Accumulates one split: the confusion matrix, per-condition matrices and boundary counts."""

    num_classes: int = NUM_CLASSES
    confusion: np.ndarray = field(init=False)
    by_condition: dict[str, np.ndarray] = field(default_factory=dict)
    boundary: BoundaryCounts = field(default_factory=BoundaryCounts)
    num_images: int = 0

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def add(
        self, conf: np.ndarray, counts: BoundaryCounts | None = None, condition: str = ""
    ) -> None:
        """Add one image's confusion matrix (and boundary counts) to the split totals."""
        self.confusion += conf
        if condition:
            if condition not in self.by_condition:
                self.by_condition[condition] = np.zeros_like(self.confusion)
            self.by_condition[condition] += conf
        if counts is not None:
            self.boundary = self.boundary + counts
        self.num_images += 1

    @property
    def miou(self) -> float:
        return mean_iou(self.confusion)

    def per_condition(self) -> dict[str, float]:
        return {cond: mean_iou(c) for cond, c in sorted(self.by_condition.items())}
