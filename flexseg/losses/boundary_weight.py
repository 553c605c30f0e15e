"""The paper's motivation loss (Eq. 2): cross-entropy with a fixed weight on the boundary band.

    B = Dilate(M, k_d) - Erode(M, k_e)                                              (Eq. 1)
    W(x, y) = alpha   if (x, y) in B
            = 1       otherwise
    L_boundary = (1 / N) sum_(x, y) W(x, y) * CE(x, y)                              (Eq. 2)

The paper trains with alpha = 5 to show that emphasizing the band already helps on misaligned
generated data (Fig. 2); UBE (``ube.py``) replaces the fixed alpha by an entropy-driven weight.

Decisions the paper leaves open:

* Eq. 2 is written as a sum; it is divided by the same N as the plain cross-entropy and UBE
  (``training.ce_reduction``: all pixels or the valid ones, ``ube.pixel_means``), so alpha = 1
  is exactly the plain cross-entropy and the loss keeps its scale against the other terms.
* B is ``boundary_mask`` (Eq. 1 for a multi-class label, as UBE uses it) with
  ``training.boundary_weight.dilate_kernel`` / ``erode_kernel`` (5 / 5, UBE's); ignored pixels
  carry no loss and weight 1 (they are never boundary pixels).
* ``per_image`` (what Hardness-Aware Sampling would record) is each image's weighted CE over its
  part of N, as for UBE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from flexseg.labels import IGNORE_INDEX
from flexseg.losses.ube import pixel_means, pixel_rows


@dataclass
class BoundaryWeightResult:
    loss: torch.Tensor  # scalar, differentiable
    weights: torch.Tensor  # (B, H, W) the pixel weights W(x, y)
    per_image: torch.Tensor  # (B,) detached weighted CE of each image


def boundary_weighted_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    boundary: torch.Tensor,
    alpha: float = 5.0,
    reduction: str = "valid",
    ignore_index: int = IGNORE_INDEX,
) -> BoundaryWeightResult:
    """Eq. 2 for logits (B, C, H, W) at the label size, labels (B, H, W) and the Eq. 1 band
    (B, H, W) bool; computed in float32 at least."""
    if logits.dim() != 4 or tuple(labels.shape) != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"logits (B, C, H, W) and labels (B, H, W) must agree, got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}: upsample the logits to the label size first"
        )
    if tuple(boundary.shape) != tuple(labels.shape) or boundary.dtype != torch.bool:
        raise ValueError(
            f"boundary must be a bool mask of shape {tuple(labels.shape)}, got "
            f"{boundary.dtype} {tuple(boundary.shape)}"
        )
    if alpha < 0:
        raise ValueError(f"the boundary weight alpha must be >= 0, got {alpha}")
    labels = labels.long()
    valid = labels != ignore_index
    rows = pixel_rows(logits).to(torch.promote_types(logits.dtype, torch.float32))
    ce = F.cross_entropy(rows, labels.reshape(-1), ignore_index=ignore_index, reduction="none")
    weights = torch.ones(labels.shape, dtype=ce.dtype, device=ce.device)
    weights.masked_fill_(boundary & valid, float(alpha))
    loss, per_image = pixel_means(weights.reshape(-1) * ce, valid, reduction)
    return BoundaryWeightResult(loss=loss, weights=weights, per_image=per_image)
