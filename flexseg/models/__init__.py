"""Segmentation models: MiT / ResNet encoders, DAFormer / DeepLabV2 heads, DAFormer and HRDA.

``build_model(cfg)`` turns a ``models.<name>`` config entry into a ``Segmentor``:
``architecture`` picks the class from ``ARCHITECTURES``, ``encoder`` and ``head`` the parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flexseg.labels import NUM_CLASSES
from flexseg.models.heads import DAFormerHead, DeepLabV2Head, HeadOutput
from flexseg.models.hrda import CropBox, HRDASegmentor
from flexseg.models.segmentor import (
    ModelSpec,
    Segmentor,
    SegOutput,
    build_encoder,
    build_head,
    parse_model_config,
)

ARCHITECTURES: dict[str, type[Segmentor]] = {"daformer": Segmentor, "hrda": HRDASegmentor}

__all__ = [
    "ARCHITECTURES",
    "CropBox",
    "HRDASegmentor",
    "HeadOutput",
    "ModelSpec",
    "SegOutput",
    "Segmentor",
    "build_model",
    "parse_model_config",
]


def build_model(
    cfg: Mapping[str, Any], num_classes: int = NUM_CLASSES, gap_features: bool = True
) -> Segmentor:
    """The Segmentor described by a ``models.<name>`` entry (ConfigError on a bad entry).

    ``gap_features`` False (a run with GAP off) leaves out the parameters only GAP would train
    (the DeepLabV2 head's projection), so every parameter gets a gradient, as DDP requires.
    """
    spec = parse_model_config(cfg)
    where = f"models.{spec.name}" if spec.name else "model"
    encoder = build_encoder(spec.encoder, where=f"{where}.encoder")
    head = build_head(spec.head, encoder.channels, num_classes, gap_features=gap_features)
    if ARCHITECTURES[spec.architecture] is HRDASegmentor:
        # HRDA's scale attention is a head of the decode head's kind (hrda_head.py)
        if spec.head.type == "deeplabv2":
            attention_head: DAFormerHead | DeepLabV2Head = DeepLabV2Head(
                in_channels=encoder.channels,
                num_classes=num_classes,
                dilations=spec.head.dilations,
                feature_dim=None,
            )
        else:
            attention_head = DAFormerHead(
                in_channels=encoder.channels,
                num_classes=num_classes,
                embed_dim=spec.hrda.attention_embed_dim,
                fusion_dim=spec.hrda.attention_embed_dim,
                dropout=spec.head.dropout,
                fusion="conv1x1",
            )
        return HRDASegmentor(
            encoder=encoder,
            decode_head=head,
            scale_attention_head=attention_head,
            context_scale=spec.hrda.context_scale,
            detail_crop=spec.hrda.detail_crop,
            fused_weight=spec.hrda.fused_weight,
            detail_weight=spec.hrda.detail_weight,
            test_scale_factor=spec.test_scale_factor,
            name=spec.name,
        )
    return Segmentor(
        encoder=encoder,
        decode_head=head,
        test_scale_factor=spec.test_scale_factor,
        name=spec.name,
    )
