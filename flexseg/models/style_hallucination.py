"""SHADE's style hallucination (Zhao et al., ECCV 2022), as HRDA's DG recipe uses it.

After the encoder's first stage (MiT: stage 1; ResNet: the stem, after its max-pool), in
training only, each image's feature x (C channels) is re-styled with a random convex
combination of K basis styles (mu_k, sigma_k), and the batch continues as [original; stylized]:

    mu(x)_c    = mean_(h, w) x_c          sigma(x)_c = std_(h, w) x_c + 1e-7    (detached)
    w          ~ Dirichlet(alpha, ..., alpha)        (K weights per image, alpha = 0.0156)
    mu'        = sum_k w_k mu_k           sigma'     = sum_k w_k sigma_k
    x'         = (x - mu(x)) / sigma(x) * sigma' + mu'
    output     = cat([x, x'])                                     (2B images)

The basis (K x C means and stds) is chosen from the source images' first-stage statistics by
farthest point sampling (``farthest_point_sampling``; the pass over the source set and its
schedule are ``flexseg.shade``'s). Facts from the anchor (HRDA dg,
``mmseg/models/utils/style_hallucination.py``, ``mix_transformer.py`` forward_features):
unbiased std, 1e-7 added to the std of the feature being normalized (not to the basis), the
statistics and the weights detached, the stylized feature continuing through the rest of the
encoder and also being the first-stage output the decoder reads.

Decisions:

* The weights are drawn from the global torch generator of the feature's device, as the anchor
  does; a checkpoint saves that generator (``flexseg.distributed.RandomState``), so a resumed
  run draws the same weights.
* The statistics are computed in float32 whatever the autocast dtype; the stylized feature is
  cast back to the feature's dtype.
* The basis buffers are not persistent: ``model.pt`` stays loadable by a model built without
  SHADE (evaluation never stylizes); the training checkpoint saves the basis on its own.
* Farthest point sampling runs in float64 on the CPU (N x 2C points, cheap), so every process
  that holds the same points picks the same basis. With fewer points than K it goes on as the
  anchor's loop does: once every point is taken all distances are 0 and the first point is
  picked again, so the basis repeats styles.
"""

from __future__ import annotations

import torch
from torch import nn

STD_EPS = 1e-7


def channel_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and unbiased std over (h, w) of a (B, C, h, w) feature, in
    float32 at least: two (B, C) tensors."""
    if x.dim() != 4:
        raise ValueError(f"a style feature must be (B, C, h, w), got shape {tuple(x.shape)}")
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    return x.mean(dim=(2, 3)), x.std(dim=(2, 3))


def style_vectors(x: torch.Tensor) -> torch.Tensor:
    """The (B, 2C) style of each image: its channel means, then its channel stds."""
    mean, std = channel_statistics(x)
    return torch.cat([mean, std], dim=1)


def farthest_point_sampling(points: torch.Tensor, count: int, first: int) -> torch.Tensor:
    """Indices (count,) of ``points`` (N, D) chosen by farthest point sampling with squared
    Euclidean distances, starting from point ``first``: each next point is the one farthest
    from all chosen so far (the first such on ties)."""
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be a non-empty (N, D) matrix, got {tuple(points.shape)}")
    if count < 1:
        raise ValueError(f"need at least one point to choose, got {count}")
    if not 0 <= first < points.shape[0]:
        raise ValueError(f"first point {first} is outside 0..{points.shape[0] - 1}")
    pts = points.detach().to("cpu", torch.float64)
    nearest = torch.full((pts.shape[0],), float("inf"), dtype=torch.float64)
    chosen = torch.empty(count, dtype=torch.long)
    index = first
    for i in range(count):
        chosen[i] = index
        nearest = torch.minimum(nearest, (pts - pts[index]).square().sum(dim=1))
        index = int(torch.argmax(nearest))
    return chosen


class StyleHallucination(nn.Module):
    """Doubles a (B, C, h, w) feature to [x; x'] with the re-styling of the module doc."""

    def __init__(self, channels: int, basis_styles: int, concentration: float) -> None:
        super().__init__()
        if channels < 1 or basis_styles < 1:
            raise ValueError(
                f"need channels >= 1 and basis_styles >= 1, got {channels}, {basis_styles}"
            )
        if concentration <= 0:
            raise ValueError(f"the Dirichlet concentration must be positive, got {concentration}")
        self.channels, self.basis_styles = int(channels), int(basis_styles)
        self.concentration = float(concentration)
        self.register_buffer("basis_mean", torch.zeros(basis_styles, channels), persistent=False)
        self.register_buffer("basis_std", torch.zeros(basis_styles, channels), persistent=False)
        self.has_basis = False

    def set_basis(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Take the (K, C) basis means and stds."""
        shape = (self.basis_styles, self.channels)
        if tuple(mean.shape) != shape or tuple(std.shape) != shape:
            raise ValueError(
                f"a basis of {shape[0]} styles x {shape[1]} channels was expected, got means "
                f"{tuple(mean.shape)} and stds {tuple(std.shape)}"
            )
        self.basis_mean.copy_(mean)
        self.basis_std.copy_(std)
        self.has_basis = True

    def mixing_weights(self, batch: int, device: torch.device) -> torch.Tensor:
        """(batch, K) Dirichlet weights, one convex combination of the basis per image."""
        alpha = torch.full((self.basis_styles,), self.concentration, device=device)
        return torch.distributions.Dirichlet(alpha).sample((batch,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_basis:
            raise RuntimeError(
                "style hallucination has no basis yet: the trainer computes it before the first "
                "iteration (flexseg.shade.StyleBasis.refresh)"
            )
        if x.shape[1] != self.channels:
            raise ValueError(
                f"a {self.channels}-channel style feature was expected, got {x.shape[1]}"
            )
        mean, std = channel_statistics(x.detach())
        # (x - mu) / sigma * sigma' + mu', as one scale and shift per image and channel
        weights = self.mixing_weights(x.shape[0], x.device)
        new_mean = weights @ self.basis_mean.float()
        new_std = weights @ self.basis_std.float()
        scale = (new_std / (std + STD_EPS))[:, :, None, None]
        shift = (new_mean - mean * new_std / (std + STD_EPS))[:, :, None, None]
        stylized = (x.float() * scale + shift).to(x.dtype)
        return torch.cat([x, stylized], dim=0)
