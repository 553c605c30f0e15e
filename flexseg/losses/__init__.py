"""The FLEX-Seg losses: boundary masks (Eqs. 1, 3), UBE (Eqs. 7-8), GAP (Eqs. 4-6) and
DAFormer's ImageNet feature distance.

The training objective (Eq. 9) is assembled by the trainer:

    L = sum_o weight_o * L_UBE(o) + lambda_gap * L_GAP + lambda_fd * L_FD

over the segmentor's outputs o (DAFormer: one of weight 1; HRDA: fused 0.9, detail 0.1), with
lambda_gap = 0.5 (``training.gap.weight``) and lambda_fd = 0.005 (``training.feature_distance``).
With UBE off, ``ube_loss(..., alpha=0)`` is the plain mean cross-entropy; with GAP off the bank
and its term are left out.
"""

from flexseg.losses.boundary import boundary_mask, downsample_labels, granularity_masks
from flexseg.losses.feature_distance import feature_distance
from flexseg.losses.gap import (
    GAPResult,
    PrototypeBank,
    UpdateBatch,
    boundary_features,
    gap_loss,
    gather_for_update,
    imbalance_weights,
    prototype_info_nce,
)
from flexseg.losses.ube import UBEResult, ube_loss

__all__ = [
    "GAPResult",
    "PrototypeBank",
    "UBEResult",
    "UpdateBatch",
    "boundary_features",
    "boundary_mask",
    "downsample_labels",
    "feature_distance",
    "gap_loss",
    "gather_for_update",
    "granularity_masks",
    "imbalance_weights",
    "prototype_info_nce",
    "ube_loss",
]
