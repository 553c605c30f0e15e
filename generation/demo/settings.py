"""The demo generator's settings: the ``demo_generator`` stage slice, checked against the schema
(``generation.demo_generator``, which holds the defaults) and built field by field, so a key the
schema accepts but this module lacks is an error. Only the cross-key rules are written here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flexseg.config import ConfigError, build, read_stage
from generation.architecture import (
    NORM_GROUPS,
    TEXT_HEAD_WIDTH,
    UNET_HEADS,
    VAE_NORM_GROUPS,
    Sizes,
)

SECTION = "generation.demo_generator"


@dataclass(frozen=True)
class Architecture:
    """Widths of the tiny components. Four VAE blocks give Stable Diffusion's 8x downsampling."""

    vae_channels: tuple[int, ...]
    vae_layers_per_block: int
    unet_channels: tuple[int, ...]
    text_width: int
    text_layers: int
    condition_embedding: tuple[int, ...]


@dataclass(frozen=True)
class VaeTraining:
    steps: int
    batch_size: int
    crop_size: int
    lr: float
    kl_weight: float
    chroma_weight: float


@dataclass(frozen=True)
class DenoiserTraining:
    """One denoiser fit: the prior U-Net, its source fine-tune, or the ControlNet."""

    steps: int
    batch_size: int
    lr: float
    caption_dropout: float


@dataclass(frozen=True)
class ControlNetTraining(DenoiserTraining):
    """The ControlNet fit, whose zero convolutions learn at ``zero_conv_lr_mult`` x ``lr``."""

    zero_conv_lr_mult: float


@dataclass(frozen=True)
class DemoSettings:
    seed: int
    crop_size: int
    log_every: int
    prediction_type: str
    train_text_encoder: bool
    architecture: Architecture
    vae: VaeTraining
    prior: DenoiserTraining
    source: DenoiserTraining
    controlnet: ControlNetTraining


def settings_from_params(params: Mapping[str, Any]) -> DemoSettings:
    """The settings in a stage slice ``{"demo_generator": {...}}``."""
    settings = build(DemoSettings, read_stage(params, "demo_generator")["demo_generator"])
    check_settings(settings)
    return settings


def check_settings(settings: DemoSettings) -> None:
    """Cross-key rules the schema cannot state (it fixes four VAE blocks: SD's 8x downsampling,
    which generation.sampler's tile sizes assume)."""
    arch = settings.architecture
    if arch.vae_layers_per_block == 0 and len(set(arch.vae_channels)) != 1:
        raise ConfigError(
            f"{SECTION}.architecture.vae_layers_per_block 0 needs equal vae_channels (no encoder "
            f"layer is left to change the width), got {list(arch.vae_channels)}"
        )
    factor = 2 ** (len(arch.vae_channels) - 1)
    unet_factor = 2 ** (len(arch.unet_channels) - 1)
    if (settings.crop_size // factor) % unet_factor:
        raise ConfigError(
            f"{SECTION}.crop_size {settings.crop_size} gives a {settings.crop_size // factor}-pixel "
            f"latent, which the U-Net's {len(arch.unet_channels)} blocks cannot halve "
            f"{len(arch.unet_channels) - 1} times"
        )


def _check_groups(channels: tuple[int, ...], what: str) -> None:
    bad = [c for c in channels if c % NORM_GROUPS]
    if bad:
        raise ConfigError(
            f"generation.demo_generator.architecture.{what}: every width must be a multiple of "
            f"{NORM_GROUPS} (the group-norm group count), got {list(channels)}"
        )


def demo_sizes(arch: Architecture) -> Sizes:
    """The sizes of the demo generator's ``architecture`` settings."""
    _check_groups(arch.vae_channels, "vae_channels")
    _check_groups(arch.unet_channels, "unet_channels")
    if len(arch.unet_channels) < 2:
        raise ConfigError(
            "generation.demo_generator.architecture.unet_channels needs at least 2 levels, "
            f"got {list(arch.unet_channels)}"
        )
    if arch.text_width % TEXT_HEAD_WIDTH:
        raise ConfigError(
            "generation.demo_generator.architecture.text_width must be a multiple of "
            f"{TEXT_HEAD_WIDTH}, got {arch.text_width}"
        )
    return Sizes(
        unet_channels=arch.unet_channels,
        unet_layers_per_block=1,
        unet_heads=UNET_HEADS,
        unet_norm_groups=NORM_GROUPS,
        text_width=arch.text_width,
        text_layers=arch.text_layers,
        text_heads=arch.text_width // TEXT_HEAD_WIDTH,
        text_intermediate=4 * arch.text_width,
        text_vocab=0,
        vae_channels=arch.vae_channels,
        vae_layers_per_block=arch.vae_layers_per_block,
        vae_norm_groups=VAE_NORM_GROUPS,
        vae_mid_attention=False,
        condition_embedding=arch.condition_embedding,
    )
