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


def _grow(values: torch.Tensor, radius: int, dim: int, out: torch.Tensor) -> torch.Tensor:
    """The maximum over a centred window of 2 radius + 1 along ``dim``, from shifted slices,
    written to ``out`` (same shape, not ``values``). Positions outside the image are skipped,
    which is padding with max's identity."""
    out.copy_(values)
    size = values.shape[dim]
    for shift in range(1, radius + 1):
        head = out.narrow(dim, shift, size - shift)
        tail = out.narrow(dim, 0, size - shift)
        torch.maximum(head, values.narrow(dim, 0, size - shift), out=head)
        torch.maximum(tail, values.narrow(dim, shift, size - shift), out=tail)
    return out


class _WindowRange:
    """The largest and smallest valid class id in each pixel's square window, grown step by
    step: a (2r + 1) window is a (2q + 1) window's maximum over a (2(r - q) + 1) window (a square
    dilation is the Minkowski sum of smaller squares), so nested kernels share work.

    Both extrema are maxima of one stacked tensor: the ids and their bitwise complements
    (~x = -x - 1 reverses the order without overflow, so max ~x = ~min x). Void pixels hold the
    dtype's minimum, max's identity, so they never win and are transparent, as is the outside of
    the image. Separable row and column passes of shifted slices give exactly the square
    window's max-pool, for integer ids of any value, at a fraction of max_pool2d's cost on a CPU.

    The narrowest dtype that holds the ids does the passes (fewer bytes to move): uint8 for ids
    0..254, stored as id + 1 and 255 - id so that void is 0 (with void = 255 both come out of
    the wrap-around of uint8 arithmetic, no masking needed); else int16, else int64.
    """

    def __init__(self, labels: torch.Tensor, valid: torch.Tensor, ignore_index: int) -> None:
        lo, hi = (int(v) for v in torch.aminmax(labels)) if labels.numel() else (0, 0)
        self.bytes = lo >= 0 and (hi <= 254 or (hi == 255 and ignore_index == 255))
        if self.bytes:
            values = labels.to(torch.uint8)
            stacked = torch.stack([values + 1, ~values])  # void 255 -> 0 in both rows
            self.extrema = stacked if ignore_index == 255 else torch.where(valid, stacked, 0)
        else:
            info = torch.iinfo(torch.int16)
            narrow = info.min <= lo and hi <= info.max
            values = labels.to(torch.int16 if narrow else torch.int64)
            void = torch.iinfo(values.dtype).min
            self.extrema = torch.where(valid, torch.stack([values, ~values]), void)
        self._spare = torch.empty_like(self.extrema)
        self.radius = 0

    def grow_to(self, radius: int) -> None:
        if radius < self.radius:
            raise ValueError(f"cannot shrink a window from radius {self.radius} to {radius}")
        step = radius - self.radius
        if step:
            # Row pass into the spare buffer, column pass back: no allocation per step.
            _grow(_grow(self.extrema, step, -1, self._spare), step, -2, self.extrema)
        self.radius = radius

    def has_other_class(self) -> torch.Tensor:
        """Whether the window holds two different valid classes. The centre pixel is valid
        wherever the result is used, so that is "a class other than the centre's"."""
        if self.bytes:  # largest id + 1 vs smallest id + 1 (at most 255 for a valid centre)
            return self.extrema[0] != (~self.extrema[1]) + 1
        return self.extrema[0] != ~self.extrema[1]


def _other_class_masks(
    labels: torch.Tensor, valid: torch.Tensor, kernels: Sequence[int], ignore_index: int
) -> dict[int, torch.Tensor]:
    """``valid AND the k x k window holds another class`` for each distinct kernel k (bool,
    like ``labels``), the windows grown from one another."""
    masks = {k: torch.zeros_like(valid) for k in kernels if k == 1}
    todo = sorted({k for k in kernels if k > 1})
    if not todo:
        return masks
    window = _WindowRange(labels, valid, ignore_index)
    for k in todo:
        window.grow_to(k // 2)
        masks[k] = valid & window.has_other_class()
    return masks


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
    # The outer band (dilation) and the inner band (erosion) are "the k window holds another
    # class" for k_d and k_e; the windows nest, so their union is the larger window's test.
    kernel = max(dilate_kernel, erode_kernel)
    return _other_class_masks(labels, valid, [kernel], ignore_index)[kernel]


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
    masks = _other_class_masks(labels, valid, kernels, ignore_index)
    return torch.stack([masks[k] for k in kernels], dim=1)


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
    slots = num_classes + 1  # the last slot counts void
    cells = batch * h * w
    cls = torch.where(valid, labels, num_classes)
    lowest, highest = torch.aminmax(cls) if cls.numel() else (0, 0)
    # The range check misses one bad value: a valid pixel holding num_classes, void's slot.
    if (
        int(lowest) < 0
        or int(highest) > num_classes
        or (int(highest) == num_classes and bool((labels == num_classes).any()))
    ):
        bad = valid & ((labels < 0) | (labels >= num_classes))
        raise ValueError(
            f"label value {int(labels[bad][0])} is neither a class id in 0..{num_classes - 1} "
            f"nor the ignore index {ignore_index}"
        )
    flat = torch.add(
        _cell_index(batch, height, width, h, w, labels.device), cls, alpha=cells
    ).reshape(-1)
    # Slot-major counts (slots, cells): the vote below then reduces over the outer dimension,
    # which vectorizes, where a reduction over a short innermost dimension does not. One max
    # over count * slots + (slots - 1 - slot) picks the largest count and, among equal counts,
    # the lowest slot: the lowest class id first and void last. On a CPU the counts are
    # int16 when the largest cell allows it (a quarter of int64's bytes to reduce).
    most = -(-height // h) * -(-width // w) * slots + slots
    if labels.device.type == "cpu" and most <= torch.iinfo(torch.int16).max:
        counts = torch.zeros(slots * cells, dtype=torch.int16).scatter_add_(
            0, flat, torch.ones(flat.numel(), dtype=torch.int16)
        )
    else:
        counts = torch.bincount(flat, minlength=slots * cells)
    counts = counts.view(slots, cells)
    preference = torch.arange(slots - 1, -1, -1, dtype=counts.dtype, device=labels.device)
    best = (counts * slots + preference[:, None]).amax(dim=0).long()
    winner = (slots - 1) - best % slots
    out = torch.where(winner == num_classes, ignore_index, winner).view(batch, h, w)
    if share > 0.0:
        cell_size = torch.bincount(
            _cell_index(1, height, width, h, w, labels.device).reshape(-1), minlength=h * w
        )
        top = (best // slots).view(batch, h, w)
        out = torch.where(
            top < share * cell_size.view(h, w),
            torch.full_like(out, ignore_index),
            out,
        )
    return out


_CELL_INDEX: dict[tuple, torch.Tensor] = {}


def _cell_index(
    batch: int, height: int, width: int, h: int, w: int, device: torch.device
) -> torch.Tensor:
    """(batch, height, width) int64: the cell of the (batch, h, w) grid each pixel falls in, as
    image * h * w + row * w + col. Kept per shape (a training run sees one or two)."""
    key = (batch, height, width, h, w, str(device))
    index = _CELL_INDEX.get(key)
    if index is None:
        rows = torch.arange(height, device=device) * h // height
        cols = torch.arange(width, device=device) * w // width
        image = torch.arange(batch, device=device)[:, None, None] * (h * w)
        index = image + (rows[:, None] * w + cols[None, :])
        if len(_CELL_INDEX) >= 16:
            _CELL_INDEX.clear()
        _CELL_INDEX[key] = index
    return index
