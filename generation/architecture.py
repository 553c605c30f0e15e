"""Components of the Stable Diffusion 1.5 family built from their sizes, with random weights.

The classes are the stock ones Stable Diffusion 1.5 and DGInStyle use (``AutoencoderKL``,
``CLIPTextModel``, ``UNet2DConditionModel``, ``ControlNetModel``, a DDIM scheduler config), so the
generator loads a built folder exactly as it loads the real weights. One builder serves the demo
generator (``generation.demo.settings.demo_sizes``: its settings) and the random components of the
tests and benchmarks (``generation.components.random_components``: a tiny and the Stable
Diffusion 1.5 size).
Decisions the references leave open for a model this small:

- The demo VAE has no self-attention in its middle block: it is then fully convolutional, so the
  latent of a crop equals (away from the crop border) the crop of the whole image's latent, which
  lets training cache each image's latent once instead of encoding every crop.
- The demo VAE is shallow and narrow (``vae_layers_per_block`` 0: no residual layer in the
  encoder's blocks, one in the decoder's; widths [16, 16, 16, 16]) with 2 group-norm groups
  (``VAE_NORM_GROUPS``), and its convolutions start from variance-preserving normal weights and
  zero biases (``build_vae``). A demo VAE first learns a one-channel, luminance-only latent
  (grey reconstructions) and only later the colour; PyTorch's default init (weight variance
  1/(3 fan-in)) shrinks the signal on every convolution of the skip path, and SD's layout at these
  widths costs ~5x more per step, so within a demo budget it never left the grey stage. Measured
  on the demo world (``generation.demo.train``).
- The demo U-Net has cross-attention in its two high-resolution blocks and a plain last block,
  like SD 1.5's layout shortened to three levels; one residual layer per block.
- The text encoder is a 77-position CLIP text transformer of random initialisation (the demo
  trains it with the prior U-Net or leaves it frozen: ``generation.demo.train``).
- The ControlNet's condition encoder starts from He-normal weights (``build_controlnet``).
- The noise schedule is Stable Diffusion 1.5's (scaled-linear betas 0.00085-0.012, 1000 steps);
  inference reads it as a DDIM config with ``steps_offset`` 1 and "leading" spacing, whose
  ``prediction_type`` (epsilon as SD 1.x, or v_prediction as SD 2.x) the sampler follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    DDPMScheduler,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from flexseg.config import ConfigError
from flexseg.labels import NUM_CLASSES
from generation.tokenizer import MAX_LENGTH

# DGInStyle's ControlNet condition: the one-hot label, 19 classes and void.
CONDITIONING_CHANNELS = NUM_CLASSES + 1
LATENT_CHANNELS = 4
NORM_GROUPS = 8
VAE_NORM_GROUPS = 2
TEXT_HEAD_WIDTH = 16
UNET_HEADS = 4

# Stable Diffusion 1.5's noise schedule (scheduler/scheduler_config.json on the hub) ...
NOISE_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
}
# ... read as the DDIM config the sampler steps with.
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    **NOISE_SCHEDULE,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
}
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class Sizes:
    """Architecture sizes of the components."""

    unet_channels: tuple[int, ...]
    unet_layers_per_block: int
    unet_heads: int
    unet_norm_groups: int
    text_width: int  # the U-Net's cross-attention width
    text_layers: int
    text_heads: int
    text_intermediate: int
    text_vocab: int  # at least the tokenizer's size
    vae_channels: tuple[int, ...]
    vae_layers_per_block: int
    vae_norm_groups: int
    vae_mid_attention: bool
    condition_embedding: tuple[int, ...]


def build_vae(sizes: Sizes, sample_size: int) -> AutoencoderKL:
    """The stock ``AutoencoderKL`` of ``sizes``, its convolutions re-initialised
    variance-preserving (normal, std 1/sqrt(fan-in), zero bias; see the module docstring)."""
    blocks = len(sizes.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=sizes.vae_channels,
        layers_per_block=sizes.vae_layers_per_block,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=sizes.vae_norm_groups,
        sample_size=sample_size,
        mid_block_add_attention=sizes.vae_mid_attention,
    )
    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
                torch.nn.init.zeros_(module.bias)
    return vae


def build_text_encoder(sizes: Sizes, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=max(sizes.text_vocab, len(tokenizer)),
        hidden_size=sizes.text_width,
        intermediate_size=sizes.text_intermediate,
        num_hidden_layers=sizes.text_layers,
        num_attention_heads=sizes.text_heads,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_unet(sizes: Sizes, sample_size: int) -> UNet2DConditionModel:
    levels = len(sizes.unet_channels)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
        block_out_channels=sizes.unet_channels,
        layers_per_block=sizes.unet_layers_per_block,
        cross_attention_dim=sizes.text_width,
        attention_head_dim=sizes.unet_heads,
        norm_num_groups=sizes.unet_norm_groups,
    )


def build_controlnet(sizes: Sizes, unet: UNet2DConditionModel) -> ControlNetModel:
    """DGInStyle's ControlNet: a copy of ``unet``'s encoder with a 20-channel one-hot input.

    The condition encoder's hidden convolutions get He-normal weights and zero biases (its
    output convolution stays zero, as in every ControlNet): with PyTorch's default init a narrow
    seven-convolution stack shrinks the difference between two layouts about 200-fold before it
    reaches the zero convolution, which leaves the first few hundred steps, most of a demo-sized
    run, learning from almost no layout signal.
    """
    controlnet = ControlNetModel.from_unet(
        unet,
        conditioning_embedding_out_channels=sizes.condition_embedding,
        conditioning_channels=CONDITIONING_CHANNELS,
    )
    embedding = controlnet.controlnet_cond_embedding
    with torch.no_grad():
        for conv in [embedding.conv_in, *embedding.blocks]:
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            torch.nn.init.zeros_(conv.bias)
    return controlnet


def training_scheduler(prediction_type: str) -> DDPMScheduler:
    """The forward process the denoisers are trained on (``add_noise``, ``get_velocity``)."""
    return DDPMScheduler(**NOISE_SCHEDULE, prediction_type=_checked(prediction_type))


def inference_scheduler(prediction_type: str) -> DDIMScheduler:
    """What a prior folder's ``scheduler/`` holds: SD 1.5's schedule as a DDIM config."""
    return DDIMScheduler(**{**SD15_SCHEDULER_CONFIG, "prediction_type": _checked(prediction_type)})


def _checked(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"generation.demo_generator.prediction_type must be one of {PREDICTION_TYPES}, "
            f"got {prediction_type!r}"
        )
    return prediction_type
