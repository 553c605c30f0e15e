"""The encoder-decoder segmentor (DAFormer-style) and the typed ``models.<name>`` entry.

A ``Segmentor`` is an encoder (MiT or ResNet) and one decode head. Training gives a list of
``SegOutput``, the terms of the objective (``flexseg.losses.objective``): logits with their labels
and loss weight, the GAP feature and the last encoder stage (ImageNet feature distance). For
DAFormer the list has one output of weight 1, supervised with the input labels.

Decisions the paper leaves open:
- ``predict`` resizes the head's logits bilinearly (align_corners False) to the input size and
  neither switches to eval mode nor disables autograd: the caller does both.
- ``forward(images, labels)`` is ``forward_train`` and ``forward(images)`` is ``predict``, so a
  DistributedDataParallel wrapper (which hooks ``forward``) sees the training pass.
- ``param_groups`` follows DAFormer's AdamW setup: a parameter whose name contains "head" gets
  ``lr x head_lr_mult``; one whose name contains "norm" (every MiT LayerNorm: ``layer_norm``,
  ``layernorm_before/after``) gets no weight decay; both rules apply independently. Biases and
  the decoder's BN parameters keep the weight decay (mmseg names them ``bn``).
- ``encode_last_stage`` gives the encoder's last stage for the input the training pass encoded
  for ``stage_features``, so a frozen ImageNet copy built from the same config yields the
  matching features for the feature distance.
- SHADE (``flexseg.shade``): with a style hallucination attached to the encoder
  (``attach_style``) and in training mode, ``forward_train`` encodes with ``stylize=True``: every
  output then holds 2B images, [original; stylized], and its labels are the input labels twice.
  ``predict`` and ``encode_last_stage`` never stylize. ``style_features`` is the first-stage
  feature of the input as the training pass encodes it (the SHADE basis is computed from it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flexseg.config import MODEL_ENTRY, ConfigError, build, read_part
from flexseg.models.encoders import MiTEncoder, ResNetEncoder
from flexseg.models.heads import DAFormerHead, DeepLabV2Head, HeadOutput, resize

DEFAULT_DILATIONS: dict[str, tuple[int, ...]] = {"daformer": (1, 6, 12, 18), "deeplabv2": (6, 12)}


@dataclass
class SegOutput:
    """One supervised output of a training pass.

    logits: (B, C, h, w) at the head's stride; labels: (B, H, W) long, the labels these logits
    are supervised with (the trainer upsamples the logits to them); weight: the loss weight;
    features: (B, D, hf, wf), the decoder feature GAP uses (None when the model was built without
    GAP features, see ``build_model``); stage_features: the last encoder stage for the ImageNet
    feature distance, or None when this output takes no part in it.
    """

    logits: torch.Tensor
    features: torch.Tensor | None
    labels: torch.Tensor
    weight: float
    stage_features: torch.Tensor | None


# ---------------------------------------------------------------------------------------------
# The model config: a ``models.<name>`` entry, checked by workflow/schemas/models.schema.yaml


@dataclass(frozen=True)
class EncoderSpec:
    type: str
    pretrained: str | None
    config: dict[str, Any]
    name: str | None = None  # resnet only: the timm model name (the encoder's default if unset)


@dataclass(frozen=True)
class HeadSpec:
    type: str
    embed_dim: int
    fusion_dim: int
    dilations: tuple[int, ...]
    dropout: float


@dataclass(frozen=True)
class HrdaSpec:
    context_scale: float
    detail_crop: int
    fused_weight: float
    detail_weight: float
    attention_embed_dim: int


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    encoder: EncoderSpec
    head: HeadSpec
    hrda: HrdaSpec
    test_scale_factor: float
    name: str = ""


def parse_model_config(cfg: Mapping[str, Any]) -> ModelSpec:
    """A ``models.<name>`` entry (with its ``name``, as the train slice's ``model``) as a
    ModelSpec; unknown keys or values raise ConfigError naming them."""
    name = cfg.get("name") if isinstance(cfg, Mapping) else None
    data = read_part(cfg, MODEL_ENTRY, where=f"models.{name}" if name else "model")
    # per-model overrides of the training recipe (merged into the train slice's training)
    data.pop("training")
    if data["encoder"]["type"] == "mit" and data["encoder"].get("name") is not None:
        raise ConfigError(
            f"models.{name}.encoder.name: only resnet encoders take a timm model name"
        )
    # The dilations' default depends on the head type.
    data["head"].setdefault("dilations", DEFAULT_DILATIONS[data["head"]["type"]])
    return build(ModelSpec, data)


def build_encoder(spec: EncoderSpec, where: str = "encoder") -> MiTEncoder | ResNetEncoder:
    if spec.type == "mit":
        return MiTEncoder.build(spec.config, pretrained=spec.pretrained, where=where)
    return ResNetEncoder.build(spec.config, pretrained=spec.pretrained, name=spec.name, where=where)


def build_head(
    spec: HeadSpec, in_channels: Sequence[int], num_classes: int, gap_features: bool = True
) -> DAFormerHead | DeepLabV2Head:
    """The decode head; ``gap_features`` False drops the DeepLabV2 head's GAP-only projection
    (a DAFormer head's GAP feature feeds its logits and is always there)."""
    if spec.type == "daformer":
        return DAFormerHead(
            in_channels=in_channels,
            num_classes=num_classes,
            embed_dim=spec.embed_dim,
            fusion_dim=spec.fusion_dim,
            dilations=spec.dilations,
            dropout=spec.dropout,
            fusion="aspp",
        )
    return DeepLabV2Head(
        in_channels=in_channels,
        num_classes=num_classes,
        dilations=spec.dilations,
        feature_dim=spec.fusion_dim if gap_features else None,
    )


# ---------------------------------------------------------------------------------------------


def check_batch(images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    if labels is None:
        return
    expected = (images.shape[0], *images.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels must be (B, H, W) = {expected} to match the images, got {tuple(labels.shape)}"
        )


class Segmentor(nn.Module):
    """Encoder + decode head (DAFormer's encoder-decoder)."""

    def __init__(
        self,
        encoder: MiTEncoder | ResNetEncoder,
        decode_head: DAFormerHead | DeepLabV2Head,
        test_scale_factor: float = 1.0,
        name: str = "",
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decode_head = decode_head
        self.test_scale_factor = float(test_scale_factor)
        self.name = name

    @property
    def output_stride(self) -> int:
        """The stride of the logits relative to the encoder's input."""
        return int(self.encoder.strides[self.decode_head.output_level])

    @property
    def num_classes(self) -> int:
        return int(self.decode_head.num_classes)

    @property
    def gap_features(self) -> bool:
        """Whether the training outputs carry GAP features (``build_model``'s ``gap_features``)."""
        return bool(self.decode_head.gap_features)

    @property
    def stylizes(self) -> bool:
        """Whether ``forward_train`` doubles the batch with SHADE's stylized copy."""
        return self.training and getattr(self.encoder, "style", None) is not None

    def encode_decode(
        self, images: torch.Tensor, stylize: bool = False
    ) -> tuple[list[torch.Tensor], HeadOutput]:
        feats = self.encoder(images, stylize=stylize)
        return feats, self.decode_head(feats)

    def training_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The labels of a training pass's outputs: twice over when the pass stylizes."""
        labels = labels.long()
        return torch.cat([labels, labels]) if self.stylizes else labels

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor) -> list[SegOutput]:
        check_batch(images, labels)
        feats, out = self.encode_decode(images, stylize=self.stylizes)
        return [
            SegOutput(
                logits=out.logits,
                features=out.features,
                labels=self.training_labels(labels),
                weight=1.0,
                stage_features=feats[-1],
            )
        ]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        check_batch(images)
        _, out = self.encode_decode(images)
        return resize(out.logits, tuple(images.shape[-2:]))

    def encode_last_stage(self, images: torch.Tensor) -> torch.Tensor:
        """The last encoder stage of ``images`` as ``forward_train`` reports it."""
        return self.encoder(images)[-1]

    def style_features(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's first-stage feature of ``images`` (never stylized)."""
        return self.encoder.style_features(images)

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> list[SegOutput] | torch.Tensor:
        if labels is None:
            return self.predict(images)
        return self.forward_train(images, labels)

    def param_groups(
        self, lr: float, head_lr_mult: float, weight_decay: float
    ) -> list[dict[str, Any]]:
        """AdamW parameter groups: "head" in a name -> lr x head_lr_mult, "norm" -> no decay.

        Each group also carries ``name`` and ``lr_mult`` (its lr over ``lr``) for schedulers.
        """
        buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            key = ("head" in name, "norm" in name)
            buckets.setdefault(key, []).append(param)
        groups = []
        for (is_head, no_decay), params in sorted(buckets.items()):
            mult = head_lr_mult if is_head else 1.0
            groups.append(
                {
                    "name": f"{'head' if is_head else 'encoder'}_{'no_decay' if no_decay else 'decay'}",
                    "params": params,
                    "lr": lr * mult,
                    "lr_mult": mult,
                    "weight_decay": 0.0 if no_decay else weight_decay,
                }
            )
        return groups
