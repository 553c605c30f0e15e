"""Granular Adaptive Prototypes (GAP), Eqs. 3-6: a (class x granularity) bank of boundary
prototypes, updated pixel by pixel with momentum, and a weighted prototype InfoNCE loss.

    B_g       = Dilate(M_d, k_g) - Erode(M_d, k_g),  k_g in (3, 5, 7)                 (Eq. 3)
    p_{c,g}  <- m p_{c,g} + (1 - m) f                 for each boundary pixel, in turn  (Eq. 4)
    L_GAP     = -(1/N) sum_i w_{c_i,g_i} log softmax_{(c',g')}(<f_i, p_{c',g'}> / tau)[c_i,g_i]
                                                                                          (Eq. 5)
    w_{c,g}   = (max(u) + 1) / (u_{c,g} + 1) / Z,  Z such that max w = 1                  (Eq. 6)

The objective that adds this term to the segmentation loss (Eq. 9) is ``objective.py``.

Decisions the paper leaves open:

* Granularity of a pixel. The masks of growing kernels are nested (thin within medium within
  thick), while Eq. 5 gives every boundary pixel a single coordinate (c_i, g_i). Each pixel is
  assigned to its finest granularity, so the three granularities are disjoint bands at distance
  1, 2 and 3 (feature pixels) from the nearest other class.
* Pixel order of Eq. 4: batch, then raster order (row by row) at the feature resolution, each
  pixel once; in DDP the processes' pixels are concatenated rank by rank first. The vectorized
  update equals this sequential loop: a prototype receiving f_1..f_n becomes
  m^n p_0 + (1 - m) sum_k m^(n-k) f_k, the powers taken from each pixel's rank in its group
  (no division by m^k, so nothing overflows; m^n may underflow to 0, which is exact enough).
* Features are L2-normalized before the update: Eq. 5 compares directions (cosine), and the
  EMA should not let pixels with large activations dominate a prototype.
* Initialization: a prototype with u = 0 takes the first feature assigned to it, then continues
  with Eq. 4 (a momentum update from a zero vector would keep a prototype near 0 for ~1/(1-m)
  pixels).
* Order of loss and update: the loss uses the bank as it was before this batch, and the bank is
  then updated with detached features. Prototypes never receive gradients.
* Prototypes that were never updated (u = 0) have no direction: they are left out of the softmax
  denominator, and pixels whose own prototype is uninitialized are left out of the loss and of N.
  With no boundary pixel left the loss is an exact zero that still belongs to the graph.
* Eq. 6 is computed over the initialized prototypes (those that can appear in the loss) with
  the counts from before the update; Z = max over them, so the least-updated prototype gets 1.
  Note the consequence of the paper's formula: as counts grow, a frequent prototype's weight
  falls like (min u + 1) / (u + 1).
* The label goes to the feature resolution by a majority vote per cell (``downsample_labels``).
* The bank lives outside the segmentor: it is saved with the checkpoint via its buffers
  (``state_dict``). In DDP every process gathers all processes' boundary features
  (``gather_for_update``) and applies the same update, so the banks stay identical.
* ``update_images`` n (SHADE's doubled batch, ``flexseg.shade``): the loss reads every image's
  boundary pixels, the update only those of the first n images (the original half).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from flexseg.labels import IGNORE_INDEX, NUM_CLASSES
from flexseg.losses.boundary import downsample_labels, granularity_masks


@dataclass
class UpdateBatch:
    """Boundary features and their prototype coordinates, in update order."""

    features: torch.Tensor  # (N, D)
    classes: torch.Tensor  # (N,) int64
    grans: torch.Tensor  # (N,) int64
    images: torch.Tensor | None = None  # (N,) int64: the batch image of each row


@dataclass
class GAPResult:
    loss: torch.Tensor  # scalar, differentiable
    num_pixels: int  # boundary pixels that entered the loss (N of Eq. 5)
    num_boundary: int  # boundary pixels found in this process's batch (all used for the update)


class PrototypeBank(nn.Module):
    """The C x G x D prototypes p_{c,g} and their update counts u_{c,g}, as buffers."""

    def __init__(self, num_classes: int, num_granularities: int = 3, dim: int = 256) -> None:
        super().__init__()
        if num_classes < 1 or num_granularities < 1 or dim < 1:
            raise ValueError(
                f"PrototypeBank needs positive sizes, got num_classes={num_classes}, "
                f"num_granularities={num_granularities}, dim={dim}"
            )
        self.num_classes = num_classes
        self.num_granularities = num_granularities
        self.dim = dim
        self.register_buffer("prototypes", torch.zeros(num_classes, num_granularities, dim))
        self.register_buffer(
            "counts", torch.zeros(num_classes, num_granularities, dtype=torch.long)
        )

    @property
    def initialized(self) -> torch.Tensor:
        """(C, G) bool: prototypes that have received at least one feature."""
        return self.counts > 0

    def _check_rows(
        self, features: torch.Tensor, classes: torch.Tensor, grans: torch.Tensor
    ) -> None:
        n = features.shape[0]
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be (N, {self.dim}), got {tuple(features.shape)}")
        if tuple(classes.shape) != (n,) or tuple(grans.shape) != (n,):
            raise ValueError(
                f"classes {tuple(classes.shape)} and grans {tuple(grans.shape)} must be ({n},)"
            )
        if n == 0:
            return
        for name, values, limit in (
            ("class", classes, self.num_classes),
            ("granularity", grans, self.num_granularities),
        ):
            lowest, highest = torch.aminmax(values)
            if int(lowest) < 0 or int(highest) >= limit:
                bad = (values < 0) | (values >= limit)
                raise ValueError(
                    f"{name} index {int(values[bad][0])} is outside the prototype bank (0..{limit - 1})"
                )

    @torch.no_grad()
    def update(
        self,
        features: torch.Tensor,
        classes: torch.Tensor,
        grans: torch.Tensor,
        momentum: float,
    ) -> None:
        """Eq. 4 for every row of ``features`` in the given order (vectorized), counts u += n.

        In DDP pass the gathered rows of all processes, rank-major (``gather_for_update``).
        """
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self._check_rows(features, classes, grans)
        if features.shape[0] == 0:
            return
        device = self.prototypes.device
        gid = classes.to(device).long() * self.num_granularities + grans.to(device).long()
        self._update_groups(features, gid, momentum, unit=False)

    @torch.no_grad()
    def _update_groups(
        self, features: torch.Tensor, gid: torch.Tensor, momentum: float, unit: bool
    ) -> None:
        """``update`` for checked rows and their flat prototype index ``class * G + granularity``;
        ``unit``: the rows are unit length already."""
        n_rows = features.shape[0]
        dtype, device = self.prototypes.dtype, self.prototypes.device
        groups = self.num_classes * self.num_granularities
        feats = features.detach().to(device=device, dtype=dtype)
        flat = self.prototypes.view(groups, self.dim)

        n_per_group = torch.bincount(gid, minlength=groups)
        order = torch.argsort(gid, stable=True)
        ends = torch.cumsum(n_per_group, 0)  # one past each group's run in the sorted order
        # Pixels of the same prototype after this one: the run's end minus the sorted position.
        later = torch.empty_like(gid)
        later[order] = ends[gid[order]] - torch.arange(1, n_rows + 1, device=device)
        if not unit:
            # F.normalize's x / max(|x|, eps), folded into the row coefficients below: no
            # normalized (N, D) copy next to the weighted one (N = 4000, D = 256, one CPU thread:
            # the update went from 4.4 to 0.9 ms; big temporaries cost page faults there).
            scale = 1.0 / torch.linalg.vector_norm(feats, dim=1).clamp_min(1e-12)
        # A prototype that has never been updated starts from its first pixel: with p_0 = f_1
        # the momentum steps give p_1 = m f_1 + (1 - m) f_1 = f_1, so seeding it and then
        # applying Eq. 4 to all of its pixels (f_1 included) is the documented initialization.
        new = (n_per_group > 0) & (self.counts.view(-1) == 0)
        if bool(new.any()):
            fresh = new.nonzero().squeeze(1)
            first = order.index_select(0, ends.index_select(0, fresh) - n_per_group[fresh])
            seed = feats.index_select(0, first)
            flat[fresh] = seed if unit else seed * scale.index_select(0, first)[:, None]
        # Eq. 4 unrolled: p_n = m^n p_0 + (1 - m) sum_k m^(n - k) f_k.
        coef = ((1.0 - momentum) * torch.pow(momentum, later.double())).to(dtype)
        if not unit:
            coef = coef * scale
        keep = torch.pow(momentum, n_per_group.double()).to(dtype)
        _add_rows(flat, keep, gid, coef, feats, matmul=device.type != "cpu")
        self.counts += n_per_group.view_as(self.counts)


def _add_rows(
    base: torch.Tensor,
    keep: torch.Tensor,
    rows: torch.Tensor,
    coef: torch.Tensor,
    feats: torch.Tensor,
    matmul: bool,
) -> None:
    """In place: ``base`` (G, D) rows scaled by ``keep`` (G,), then coef[n] * feats[n] added to
    row rows[n], for every n.

    Both ways give the same sum up to rounding, and each gives the same bits on every DDP
    process from the same gathered rows. On a GPU a (G x N) mixing matrix and one matmul (an
    index_add there uses atomics, whose order varies). On a CPU index_add adds the rows one
    after another in a fixed order, for O(N D) work instead of the matmul's O(G N D).
    """
    base.mul_(keep[:, None])
    if matmul:
        mix = torch.zeros(base.shape[0], rows.shape[0], dtype=base.dtype, device=base.device)
        mix[rows, torch.arange(rows.shape[0], device=base.device)] = coef
        base.add_(mix @ feats)
    else:
        base.index_add_(0, rows, feats * coef[:, None])


def imbalance_weights(counts: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 6: w = (max u + 1) / (u + 1), divided by its maximum so that max w = 1.

    ``active`` (bool, like ``counts``) restricts max u and the normalization to some prototypes
    (GAP passes the initialized ones); inactive entries get weight 0. Returns float64.

    The largest weight is the least-updated prototype's, (max u + 1) / (min u + 1), so the
    normalized weights are (min u + 1) / (u + 1): max u cancels and is never computed.
    """
    u = counts.to(torch.float64)
    if active is None:
        active = torch.ones_like(u, dtype=torch.bool)
    if active.shape != u.shape:
        raise ValueError(f"active {tuple(active.shape)} must match counts {tuple(u.shape)}")
    lowest = float(torch.where(active, u, math.inf).amin()) if u.numel() else math.inf
    if lowest == math.inf:  # nothing active
        return torch.zeros_like(u)
    if lowest < 0:
        raise ValueError("update counts must be non-negative")
    return torch.where(active, (lowest + 1.0) / (u + 1.0), 0.0)


def prototype_info_nce(
    features: torch.Tensor,
    classes: torch.Tensor,
    grans: torch.Tensor,
    bank: PrototypeBank,
    temperature: float = 0.07,
) -> GAPResult:
    """Eq. 5 for boundary features (N, D) with coordinates (classes, grans), against the bank as
    it is now (no update). Uninitialized prototypes are masked out, see the module notes."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    bank._check_rows(features, classes, grans)
    gid = classes.long() * bank.num_granularities + grans.long()
    return _info_nce(_unit(features), gid, bank, temperature)


def _unit(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length, in float32 at least (autocast may hand in bf16 features;
    float64 stays float64)."""
    return F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=1)


def _info_nce(
    unit: torch.Tensor, gid: torch.Tensor, bank: PrototypeBank, temperature: float
) -> GAPResult:
    """Eq. 5 for checked unit-length rows and their flat prototype index ``gid``."""
    total = unit.shape[0]
    counts = bank.counts.reshape(-1).to(gid.device)
    initialized = counts > 0
    keep = initialized[gid]
    num = int(keep.sum())
    if num == 0:
        return GAPResult(loss=unit.sum() * 0.0, num_pixels=0, num_boundary=total)
    feats = unit[keep] if num < total else unit
    gid = gid[keep] if num < total else gid
    # Every prototype is a column; an uninitialized one (a zero row) gets the logit -inf, which
    # adds exactly zero to the softmax denominator and receives zero gradient: the same softmax
    # as over the initialized prototypes alone. 1 / tau scales the product, not the N x K
    # logits afterwards.
    protos = bank.prototypes.reshape(-1, bank.dim).detach().to(feats.device, feats.dtype)
    absent = torch.where(initialized, 0.0, -math.inf).to(feats.dtype)
    logits = torch.addmm(absent, feats, F.normalize(protos, dim=1).t(), alpha=1.0 / temperature)
    weights = imbalance_weights(counts, initialized).to(feats.dtype)
    # Class-weighted CE summed: -sum_i w[t_i] log softmax(logits_i)[t_i], the numerator of Eq. 5.
    loss = F.cross_entropy(logits, gid, weight=weights, reduction="sum") / num
    return GAPResult(loss=loss, num_pixels=num, num_boundary=total)


def boundary_features(
    features: torch.Tensor,
    labels: torch.Tensor,
    kernels: Sequence[int] = (3, 5, 7),
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> UpdateBatch:
    """The boundary pixels of Eq. 3 at the feature resolution, each with its class and finest
    granularity, in batch-then-raster order. ``features`` keep their gradient."""
    if features.dim() != 4:
        raise ValueError(f"features must be (B, D, h, w), got shape {tuple(features.shape)}")
    if labels.dim() != 3 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be (B, H, W) with B = {features.shape[0]}, got {tuple(labels.shape)}"
        )
    kernels = list(kernels)
    if any(b <= a for a, b in zip(kernels, kernels[1:], strict=False)):
        raise ValueError(f"GAP kernels must be strictly increasing (thin to thick), got {kernels}")
    batch, dim, height, width = features.shape
    small = downsample_labels(
        labels, (height, width), num_classes=num_classes, ignore_index=ignore_index
    )
    masks = granularity_masks(small, kernels, ignore_index=ignore_index)
    # The masks nest, so the thickest holds every boundary pixel and a pixel's finest
    # granularity is the number of masks that miss it.
    index = masks[:, -1].reshape(-1).nonzero().squeeze(1)  # batch, then raster order
    finest = len(kernels) - masks.sum(dim=1)
    if features.is_contiguous(memory_format=torch.channels_last):
        # Channels-last (what the trainer runs): a (B h w, D) view; each pixel is one row.
        rows = features.permute(0, 2, 3, 1).reshape(-1, dim).index_select(0, index)
    else:
        # Select columns of a (D, B h w) copy, then transpose only the N chosen rows: the copy
        # moves whole (h w) planes, and index_select's backward is one index_add. A (B h w, D)
        # copy would transpose every pixel (on a CPU that copy and its backward cost more than
        # the rest of the gather).
        planes = features.reshape(batch, dim, height * width).transpose(0, 1)
        columns = planes.reshape(dim, batch * height * width).index_select(1, index)
        rows = columns.t().contiguous()
    return UpdateBatch(
        features=rows,
        classes=small.reshape(-1).index_select(0, index),
        grans=finest.reshape(-1).index_select(0, index),
        images=index // (height * width),
    )


def gather_for_update(
    features: torch.Tensor, classes: torch.Tensor, grans: torch.Tensor
) -> UpdateBatch:
    """All processes' (features, classes, grans), concatenated rank by rank.

    Without an initialized process group (or with one process) the inputs come back as they are.
    Row counts may differ between processes: rows are padded to the longest for all_gather and
    cut back afterwards. Collective: every process must call it.
    """
    features = features.detach()
    if not _distributed():
        return UpdateBatch(features=features, classes=classes, grans=grans)
    world = dist.get_world_size()
    device = features.device
    count = torch.tensor([features.shape[0]], dtype=torch.long, device=device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    longest = max(sizes)
    dim = features.shape[1]
    padded = features.new_zeros(longest, dim)
    padded[: sizes[dist.get_rank()]] = features
    ids = torch.zeros(longest, 2, dtype=torch.long, device=device)
    ids[: sizes[dist.get_rank()]] = torch.stack([classes.long(), grans.long()], dim=1)
    all_feats = [torch.empty_like(padded) for _ in range(world)]
    all_ids = [torch.empty_like(ids) for _ in range(world)]
    dist.all_gather(all_feats, padded.contiguous())
    dist.all_gather(all_ids, ids)
    feats = torch.cat([f[:n] for f, n in zip(all_feats, sizes, strict=True)])
    coords = torch.cat([i[:n] for i, n in zip(all_ids, sizes, strict=True)])
    return UpdateBatch(features=feats, classes=coords[:, 0], grans=coords[:, 1])


def gap_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    bank: PrototypeBank,
    kernels: Sequence[int] = (3, 5, 7),
    temperature: float = 0.07,
    momentum: float = 0.99,
    update: bool = True,
    ignore_index: int = IGNORE_INDEX,
    update_images: int | None = None,
) -> GAPResult:
    """L_GAP (Eq. 5) for decoder features (B, D, h, w) and full-resolution labels (B, H, W),
    computed against the bank as it was before this batch; then, if ``update``, the bank takes
    this batch's (in DDP: all processes') boundary features by Eq. 4 (with ``update_images``
    n: those of the batch's first n images only)."""
    if len(kernels) != bank.num_granularities:
        raise ValueError(
            f"{len(kernels)} GAP kernels {list(kernels)} for a bank of "
            f"{bank.num_granularities} granularities"
        )
    if features.dim() == 4 and features.shape[1] != bank.dim:
        raise ValueError(f"features have {features.shape[1]} channels, the bank {bank.dim}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
    pixels = boundary_features(features, labels, kernels, bank.num_classes, ignore_index)
    # The rows come from the label map's classes and the bank's granularities: no range check.
    unit = _unit(pixels.features)
    gid = pixels.classes * bank.num_granularities + pixels.grans
    result = _info_nce(unit, gid, bank, temperature)
    # rows are in batch order: the first n images' rows are a prefix
    rows = unit.shape[0] if update_images is None else int((pixels.images < update_images).sum())
    if update and not _distributed():
        bank._update_groups(unit[:rows], gid[:rows], momentum, unit=True)
    elif update:
        batch = gather_for_update(
            pixels.features[:rows], pixels.classes[:rows], pixels.grans[:rows]
        )
        bank.update(batch.features, batch.classes, batch.grans, momentum)
    return result


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
