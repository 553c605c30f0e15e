"""Uncertainty Boundary Emphasis (UBE), Eqs. 7-8: cross-entropy whose boundary pixels are
weighted by their standardized prediction entropy.

    H(x, y) = -sum_c p_c log p_c
    w(x, y) = 1 + alpha * sigmoid((H - mu_H) / (sigma_H + eps))   on boundary pixels (Eq. 7)
            = 1                                                   elsewhere
    L_UBE   = (1 / N) sum_(x, y) w(x, y) * CE(x, y)                                  (Eq. 8)

Decisions the paper leaves open:

* N counts the valid (non-ignored) pixels, so with alpha = 0 the loss is exactly the mean
  cross-entropy with ``ignore_index`` (DAFormer's loss); ignored pixels carry no loss and no
  weight (their weight is reported as 1).
* mu_H and sigma_H are taken over the valid boundary pixels of the whole batch given (in DDP: of
  this process's batch), with the population standard deviation: a single boundary pixel then
  gets sigma_H = 0 and weight 1 + alpha / 2 instead of a NaN. With no boundary pixel every weight
  is 1.
* The weights are computed without gradient (the entropy steers the emphasis; it is not itself
  a training signal). Everything is computed in float32 at least, whatever the autocast dtype.
* The logits must be at the label resolution: the trainer upsamples them (bilinear, as DAFormer
  does before its cross-entropy) and computes the boundary mask with ``boundary_mask``.

``per_image`` (each image's weighted mean CE over its valid pixels, detached) is the loss that
Hardness-Aware Sampling records per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from flexseg.labels import IGNORE_INDEX


@dataclass
class UBEResult:
    loss: torch.Tensor  # scalar, differentiable
    weights: torch.Tensor  # (B, H, W) detached pixel weights w(x, y)
    per_image: torch.Tensor  # (B,) detached weighted mean CE of each image
    entropy_mean: torch.Tensor  # scalar mu_H over valid boundary pixels (0 when there are none)
    entropy_std: torch.Tensor  # scalar sigma_H (population)
    num_boundary: torch.Tensor  # scalar int64: valid boundary pixels in the batch


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    """float32 at least (autocast may hand in bf16 logits); float64 stays float64."""
    return torch.promote_types(logits.dtype, torch.float32)


def _entropy_weights(
    logits: torch.Tensor,
    labels: torch.Tensor,
    boundary: torch.Tensor,
    alpha: float = 3.0,
    eps: float = 1e-6,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 7: (weights, mu_H, sigma_H, number of valid boundary pixels), all without gradient."""
    with torch.no_grad():
        logp = F.log_softmax(logits.detach().to(_compute_dtype(logits)), dim=1)
        entropy = -(logp.exp() * logp).sum(dim=1)
        selected = boundary & (labels != ignore_index)
        count = selected.sum()
        denom = count.clamp(min=1).to(entropy.dtype)
        mean = torch.where(selected, entropy, 0.0).sum() / denom
        var = torch.where(selected, (entropy - mean) ** 2, 0.0).sum() / denom
        std = var.sqrt()
        emphasis = 1.0 + alpha * torch.sigmoid((entropy - mean) / (std + eps))
        weights = torch.where(selected, emphasis, torch.ones_like(emphasis))
    return weights, mean, std, count


def ube_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    boundary: torch.Tensor,
    alpha: float = 3.0,
    eps: float = 1e-6,
    ignore_index: int = IGNORE_INDEX,
) -> UBEResult:
    """Eq. 8 for logits (B, C, H, W), labels (B, H, W) and a boundary mask (B, H, W)."""
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, C, H, W), got shape {tuple(logits.shape)}")
    batch, num_classes, height, width = logits.shape
    if tuple(labels.shape) != (batch, height, width):
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match logits {tuple(logits.shape)}: "
            "upsample the logits to the label size first"
        )
    if tuple(boundary.shape) != tuple(labels.shape) or boundary.dtype != torch.bool:
        raise ValueError(
            f"boundary must be a bool mask of shape {tuple(labels.shape)}, got "
            f"{boundary.dtype} {tuple(boundary.shape)}"
        )
    if alpha < 0 or eps <= 0:
        raise ValueError(f"need alpha >= 0 and eps > 0, got alpha={alpha}, eps={eps}")
    labels = labels.long()
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"label value {int(labels[bad][0])} is not a class id in 0..{num_classes - 1} "
            f"nor the ignore index {ignore_index}"
        )
    weights, mean, std, count = _entropy_weights(logits, labels, boundary, alpha, eps, ignore_index)
    ce = F.cross_entropy(
        logits.to(_compute_dtype(logits)), labels, ignore_index=ignore_index, reduction="none"
    )
    weighted = weights * ce
    loss = weighted.sum() / valid.sum().clamp(min=1)
    per_image = weighted.detach().sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp(min=1)
    return UBEResult(
        loss=loss,
        weights=weights,
        per_image=per_image,
        entropy_mean=mean,
        entropy_std=std,
        num_boundary=count,
    )
