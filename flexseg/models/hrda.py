"""HRDA: multi-resolution training and inference with a learned scale attention.

A low-resolution context view (the whole crop resized by ``context_scale``, 0.5) and a
high-resolution detail view (a ``detail_crop`` window of the full-resolution crop) go through the
same encoder and decode head. A separate scale-attention head of the decode head's kind runs on
the context features and predicts ``a`` (sigmoid; one channel per class), the trust in the detail
logits: HRDA builds it from the single-scale head's config (``hrda_head.py``), so for the DAFormer
head it is DAFormer-style with a 1x1 conv fusion instead of the ASPP, and for DeepLabV2
(ResNet-101) a DeepLabV2 head, the sum of 3x3 dilated convolutions (6 and 12) on the last stage,
without BN or dropout (``build_model``). With ``up`` the bilinear resize from the context
grid to the detail grid, the fused logits are

    fused = up((1 - a) * lr_logits) + up(a) * hr_logits_inserted

where ``hr_logits_inserted`` holds the detail logits at the crop location and zeros elsewhere
and, in training, ``a`` is zeroed outside the crop on the context grid first (HRDA's
``hrda1-512-0.1``). Training returns two outputs: the fused logits (weight ``fused_weight``, 0.9,
labels of the whole crop) and the detail logits (weight ``detail_weight``, 0.1, labels of the
detail window); there is no separate context loss because the detail crop is smaller than the
context crop.

Decisions the papers leave open or that this implementation adds:
- The detail window is drawn from the global torch RNG, one window per batch (as HRDA). Its
  corners are multiples of ``align`` = lcm(8, output_stride / context_scale): 8 for DAFormer's
  stride-4 head at scale 0.5 (HRDA's ``crop_coord_divisible`` 8), 16 for DeepLabV2's stride-8
  head, so the window falls on whole cells of both the context and the detail logit grids. The
  offset is drawn as HRDA's ``get_crop_bbox`` draws it, ``randint((margin + 1) // align) *
  align`` with margin = side - detail_crop: 0..504 for a 512 window in a 1024 crop (the window
  flush with the far edge, 512, is never drawn), and 0 when the window spans the side. Training
  crops must have sides divisible by ``align``; a crop smaller than ``detail_crop`` uses a detail
  window of the whole side.
- GAP features: the fused output carries the context branch's decoder feature (stride
  ``output_stride / context_scale`` of the crop), the detail output the detail branch's.
  The ImageNet feature distance uses the context branch's last stage (HRDA's feature_scale 0.5);
  the detail output carries no stage features, so the distance is counted once.
- Inference (``predict``): context = the whole input x ``context_scale``; detail = the
  full-resolution input in overlapping ``detail_crop`` tiles with stride ``detail_crop / 2``
  (mmseg's sliding-window placement: the last tile is flush with the border); attention
  everywhere. Unlike HRDA, which fuses on the stride-4 grid, each tile's logits are resized to
  the tile's pixel size, averaged where tiles overlap, and the fusion is done at the input
  resolution; this accepts any input size and differs from HRDA only by the order of two
  bilinear interpolations. Tiles go through the network in chunks of ``TILE_CHUNK`` images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from flexseg.models.encoders import MiTEncoder, ResNetEncoder
from flexseg.models.heads import DAFormerHead, DeepLabV2Head, resize
from flexseg.models.segmentor import Segmentor, SegOutput, check_batch

TILE_CHUNK = 16


@dataclass(frozen=True)
class CropBox:
    """A window of the full-resolution input: rows y0:y1, columns x0:x1 (pixels)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Sliding-window starts covering ``length``; the last window is flush with the end."""
    count = max(math.ceil((length - tile) / stride), 0) + 1
    return sorted({min(i * stride, length - tile) for i in range(count)})


class HRDASegmentor(Segmentor):
    """A Segmentor with HRDA's context/detail views and scale-attention fusion."""

    def __init__(
        self,
        encoder: MiTEncoder | ResNetEncoder,
        decode_head: DAFormerHead | DeepLabV2Head,
        scale_attention_head: DAFormerHead | DeepLabV2Head,
        context_scale: float = 0.5,
        detail_crop: int = 512,
        fused_weight: float = 0.9,
        detail_weight: float = 0.1,
        test_scale_factor: float = 1.0,
        name: str = "",
    ) -> None:
        super().__init__(encoder, decode_head, test_scale_factor=test_scale_factor, name=name)
        self.scale_attention_head = scale_attention_head
        if not 0.0 < context_scale <= 1.0:
            raise ValueError(f"hrda.context_scale must be in (0, 1], got {context_scale}")
        context_factor = self.output_stride / context_scale
        if abs(context_factor - round(context_factor)) > 1e-6:
            raise ValueError(
                f"hrda.context_scale {context_scale}: the head stride {self.output_stride} divided "
                "by it must be a whole number, so that context and detail logit grids line up"
            )
        self.context_scale = float(context_scale)
        # pixels of the full-resolution input per cell of the context logit grid
        self.context_factor = int(round(context_factor))
        self.align = math.lcm(8, self.context_factor)
        if detail_crop % self.align:
            raise ValueError(
                f"hrda.detail_crop {detail_crop} must be a multiple of {self.align} "
                f"(lcm of 8 and head stride / context_scale)"
            )
        self.detail_crop = int(detail_crop)
        self.fused_weight = float(fused_weight)
        self.detail_weight = float(detail_weight)

    # -- the two views ------------------------------------------------------------------------

    def context_size(self, height: int, width: int) -> tuple[int, int]:
        return (
            max(1, int(round(height * self.context_scale))),
            max(1, int(round(width * self.context_scale))),
        )

    def sample_detail_box(self, height: int, width: int) -> CropBox:
        """A random detail window with corners on multiples of ``align`` (global torch RNG),
        offsets drawn as HRDA's ``get_crop_bbox`` (see the module doc)."""
        self._check_training_size(height, width)
        crop_h, crop_w = min(self.detail_crop, height), min(self.detail_crop, width)
        y0 = self._offset(height - crop_h)
        x0 = self._offset(width - crop_w)
        return CropBox(y0, y0 + crop_h, x0, x0 + crop_w)

    def _offset(self, margin: int) -> int:
        choices = max((margin + 1) // self.align, 1)
        return int(torch.randint(choices, ()).item()) * self.align

    def _check_training_size(self, height: int, width: int) -> None:
        if height % self.align or width % self.align:
            raise ValueError(
                f"HRDA training crops need sides divisible by {self.align}; got {height}x{width} "
                "(set training.crop_size accordingly)"
            )

    def _check_box(self, box: CropBox, height: int, width: int) -> None:
        inside = 0 <= box.y0 < box.y1 <= height and 0 <= box.x0 < box.x1 <= width
        aligned = all(v % self.align == 0 for v in (box.y0, box.y1, box.x0, box.x1))
        if not (inside and aligned):
            raise ValueError(
                f"detail window {box} must lie inside the {height}x{width} crop with corners on "
                f"multiples of {self.align}"
            )

    def attention(self, context_feats: list[torch.Tensor]) -> torch.Tensor:
        """The scale attention ``a`` (B, C, h, w) on the context logit grid."""
        return torch.sigmoid(self.scale_attention_head(context_feats).logits)

    def fuse(
        self,
        lr_logits: torch.Tensor,
        attention: torch.Tensor,
        hr_logits: torch.Tensor,
        box: CropBox,
        size: tuple[int, int],
    ) -> torch.Tensor:
        """Training fusion on the detail logit grid ``size`` (= crop size / output_stride)."""
        s, f = self.output_stride, self.context_factor
        mask = F.pad(
            attention.new_ones(attention.shape[0], 1, box.height // f, box.width // f),
            (
                box.x0 // f,
                lr_logits.shape[-1] - box.x1 // f,
                box.y0 // f,
                lr_logits.shape[-2] - box.y1 // f,
            ),
        )
        attention = attention * mask
        inserted = F.pad(
            hr_logits, (box.x0 // s, size[1] - box.x1 // s, box.y0 // s, size[0] - box.y1 // s)
        )
        return resize((1 - attention) * lr_logits, size) + resize(attention, size) * inserted

    # -- training and inference ----------------------------------------------------------------

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor, detail_box: CropBox | None = None
    ) -> list[SegOutput]:
        check_batch(images, labels)
        height, width = images.shape[-2:]
        self._check_training_size(height, width)
        box = self.sample_detail_box(height, width) if detail_box is None else detail_box
        self._check_box(box, height, width)

        context = resize(images, self.context_size(height, width))
        lr_feats, lr_out = self.encode_decode(context)
        attention = self.attention(lr_feats)
        detail = images[:, :, box.y0 : box.y1, box.x0 : box.x1]
        _, hr_out = self.encode_decode(detail)

        grid = (height // self.output_stride, width // self.output_stride)
        fused = self.fuse(lr_out.logits, attention, hr_out.logits, box, grid)
        labels = labels.long()
        return [
            SegOutput(
                logits=fused,
                features=lr_out.features,
                labels=labels,
                weight=self.fused_weight,
                stage_features=lr_feats[-1],
            ),
            SegOutput(
                logits=hr_out.logits,
                features=hr_out.features,
                labels=labels[:, box.y0 : box.y1, box.x0 : box.x1],
                weight=self.detail_weight,
                stage_features=None,
            ),
        ]

    def detail_boxes(self, height: int, width: int) -> list[CropBox]:
        """The overlapping detail tiles ``predict`` covers an input with."""
        tile_h, tile_w = min(self.detail_crop, height), min(self.detail_crop, width)
        return [
            CropBox(y, y + tile_h, x, x + tile_w)
            for y in tile_starts(height, tile_h, max(1, tile_h // 2))
            for x in tile_starts(width, tile_w, max(1, tile_w // 2))
        ]

    def predict_detail(self, images: torch.Tensor) -> torch.Tensor:
        """Detail logits at the input resolution, averaged over overlapping tiles."""
        batch, _, height, width = images.shape
        boxes = self.detail_boxes(height, width)
        total = images.new_zeros(batch, self.num_classes, height, width)
        count = images.new_zeros(1, 1, height, width)
        tiles = [(box, images[:, :, box.y0 : box.y1, box.x0 : box.x1]) for box in boxes]
        per_chunk = max(1, TILE_CHUNK // batch)
        for start in range(0, len(tiles), per_chunk):
            chunk = tiles[start : start + per_chunk]
            _, out = self.encode_decode(torch.cat([t for _, t in chunk], dim=0))
            for k, (box, _) in enumerate(chunk):
                logits = resize(out.logits[k * batch : (k + 1) * batch], (box.height, box.width))
                total[:, :, box.y0 : box.y1, box.x0 : box.x1] += logits
                count[:, :, box.y0 : box.y1, box.x0 : box.x1] += 1
        return total / count

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        check_batch(images)
        size = tuple(images.shape[-2:])
        lr_feats, lr_out = self.encode_decode(resize(images, self.context_size(*size)))
        attention = self.attention(lr_feats)
        hr_logits = self.predict_detail(images)
        return resize((1 - attention) * lr_out.logits, size) + resize(attention, size) * hr_logits

    def encode_last_stage(self, images: torch.Tensor) -> torch.Tensor:
        """The context view's last encoder stage (what the fused output's stage_features are)."""
        return self.encoder(resize(images, self.context_size(*images.shape[-2:])))[-1]
