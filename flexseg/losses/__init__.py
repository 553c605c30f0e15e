"""The FLEX-Seg losses: boundary masks (Eqs. 1, 3), UBE (Eqs. 7-8), GAP (Eqs. 4-6), DAFormer's
ImageNet feature distance, the motivation experiment's fixed boundary weight (Eq. 2), and the
training objective that sums them (Eq. 9, ``objective.py``).
"""

from flexseg.losses.boundary import boundary_mask, downsample_labels, granularity_masks
from flexseg.losses.boundary_weight import BoundaryWeightResult, boundary_weighted_loss
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
from flexseg.losses.objective import (
    BoundaryWeightSettings,
    FeatureDistanceSettings,
    GapSettings,
    LossTerms,
    Objective,
    UbeSettings,
)
from flexseg.losses.ube import UBEResult, ube_loss

__all__ = [
    "BoundaryWeightResult",
    "BoundaryWeightSettings",
    "FeatureDistanceSettings",
    "GAPResult",
    "GapSettings",
    "LossTerms",
    "Objective",
    "UbeSettings",
    "PrototypeBank",
    "UBEResult",
    "UpdateBatch",
    "boundary_features",
    "boundary_mask",
    "boundary_weighted_loss",
    "downsample_labels",
    "feature_distance",
    "gap_loss",
    "gather_for_update",
    "granularity_masks",
    "imbalance_weights",
    "prototype_info_nce",
    "ube_loss",
]
