"""The ImageNet feature distance (FD) of DAFormer, which the DG baseline keeps (lambda = 0.005).

    d(x, y) = || F_student(x, y) - F_ImageNet(x, y) ||_2          (norm over channels)
    L_FD    = mean of d over the locations whose downscaled label is a "thing" class

F are the last encoder stage's features (stride 32 for MiT) of the trained segmentor and of a
frozen copy with ImageNet weights, on the same image. The label is brought to the feature size
by a majority vote per cell with void as an extra class; a cell whose majority holds less than
``share`` (0.75) of its pixels is void. The thing classes are COCO-stuff's
(``flexseg.labels.THING_CLASSES``).

Decisions: the ImageNet features are detached (the frozen copy gets no gradient even if the
caller forgot ``requires_grad_(False)``); with no thing location the loss is an exact zero that
stays in the graph (DAFormer logs NaN there); the distance is computed in float32. The
trainer multiplies by the weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flexseg.labels import IGNORE_INDEX, NUM_CLASSES, THING_CLASSES
from flexseg.losses.boundary import downsample_labels


def feature_distance(
    student: torch.Tensor,
    imagenet: torch.Tensor,
    labels: torch.Tensor,
    thing_classes: Sequence[int] = THING_CLASSES,
    share: float = 0.75,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """L_FD for features (B, C, h, w) of both networks and labels (B, H, W); a scalar."""
    if student.dim() != 4 or student.shape != imagenet.shape:
        raise ValueError(
            "student and ImageNet features must both be (B, C, h, w) of equal shape, got "
            f"{tuple(student.shape)} and {tuple(imagenet.shape)}"
        )
    if labels.dim() != 3 or labels.shape[0] != student.shape[0]:
        raise ValueError(
            f"labels must be (B, H, W) with B = {student.shape[0]}, got {tuple(labels.shape)}"
        )
    bad = [c for c in thing_classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"thing classes {bad} are not class ids in 0..{num_classes - 1}")
    diff = student.float() - imagenet.detach().float()
    dist = torch.linalg.vector_norm(diff, dim=1)
    small = downsample_labels(
        labels, dist.shape[1:], num_classes=num_classes, share=share, ignore_index=ignore_index
    )
    things = torch.as_tensor(list(thing_classes), dtype=small.dtype, device=small.device)
    mask = torch.isin(small, things)
    return torch.where(mask, dist, torch.zeros_like(dist)).sum() / mask.sum().clamp(min=1)
