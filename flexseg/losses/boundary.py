"""Boundary masks of multi-class label maps: Eq. 1 (B = Dilate(M, k_d) - Erode(M, k_e)) and
Eq. 3 (the thin / medium / thick masks B_g of GAP on the label downsampled to the feature map).

The paper writes the morphology for "the semantic mask M" without saying what dilating or
eroding a multi-class map means. Here it is the union over classes of the binary definition,

    B = valid  AND  OR_c ( Dilate(M_c, k_d) AND NOT Erode(M_c, k_e) ),   M_c = [M == c],

with square windows of odd side k centred on the pixel. For a pixel of class c this reduces to:
its k_e window holds a pixel of another class (it lies on the inner band of its own region), or
its k_d window does (it lies on the outer band of a neighbouring region). Every pixel belongs to
one class, so both bands meet and B is "the max(k_d, k_e) window holds another class"; the two
kernels only differ for the binary masks of the paper's figure, not for a full label map.
Max-pool dilation and min-pool erosion of the label *values* would instead depend on the class
ids' numeric order, which has no meaning.

Decisions the paper leaves open:

* Void (``ignore_index``) pixels are never boundary pixels, and they are transparent to their
  neighbours: a class/void transition is not a boundary. Void marks unlabelled regions and the
  255-padding of crops; there is no class on the other side to supervise, and the void pixel
  itself carries no loss.
* Outside the image counts as void too, so the image border is not a boundary.
* Downsampling to the feature resolution (Eq. 3's M_d, stride s = H / H_f) takes the majority
  class of each cell, void counted as one more candidate, as DAFormer's feature-distance label
  does; nearest-neighbour picking would let thin structures (poles, signs) vanish or flicker
  depending on where the sampling grid falls. The share threshold (DAFormer: 0.75, below which the
  cell is void) is a parameter; GAP uses none, because a threshold would void exactly the mixed
  cells that lie on boundaries. Ties go to the lowest class id, and a class beats void. Sizes need
  not divide: cell i covers input rows [floor(i H / h), floor((i + 1) H / h)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from flexseg.labels import IGNORE_INDEX, NUM_CLASSES


def _check_labels(labels: torch.Tensor, name: str = "labels") -> None:
    if labels.dim() != 3:
        raise ValueError(f"{name} must be (B, H, W), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")


def _check_kernel(kernel: int, name: str) -> None:
    if not isinstance(kernel, int) or isinstance(kernel, bool) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(
            f"{name} must be a positive odd integer (a centred square window), got {kernel!r}"
        )


def _has_other_class(labels: torch.Tensor, valid: torch.Tensor, kernel: int) -> torch.Tensor:
    """Whether each pixel's k x k window holds two different valid classes.

    The centre pixel is valid wherever the result is used, so "two different classes in the
    window" is "a class other than the centre's". Void and out-of-image pixels enter the pools as
    -inf and never win.
    """
    if kernel == 1:
        return torch.zeros_like(valid)
    values = labels.to(torch.float32).unsqueeze(1)
    mask = valid.unsqueeze(1)
    neg_inf = torch.tensor(float("-inf"), dtype=values.dtype, device=values.device)
    pad = kernel // 2
    high = F.max_pool2d(torch.where(mask, values, neg_inf), kernel, stride=1, padding=pad)
    low = -F.max_pool2d(torch.where(mask, -values, neg_inf), kernel, stride=1, padding=pad)
    return (high != low).squeeze(1)


def boundary_mask(
    labels: torch.Tensor,
    dilate_kernel: int,
    erode_kernel: int,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Eq. 1 for a batch of label maps (B, H, W): a bool mask (B, H, W) of boundary pixels."""
    _check_labels(labels)
    _check_kernel(dilate_kernel, "dilate_kernel")
    _check_kernel(erode_kernel, "erode_kernel")
    valid = labels != ignore_index
    # Outer band of the neighbouring classes (dilation) and inner band of the own class (erosion).
    outer = _has_other_class(labels, valid, dilate_kernel)
    inner = (
        outer if erode_kernel == dilate_kernel else _has_other_class(labels, valid, erode_kernel)
    )
    return valid & (outer | inner)


def granularity_masks(
    labels: torch.Tensor,
    kernels: Sequence[int] = (3, 5, 7),
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Eq. 3: one boundary mask per kernel k_g (dilation and erosion both k_g), stacked to
    (B, len(kernels), h, w) bool. Call it on the label at the feature resolution
    (``downsample_labels``). Growing kernels give nested masks (thin within medium within thick).
    """
    _check_labels(labels)
    if len(kernels) == 0:
        raise ValueError("kernels must name at least one kernel size")
    for k in kernels:
        _check_kernel(k, f"granularity kernel (in kernels={list(kernels)})")
    valid = labels != ignore_index
    return torch.stack([valid & _has_other_class(labels, valid, k) for k in kernels], dim=1)


def downsample_labels(
    labels: torch.Tensor,
    size: Sequence[int],
    num_classes: int = NUM_CLASSES,
    share: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """The majority class of each cell when (B, H, W) labels shrink to ``size`` = (h, w).

    Void counts as a candidate of its own; a cell whose winner holds less than ``share`` of its
    pixels becomes void (DAFormer's feature-distance label uses share = 0.75). Returns int64
    (B, h, w).
    """
    _check_labels(labels)
    if len(size) != 2:
        raise ValueError(f"size must be (h, w), got {size!r}")
    h, w = int(size[0]), int(size[1])
    batch, height, width = labels.shape
    if not (1 <= h <= height and 1 <= w <= width):
        raise ValueError(
            f"cannot downsample labels of size {height}x{width} to {h}x{w}: the target must be "
            "positive and not larger than the input"
        )
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}")
    labels = labels.long()
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(
            f"label value {value} is neither a class id in 0..{num_classes - 1} nor the ignore "
            f"index {ignore_index}"
        )
    device = labels.device
    slots = num_classes + 1  # the last slot counts void
    cls = torch.where(valid, labels, torch.full_like(labels, num_classes))
    rows = torch.arange(height, device=device) * h // height
    cols = torch.arange(width, device=device) * w // width
    cell = rows[:, None] * w + cols[None, :]
    image = torch.arange(batch, device=device)[:, None, None] * (h * w)
    flat = ((image + cell) * slots + cls).reshape(-1)
    counts = torch.bincount(flat, minlength=batch * h * w * slots).reshape(batch, h, w, slots)
    winner = counts.argmax(dim=-1)  # first maximum: lowest class id, void last
    out = torch.where(winner == num_classes, torch.full_like(winner, ignore_index), winner)
    if share > 0.0:
        cell_size = torch.bincount(cell.reshape(-1), minlength=h * w).reshape(h, w)
        top = counts.gather(-1, winner.unsqueeze(-1)).squeeze(-1)
        out = torch.where(top < share * cell_size, torch.full_like(out, ignore_index), out)
    return out
