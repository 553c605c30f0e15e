"""Decode heads: DAFormer's context-aware fusion head and the DeepLabV2 classifier.

Every head maps the encoder's feature maps to ``HeadOutput(logits, features)``, where
``features`` is the decoder feature that FLEX-Seg's GAP builds its class prototypes from.

DAFormer head (``daformer_sepaspp``): each encoder level is projected to ``embed_dim`` by a 1x1
convolution without norm or activation (DAFormer's per-level linear layer on tokens), resized
bilinearly to the size of the shallowest level (stride 4 for MiT), and concatenated. The
context-aware fusion is an ASPP without image pooling: dilation 1 is a 1x1 conv + BN + ReLU, every
other dilation a depthwise-separable block (depthwise 3x3 dilated conv + BN + ReLU, then a
pointwise 1x1 conv to ``fusion_dim`` + BN + ReLU). The branch outputs are concatenated and reduced
by the bottleneck, a 3x3 conv to ``fusion_dim`` + BN + ReLU. The bottleneck output, before
Dropout2d and the 1x1 classifier, is the GAP feature (256-d at stride 4 in the paper). The
classifier starts from N(0, 0.01) weights and zero bias, as in mmseg's decode heads.
With ``fusion="conv1x1"`` the ASPP is dropped and the bottleneck is a 1x1 conv + BN + ReLU on
the concatenated embeddings: HRDA's scale-attention head.

DeepLabV2 head ("dlv2red"): the sum of parallel 3x3 dilated convolutions (dilations 6 and 12)
from the last encoder stage straight to class logits, without BN. It has no decoder feature, and
FLEX-Seg's prototypes are 256-d, so a 256-d projection (1x1 conv + BN + ReLU on the last stage) is
added as the GAP feature. The projection does not feed the logits: the GAP loss alone trains it,
so it is built only when GAP is on (``feature_dim=None``: no projection, ``features`` is None).
With GAP off it would receive no gradient, and DistributedDataParallel (without
``find_unused_parameters``) stops at the second iteration waiting for its reduction.

Norm layers are named ``bn`` (as mmseg's ConvModule names them), never ``norm``: the optimizer
gives parameters whose names contain "norm" no weight decay, and DAFormer's decoder BNs keep it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class HeadOutput:
    """What a decode head returns: class logits and the decoder feature used by GAP (None for a
    DeepLabV2 head built without its GAP projection)."""

    logits: torch.Tensor
    features: torch.Tensor | None


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with align_corners False (every resize of logits and features here)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableASPP(nn.Module):
    """DAFormer's context-aware fusion branches; returns their concatenation."""

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int]) -> None:
        super().__init__()
        if not dilations:
            raise ValueError("head.dilations must name at least one dilation")
        branches = []
        for d in dilations:
            if d == 1:
                branches.append(ConvBNReLU(in_channels, out_channels, 1))
            else:
                branches.append(
                    nn.Sequential(
                        ConvBNReLU(in_channels, in_channels, 3, dilation=d, groups=in_channels),
                        ConvBNReLU(in_channels, out_channels, 1),
                    )
                )
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _init_classifier(conv: nn.Conv2d) -> None:
    nn.init.normal_(conv.weight, mean=0.0, std=0.01)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class DAFormerHead(nn.Module):
    """Multi-level embedding + context-aware fusion; logits at the first level's stride."""

    # which encoder level sets the output size (and so the output stride)
    output_level = 0
    # the GAP feature is the bottleneck output, which also feeds the logits
    gap_features = True

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        embed_dim: int = 256,
        fusion_dim: int = 256,
        dilations: Sequence[int] = (1, 6, 12, 18),
        dropout: float = 0.1,
        fusion: str = "aspp",
    ) -> None:
        super().__init__()
        if fusion not in ("aspp", "conv1x1"):
            raise ValueError(f"DAFormerHead fusion must be 'aspp' or 'conv1x1', got {fusion!r}")
        self.num_classes = num_classes
        self.embed = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in in_channels)
        concat = embed_dim * len(in_channels)
        if fusion == "aspp":
            self.context: nn.Module | None = SeparableASPP(concat, fusion_dim, dilations)
            self.bottleneck = ConvBNReLU(fusion_dim * len(dilations), fusion_dim, 3)
        else:
            self.context = None
            self.bottleneck = ConvBNReLU(concat, fusion_dim, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(fusion_dim, num_classes, 1)
        _init_classifier(self.classifier)

    def forward(self, feats: Sequence[torch.Tensor]) -> HeadOutput:
        if len(feats) != len(self.embed):
            raise ValueError(
                f"DAFormerHead expects {len(self.embed)} feature maps, got {len(feats)}"
            )
        size = tuple(feats[0].shape[-2:])
        x = torch.cat(
            [resize(proj(f), size) for proj, f in zip(self.embed, feats, strict=True)], dim=1
        )
        if self.context is not None:
            x = self.context(x)
        features = self.bottleneck(x)
        logits = self.classifier(self.dropout(features))
        return HeadOutput(logits=logits, features=features)


class DeepLabV2Head(nn.Module):
    """Sum of dilated 3x3 classifiers on the last stage, plus a 256-d projection for GAP when
    ``feature_dim`` is not None."""

    output_level = -1

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        dilations: Sequence[int] = (6, 12),
        feature_dim: int | None = 256,
    ) -> None:
        super().__init__()
        if not dilations:
            raise ValueError("head.dilations must name at least one dilation")
        self.num_classes = num_classes
        last = in_channels[-1]
        self.classifiers = nn.ModuleList(
            nn.Conv2d(last, num_classes, 3, padding=d, dilation=d) for d in dilations
        )
        for conv in self.classifiers:
            _init_classifier(conv)
        self.projection = None if feature_dim is None else ConvBNReLU(last, feature_dim, 1)

    @property
    def gap_features(self) -> bool:
        return self.projection is not None

    def forward(self, feats: Sequence[torch.Tensor]) -> HeadOutput:
        x = feats[-1]
        logits = self.classifiers[0](x)
        for conv in self.classifiers[1:]:
            logits = logits + conv(x)
        features = None if self.projection is None else self.projection(x)
        return HeadOutput(logits=logits, features=features)
