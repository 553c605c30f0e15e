"""The demo generator's settings, read explicitly from the ``generation.demo_generator`` slice.

Every key is named here, so a key the schema accepts but this module ignores cannot exist
unnoticed, and a missing one is a ConfigError naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flexseg.config import ConfigError

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
    controlnet: DenoiserTraining


def _get(section: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in section:
        raise ConfigError(f"{where}.{key} is missing")
    return section[key]


def _section(params: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = _get(params, key, where)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.{key} must be a mapping, got {type(value).__name__}")
    return value


def _denoiser(section: Mapping[str, Any], where: str) -> DenoiserTraining:
    out = DenoiserTraining(
        steps=int(_get(section, "steps", where)),
        batch_size=int(_get(section, "batch_size", where)),
        lr=float(_get(section, "lr", where)),
        caption_dropout=float(section.get("caption_dropout", 0.0)),
    )
    if out.steps < 0 or out.batch_size < 1 or out.lr <= 0:
        raise ConfigError(
            f"{where}: steps >= 0, batch_size >= 1 and lr > 0 are required, got {out}"
        )
    if not 0.0 <= out.caption_dropout < 1.0:
        raise ConfigError(f"{where}.caption_dropout must be in [0, 1), got {out.caption_dropout}")
    return out


def settings_from_params(params: Mapping[str, Any]) -> DemoSettings:
    """The settings in a stage slice ``{"demo_generator": {...}, ...}``."""
    gen = _section(params, "demo_generator", "params")
    arch = _section(gen, "architecture", SECTION)
    vae = _section(gen, "vae", SECTION)
    architecture = Architecture(
        vae_channels=tuple(int(c) for c in _get(arch, "vae_channels", f"{SECTION}.architecture")),
        vae_layers_per_block=int(_get(arch, "vae_layers_per_block", f"{SECTION}.architecture")),
        unet_channels=tuple(int(c) for c in _get(arch, "unet_channels", f"{SECTION}.architecture")),
        text_width=int(_get(arch, "text_width", f"{SECTION}.architecture")),
        text_layers=int(_get(arch, "text_layers", f"{SECTION}.architecture")),
        condition_embedding=tuple(
            int(c) for c in _get(arch, "condition_embedding", f"{SECTION}.architecture")
        ),
    )
    settings = DemoSettings(
        seed=int(_get(gen, "seed", SECTION)),
        crop_size=int(_get(gen, "crop_size", SECTION)),
        log_every=int(_get(gen, "log_every", SECTION)),
        prediction_type=str(_get(gen, "prediction_type", SECTION)),
        train_text_encoder=bool(_get(gen, "train_text_encoder", SECTION)),
        architecture=architecture,
        vae=VaeTraining(
            steps=int(_get(vae, "steps", f"{SECTION}.vae")),
            batch_size=int(_get(vae, "batch_size", f"{SECTION}.vae")),
            crop_size=int(_get(vae, "crop_size", f"{SECTION}.vae")),
            lr=float(_get(vae, "lr", f"{SECTION}.vae")),
            kl_weight=float(_get(vae, "kl_weight", f"{SECTION}.vae")),
            chroma_weight=float(_get(vae, "chroma_weight", f"{SECTION}.vae")),
        ),
        prior=_denoiser(_section(gen, "prior", SECTION), f"{SECTION}.prior"),
        source=_denoiser(_section(gen, "source", SECTION), f"{SECTION}.source"),
        controlnet=_denoiser(_section(gen, "controlnet", SECTION), f"{SECTION}.controlnet"),
    )
    check_settings(settings)
    return settings


def check_settings(settings: DemoSettings) -> None:
    """Cross-key rules the schema cannot state."""
    arch = settings.architecture
    factor = 2 ** (len(arch.vae_channels) - 1)
    if factor != 8:
        raise ConfigError(
            f"{SECTION}.architecture.vae_channels must have 4 entries (Stable Diffusion's 8x "
            f"downsampling, which generation.sampler's tile sizes assume), got {arch.vae_channels}"
        )
    if arch.vae_layers_per_block < 0:
        raise ConfigError(
            f"{SECTION}.architecture.vae_layers_per_block must be >= 0, "
            f"got {arch.vae_layers_per_block}"
        )
    if arch.vae_layers_per_block == 0 and len(set(arch.vae_channels)) != 1:
        raise ConfigError(
            f"{SECTION}.architecture.vae_layers_per_block 0 needs equal vae_channels (no encoder "
            f"layer is left to change the width), got {list(arch.vae_channels)}"
        )
    if settings.vae.chroma_weight < 0:
        raise ConfigError(
            f"{SECTION}.vae.chroma_weight must be >= 0, got {settings.vae.chroma_weight}"
        )
    if 2 ** (len(arch.condition_embedding) - 1) != factor:
        raise ConfigError(
            f"{SECTION}.architecture.condition_embedding must have 4 entries (three stride-2 "
            f"convolutions bring the condition to the latent grid), got {arch.condition_embedding}"
        )
    for key, size in (("crop_size", settings.crop_size), ("vae.crop_size", settings.vae.crop_size)):
        if size % factor or size < factor:
            raise ConfigError(
                f"{SECTION}.{key} must be a positive multiple of {factor}, got {size}"
            )
    unet_factor = 2 ** (len(arch.unet_channels) - 1)
    if (settings.crop_size // factor) % unet_factor:
        raise ConfigError(
            f"{SECTION}.crop_size {settings.crop_size} gives a {settings.crop_size // factor}-pixel "
            f"latent, which the U-Net's {len(arch.unet_channels)} blocks cannot halve "
            f"{len(arch.unet_channels) - 1} times"
        )
    if settings.prediction_type not in ("epsilon", "v_prediction"):
        raise ConfigError(
            f"{SECTION}.prediction_type must be epsilon or v_prediction, "
            f"got {settings.prediction_type!r}"
        )
    if settings.log_every < 1:
        raise ConfigError(f"{SECTION}.log_every must be >= 1, got {settings.log_every}")
