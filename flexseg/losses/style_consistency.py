"""SHADE's style consistency: the Jensen-Shannon divergence between the class probabilities of
an image and of its stylized copy (Zhao et al., ECCV 2022; HRDA dg, ``mmseg/models/uda/dacs.py``
``style_consistency``).

For logits of a doubled batch [original; stylized] (2B, C, h, w), per pixel i of the first half
and its twin in the second:

    p_i = softmax(z_i)        q_i = softmax(z'_i)
    m_i = clamp((p_i + q_i) / 2, 1e-7, 1)
    KL(a || m_i) = sum_c a_c (log a_c - log m_ic)              (0 log 0 = 0)
    L_SC = 1/2 * ( (1/P) sum_i KL(q_i || m_i) + (1/P) sum_i KL(p_i || m_i) )
    P    = B h w   (every pixel of the first half)

This is the anchor's computation: the mixture clamped to [1e-7, 1] before its log, each KL
term reduced as ``kl_div(..., reduction="batchmean")`` over (B h w, C) pixel rows (the sum
divided by the number of rows), the mean of the two terms. The objective multiplies it by
``training.shade.consistency_weight`` (10, the anchor's ``style_consistency_lambda``).

Decisions:

* The logits are the head's (its stride, not upsampled to the labels), as in the anchor; for
  HRDA the fused logits only (``flexseg.losses.objective``).
* Every pixel counts, ignored label pixels too (the term needs no label).
* Gradients flow through both halves and through the mixture, as in the anchor (nothing is
  detached); the term is computed in float32 at least, whatever the autocast dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flexseg.losses.ube import pixel_rows

MIXTURE_MIN = 1e-7


def style_consistency(logits: torch.Tensor) -> torch.Tensor:
    """L_SC (unweighted) for the logits (2B, C, h, w) of [original; stylized]; a scalar."""
    if logits.dim() != 4 or logits.shape[0] % 2:
        raise ValueError(
            "style consistency needs logits (2B, C, h, w) of [original; stylized], got shape "
            f"{tuple(logits.shape)}"
        )
    rows = pixel_rows(logits.to(torch.promote_types(logits.dtype, torch.float32)))
    probs = F.softmax(rows, dim=1)
    original, stylized = probs.chunk(2)
    log_mixture = ((original + stylized) / 2).clamp(MIXTURE_MIN, 1.0).log()
    kl_stylized = F.kl_div(log_mixture, stylized, reduction="batchmean")
    kl_original = F.kl_div(log_mixture, original, reduction="batchmean")
    return (kl_stylized + kl_original) / 2
