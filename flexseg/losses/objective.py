"""The FLEX-Seg training objective (Eq. 9) over a training pass's outputs.

    L = sum_o w_o * (L_seg(o) + lambda_gap * L_GAP(o)) + lambda_fd * L_FD              (Eq. 9)

over the segmentor's outputs o (``SegOutput``; DAFormer: one of weight w = 1; HRDA: fused 0.9
and detail 0.1). L_seg is UBE (Eqs. 7-8, ``ube.py``) when the experiment's ``ube`` is on, the
motivation experiment's fixed boundary weight (Eq. 2, ``boundary_weight.py``) when its
``boundary_weight`` is on, and the pixel cross-entropy otherwise, on logits upsampled bilinearly
(align_corners False) to the labels, each divided by the N of ``training.ce_reduction`` (all
pixels, as mmseg 0.16 and Eq. 8; or the valid ones); L_GAP is the prototype InfoNCE (Eqs. 3-6, ``gap.py``) on the output's decoder feature,
with one prototype bank shared by all outputs, when ``gap`` is on (lambda_gap =
``training.gap.weight``, 0.5); L_FD is DAFormer's ImageNet feature distance
(``feature_distance.py``, lambda_fd = ``training.feature_distance.weight``, 0.005) when enabled.

Decisions the paper leaves open:

* GAP on HRDA runs on each output's features and is weighted like that output's segmentation
  loss (for DAFormer this is exactly Eq. 9). The feature distance is added once, unweighted, as
  in DAFormer, averaged over the outputs that carry encoder features (HRDA: the context branch).
* The per-image loss handed to Hardness-Aware Sampling is the first (main) output's: the
  UBE-weighted (or Eq. 2-weighted) CE with UBE (Eq. 2) on, the CE otherwise, over the image's
  part of N.
* UBE and the Eq. 2 weight both weight the cross-entropy: an objective with both is refused.
* The losses are computed in float32 whatever the autocast dtype of the forward pass.

A new term is a local change: a name in ``TERMS``, its settings, and its lines in ``__call__``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from flexseg.labels import IGNORE_INDEX, THING_CLASSES
from flexseg.losses.boundary import boundary_mask
from flexseg.losses.boundary_weight import boundary_weighted_loss
from flexseg.losses.feature_distance import feature_distance
from flexseg.losses.gap import PrototypeBank, gap_loss
from flexseg.losses.ube import pixel_means, pixel_rows, ube_loss

if TYPE_CHECKING:
    from flexseg.models import SegOutput

TERMS = ("seg", "gap", "fd")


@dataclass(frozen=True)
class UbeSettings:
    alpha: float
    eps: float
    dilate_kernel: int
    erode_kernel: int


@dataclass(frozen=True)
class BoundaryWeightSettings:
    alpha: float
    dilate_kernel: int
    erode_kernel: int


@dataclass(frozen=True)
class GapSettings:
    momentum: float
    temperature: float
    weight: float
    kernels: tuple[int, ...]  # thin, medium, thick (Eq. 3)


@dataclass(frozen=True)
class FeatureDistanceSettings:
    enabled: bool
    weight: float
    thing_share: float


@dataclass
class LossTerms:
    """The objective of one step and its parts (scalars; only ``total`` is back-propagated)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]  # by TERMS
    per_image: torch.Tensor  # (B,) detached segmentation loss of each image of the main output

    def values(self) -> torch.Tensor:
        """total, then the parts in TERMS order, detached."""
        return torch.stack([t.detach().float() for t in (self.total, *self.parts.values())])


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "valid"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel CE (ignore 255) over N = all pixels or the valid ones (``reduction``) and each
    image's CE over its part of N (detached).

    Computed on pixel rows (``pixel_rows``: a view of channels-last logits), like UBE."""
    ce = F.cross_entropy(
        pixel_rows(logits), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return pixel_means(ce, labels != IGNORE_INDEX, reduction)


@dataclass
class Objective:
    """Eq. 9. ``ube`` / ``gap`` / ``boundary_weight`` None: that part is off (plain CE / no GAP
    term / no Eq. 2 weight); the feature distance is on when ``imagenet_model`` is given;
    ``ce_reduction`` is the segmentation losses' N (all or valid pixels)."""

    ube: UbeSettings | None
    gap: GapSettings | None
    bank: PrototypeBank | None
    feature_distance: FeatureDistanceSettings
    imagenet_model: nn.Module | None = None
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    boundary_weight: BoundaryWeightSettings | None = None
    ce_reduction: str = "valid"

    def __post_init__(self) -> None:
        if self.gap is not None and self.bank is None:
            raise ValueError("GAP is on but no prototype bank was given")
        if self.ube is not None and self.boundary_weight is not None:
            raise ValueError("UBE and the Eq. 2 boundary weight cannot both weight the CE")
        if self.feature_distance.enabled and self.imagenet_model is None:
            raise ValueError("the feature distance is on but no ImageNet model was given")

    def __call__(self, outputs: Sequence[SegOutput], images: torch.Tensor) -> LossTerms:
        zero = images.new_zeros((), dtype=torch.float32)
        seg_total, gap_total, fd_total, per_image = zero, zero, zero, None
        for out in outputs:
            # Upsampled in channels-last: on a CPU the bilinear kernel and its backward run 2-3x
            # faster than on (B, C, H, W) memory, and the losses read the result as pixel rows.
            logits = F.interpolate(
                out.logits.float().contiguous(memory_format=torch.channels_last),
                size=out.labels.shape[-2:],
                mode="bilinear",
                align_corners=False,
            )
            if self.ube is not None:
                u = self.ube
                boundary = boundary_mask(out.labels, u.dilate_kernel, u.erode_kernel)
                result = ube_loss(
                    logits, out.labels, boundary, u.alpha, u.eps, reduction=self.ce_reduction
                )
                seg, images_loss = result.loss, result.per_image
            elif self.boundary_weight is not None:
                w = self.boundary_weight
                boundary = boundary_mask(out.labels, w.dilate_kernel, w.erode_kernel)
                weighted = boundary_weighted_loss(
                    logits, out.labels, boundary, w.alpha, reduction=self.ce_reduction
                )
                seg, images_loss = weighted.loss, weighted.per_image
            else:
                seg, images_loss = cross_entropy(logits, out.labels, self.ce_reduction)
            per_image = images_loss if per_image is None else per_image
            seg_total = seg_total + out.weight * seg
            if self.gap is not None:
                if out.features is None:
                    raise ValueError("GAP is on but the model was built without GAP features")
                g = self.gap
                gap = gap_loss(
                    out.features.float(),
                    out.labels,
                    self.bank,
                    kernels=g.kernels,
                    temperature=g.temperature,
                    momentum=g.momentum,
                ).loss
                gap_total = gap_total + out.weight * gap
        total = seg_total + (self.gap.weight * gap_total if self.gap is not None else 0.0)
        with_features = [o for o in outputs if o.stage_features is not None]
        if self.imagenet_model is not None and with_features:
            with torch.no_grad(), self.autocast():
                reference = self.imagenet_model.encode_last_stage(images)
            share = self.feature_distance.thing_share
            for out in with_features:
                fd_total = fd_total + feature_distance(
                    out.stage_features, reference, out.labels, THING_CLASSES, share
                )
            fd_total = fd_total / len(with_features)
            total = total + self.feature_distance.weight * fd_total
        parts = {"seg": seg_total, "gap": gap_total, "fd": fd_total}
        return LossTerms(total=total, parts=parts, per_image=per_image)
