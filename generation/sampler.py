"""Multi-Resolution Latent Fusion (MRLF), the DGInStyle sampler, around stock diffusers models.

DGInStyle (Jia et al., ECCV 2024; its released pipeline, prs-eth/DGInStyle
``controlnet/pipeline_refine.py`` and ``gen_datasets.py``), which FLEX-Seg uses for its 10,000
generated images, makes one image per label crop in two passes:

1. Pass 1 (global, low resolution): ControlNet-guided DDIM sampling at the crop size from pure
   noise, as one window; decode; Lanczos upsampling by ``upscale``; VAE encoding (a posterior
   sample times the VAE scaling factor) gives the *initial latent* z_init.
2. Pass 2 (local, high resolution): fresh noise on the upscaled latent canvas, denoised with
   controlled MultiDiffusion: square tiles of ``tile_latent`` latent pixels at stride
   ``tile_stride``, each tile conditioned on its crop of the nearest-upsampled one-hot label,
   classifier-free guidance per tile, one DDIM step per tile, and the canvas set to the per-pixel
   mean of the overlapping tiles (all weights 1):

       z_{t-1}[p] = (1 / |T(p)|) * sum_{w in T(p)} DDIM(eps_w, t, z_t[w])[p]

   After each step's fusion, inside the mask M of large segments,

       z_{t-1} <- M * add_noise(z_init, n, t - 1) + (1 - M) * z_{t-1},   n ~ N(0, I) fresh,

   so large regions keep the globally coherent pass-1 layout while small segments are
   re-synthesised with ``upscale``^2 times more pixels. Decode at ``upscale`` x crop size, Lanczos
   down to the crop size.

CFG: eps = eps_u + g (eps_c - eps_u), with an empty negative prompt for eps_u (DGInStyle passes
no negative prompt); no CFG when g <= 1, as in diffusers. The ControlNet's residuals are
multiplied by ``controlnet_scale`` before they enter the U-Net (diffusers' conditioning scale;
DGInStyle: 1), in both CFG branches and both passes.

Decisions the paper leaves open (taken from the released code, or stated here):

- The inpainting noise level is the integer timestep t - 1, not the scheduler's next timestep
  t - 1000/steps: a quirk of the released pipeline, kept; it is clamped at 0. At the last step
  (t = 1) the large regions are therefore almost exactly z_init.
- The large-segment mask: 8-connected components per class present in the crop (void 255
  excluded), area > ``large_component_px`` at crop resolution; nearest-downsampled to the pass-2
  latent grid by index ``floor(i * H / h)``.
- Tiles are laid out exactly, without padding: (L - tile) / stride + 1 per side. When (L - tile) is
  not a multiple of the stride, one more tile flush with the far edge covers the rest (the
  released code would leave those latent pixels untouched).
- Tiles go through the ControlNet and U-Net in batches of ``tile_batch`` (the original ran them
  one at a time); DDIM with eta = 0 is stateless, so the result is the same (tested).
- All noise (pass-1 noise, the VAE posterior sample, pass-2 noise, the inpainting noise of each
  step) comes, in that order, from one CPU ``torch.Generator`` seeded with the job seed, then moves
  to the device, so an image is a function of (components, condition, prompt, seed, settings)
  on given hardware. The canvas, the DDIM updates and the fusion stay in float32 whatever the
  model dtype; the VAE runs in float32.
- Between the passes the pass-1 image is quantised to uint8 and resized with PIL's Lanczos, as
  the original resized its PIL output.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from flexseg.config import EXECUTION, build
from flexseg.labels import NUM_CLASSES

from .architecture import CONDITIONING_CHANNELS
from .components import Components, require_stateless


@dataclass(frozen=True)
class SamplerSettings:
    """``generation.sampler`` without ``device`` (where the components load; ``dtype`` is what
    they load as)."""

    steps: int
    guidance_scale: float
    upscale: int
    tile_latent: int
    tile_stride: int
    tile_batch: int
    large_component_px: int
    dtype: str
    tf32: bool
    controlnet_scale: float

    @classmethod
    def from_section(cls, sampler: Mapping[str, Any]) -> SamplerSettings:
        """From a validated ``generation.sampler`` section, without the execution settings that
        are not sampler fields (``device`` is the components', ``threads`` the command's)."""
        own = {f.name for f in fields(cls)}
        execution = {path.rsplit(".", 1)[-1] for path in EXECUTION["generate"]} - own
        return build(cls, {k: v for k, v in sampler.items() if k not in execution})


@dataclass(frozen=True)
class TileBox:
    """A pass-2 window in latent pixels: rows y0:y1, columns x0:x1."""

    y0: int
    x0: int
    y1: int
    x1: int


@dataclass
class GenerationResult:
    image: np.ndarray  # (H, W, 3) uint8 at the crop size: the saved image
    pass1_image: np.ndarray  # (H, W, 3) uint8: the global low-resolution pass
    large_mask: np.ndarray  # (H, W) bool at crop resolution: regions kept from pass 1
    num_tiles: int  # pass-2 tiles per step
    seconds: float
    initial_latent: torch.Tensor  # (1, 4, h, w) float32 on the CPU: the re-encoded pass-1 image
    final_latent: torch.Tensor  # (1, 4, h, w) float32 on the CPU: pass 2's result, decoded


# ---------------------------------------------------------------------------------------------
# Geometry


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of windows of ``tile`` along ``length``: every ``stride``, plus one flush with
    the end when (length - tile) is not a multiple of stride. A stride above the tile size would
    leave gaps and is an error."""
    if tile < 1 or stride < 1:
        raise ValueError(f"tile ({tile}) and stride ({stride}) must be >= 1")
    if stride > tile:
        raise ValueError(f"tile stride {stride} exceeds the tile size {tile}: pixels between tiles")
    if tile > length:
        raise ValueError(f"tile of {tile} latent pixels does not fit a canvas of {length}")
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] + tile < length:
        origins.append(length - tile)
    return origins


def tile_boxes(height: int, width: int, tile: int, stride: int) -> list[TileBox]:
    """Row-major windows covering a (height, width) latent canvas."""
    return [
        TileBox(y, x, y + tile, x + tile)
        for y in tile_origins(height, tile, stride)
        for x in tile_origins(width, tile, stride)
    ]


def large_component_mask(label: np.ndarray, min_area: int) -> np.ndarray:
    """Pixels of 8-connected single-class components larger than ``min_area`` (void excluded)."""
    if label.ndim != 2:
        raise ValueError(f"expected a 2-D label, got shape {label.shape}")
    mask = np.zeros(label.shape, dtype=bool)
    for c in np.unique(label):
        if c >= NUM_CLASSES:
            continue
        count, comps, stats, _ = cv2.connectedComponentsWithStats(
            (label == c).astype(np.uint8), connectivity=8
        )
        large = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] > min_area)
        large = large[large > 0]  # component 0 is the background of the binary map
        if large.size:
            mask |= np.isin(comps, large)
    return mask


def downsample_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize by index ``floor(i * H / height)`` (torch's 'nearest')."""
    rows = (np.arange(height) * mask.shape[0]) // height
    cols = (np.arange(width) * mask.shape[1]) // width
    return mask[rows[:, None], cols[None, :]]


# ---------------------------------------------------------------------------------------------
# Model calls


def _noise(
    generator: torch.Generator, shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


@torch.no_grad()
def encode_prompt(components: Components, prompt: str, guided: bool) -> torch.Tensor:
    """Text embeddings: (2, T, D) = [empty prompt, prompt] when ``guided``, else (1, T, D)."""
    texts = ["", prompt] if guided else [prompt]
    tokens = components.tokenizer(
        texts,
        padding="max_length",
        max_length=components.text_encoder.config.max_position_embeddings,
        truncation=True,
        return_tensors="pt",
    )
    ids = tokens.input_ids.to(components.text_encoder.device)
    return components.text_encoder(ids)[0]


@torch.no_grad()
def predict_noise(
    components: Components,
    latents: torch.Tensor,
    condition: torch.Tensor,
    t: int,
    embeds: torch.Tensor,
    settings: SamplerSettings,
) -> torch.Tensor:
    """Guided noise prediction for a batch of windows: latents (B, 4, h, w) float32, condition
    (B, 20, h * f, w * f); returns float32 (B, 4, h, w)."""
    dtype = components.dtype
    guided = embeds.shape[0] == 2
    b = latents.shape[0]
    x = components.scheduler.scale_model_input(latents, t).to(dtype)
    cond = condition.to(dtype)
    text = embeds.to(dtype)
    if guided:
        x = torch.cat([x, x])
        cond = torch.cat([cond, cond])
        text = torch.cat([text[:1].expand(b, -1, -1), text[1:].expand(b, -1, -1)])
    else:
        text = text.expand(b, -1, -1)
    timestep = torch.tensor(t, device=x.device)
    down, mid = components.controlnet(
        x,
        timestep,
        encoder_hidden_states=text,
        controlnet_cond=cond,
        conditioning_scale=settings.controlnet_scale,
        return_dict=False,
    )
    eps = components.unet(
        x,
        timestep,
        encoder_hidden_states=text,
        down_block_additional_residuals=down,
        mid_block_additional_residual=mid,
    ).sample.float()
    if guided:
        eps_uncond, eps_text = eps.chunk(2)
        eps = eps_uncond + settings.guidance_scale * (eps_text - eps_uncond)
    return eps


@torch.no_grad()
def denoise_tiles(
    components: Components,
    latents: torch.Tensor,
    condition: torch.Tensor,
    t: int,
    embeds: torch.Tensor,
    boxes: list[TileBox],
    settings: SamplerSettings,
) -> torch.Tensor:
    """One MultiDiffusion step: a DDIM step per window (``tile_batch`` windows per model call),
    then the per-pixel mean over the windows covering each latent pixel."""
    f = components.vae_scale_factor
    value = torch.zeros_like(latents)
    count = torch.zeros_like(latents[:, :1])
    for start in range(0, len(boxes), settings.tile_batch):
        batch = boxes[start : start + settings.tile_batch]
        views = torch.cat([latents[:, :, b.y0 : b.y1, b.x0 : b.x1] for b in batch])
        conds = torch.cat(
            [condition[:, :, b.y0 * f : b.y1 * f, b.x0 * f : b.x1 * f] for b in batch]
        )
        eps = predict_noise(components, views, conds, t, embeds, settings)
        stepped = components.scheduler.step(eps, t, views, eta=0.0).prev_sample
        for i, b in enumerate(batch):
            value[:, :, b.y0 : b.y1, b.x0 : b.x1] += stepped[i : i + 1]
            count[:, :, b.y0 : b.y1, b.x0 : b.x1] += 1
    if bool((count == 0).any()):
        raise RuntimeError("pass-2 tiles leave latent pixels uncovered")
    return value / count


@torch.no_grad()
def decode(components: Components, latents: torch.Tensor) -> np.ndarray:
    """Latents (1, 4, h, w) -> RGB uint8 (h * f, w * f, 3)."""
    vae = components.vae
    shift = vae.config.shift_factor or 0.0
    z = latents.float() / vae.config.scaling_factor + shift
    image = vae.decode(z).sample[0]
    image = (image / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return (image * 255).round().astype(np.uint8)


@torch.no_grad()
def encode(components: Components, image: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> a scaled posterior sample (1, 4, H / f, W / f), float32."""
    vae = components.vae
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    posterior = vae.encode(x.to(vae.device)).latent_dist
    z = posterior.mean + posterior.std * _noise(generator, tuple(posterior.mean.shape), vae.device)
    shift = vae.config.shift_factor or 0.0
    return (z - shift) * vae.config.scaling_factor


def lanczos_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def impose_large_segments(
    scheduler: Any,
    latents: torch.Tensor,
    init_latent: torch.Tensor,
    keep: torch.Tensor,
    t: int,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Inside ``keep``, the initial latent forward-noised to timestep max(t - 1, 0) (the
    released code's t - 1, see the module docstring); elsewhere ``latents``."""
    level = torch.tensor([max(int(t) - 1, 0)], device=latents.device)
    return torch.where(keep, scheduler.add_noise(init_latent, noise, level), latents)


# ---------------------------------------------------------------------------------------------
# The two passes


def _check_sizes(
    components: Components, height: int, width: int, settings: SamplerSettings
) -> None:
    f = components.vae_scale_factor
    u = 2 ** (len(components.unet.config.block_out_channels) - 1)
    if height % (f * u) or width % (f * u):
        raise ValueError(
            f"crop {height}x{width} must be a multiple of {f * u} (VAE factor {f} x U-Net "
            f"downsampling {u})"
        )
    if settings.tile_latent % u:
        raise ValueError(
            f"sampler.tile_latent {settings.tile_latent} must be a multiple of the U-Net's "
            f"downsampling {u}"
        )
    canvas = min(height, width) * settings.upscale // f
    if settings.tile_latent > canvas:
        raise ValueError(
            f"sampler.tile_latent {settings.tile_latent} exceeds the pass-2 latent canvas "
            f"({canvas} for a {height}x{width} crop upscaled x{settings.upscale})"
        )


@torch.no_grad()
def generate(
    components: Components,
    onehot20: np.ndarray,
    prompt: str,
    seed: int,
    settings: SamplerSettings,
) -> GenerationResult:
    """One image for one one-hot label crop (20, H, W): pass 1, re-encoding, pass 2, decoding."""
    start = time.perf_counter()
    require_stateless(components.scheduler)
    if onehot20.ndim != 3 or onehot20.shape[0] != CONDITIONING_CHANNELS:
        raise ValueError(f"expected a (20, H, W) one-hot condition, got shape {onehot20.shape}")
    _, height, width = onehot20.shape
    _check_sizes(components, height, width, settings)
    device = components.device
    f = components.vae_scale_factor
    up = settings.upscale
    generator = torch.Generator("cpu").manual_seed(int(seed))
    scheduler = components.scheduler
    scheduler.set_timesteps(settings.steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    guided = settings.guidance_scale > 1.0
    embeds = encode_prompt(components, prompt, guided)
    channels = components.unet.config.in_channels

    condition = torch.from_numpy(np.ascontiguousarray(onehot20, dtype=np.float32))[None]
    condition = condition.to(device)
    index = onehot20.argmax(0)
    label = np.where(index == NUM_CLASSES, 255, index).astype(np.uint8)
    large = large_component_mask(label, settings.large_component_px)

    # Pass 1: one window at the crop size.
    latents = _noise(generator, (1, channels, height // f, width // f), device)
    latents = latents * scheduler.init_noise_sigma
    for t in timesteps:
        eps = predict_noise(components, latents, condition, t, embeds, settings)
        latents = scheduler.step(eps, t, latents, eta=0.0).prev_sample
    pass1 = decode(components, latents)
    big_h, big_w = height * up, width * up
    init_latent = encode(components, lanczos_resize(pass1, big_h, big_w), generator)

    # Pass 2: tiled on the upscaled canvas, large segments re-imposed from pass 1 after each step.
    lat_h, lat_w = big_h // f, big_w // f
    boxes = tile_boxes(lat_h, lat_w, settings.tile_latent, settings.tile_stride)
    condition_up = condition.repeat_interleave(up, dim=2).repeat_interleave(up, dim=3)
    keep = torch.from_numpy(downsample_nearest(large, lat_h, lat_w))[None, None].to(device)
    latents = _noise(generator, (1, channels, lat_h, lat_w), device) * scheduler.init_noise_sigma
    for t in timesteps:
        latents = denoise_tiles(components, latents, condition_up, t, embeds, boxes, settings)
        if bool(keep.any()):
            noise = _noise(generator, tuple(init_latent.shape), device)
            latents = impose_large_segments(scheduler, latents, init_latent, keep, t, noise)
    image = lanczos_resize(decode(components, latents), height, width)
    return GenerationResult(
        image=image,
        pass1_image=pass1,
        large_mask=large,
        num_tiles=len(boxes),
        seconds=time.perf_counter() - start,
        initial_latent=init_latent.cpu(),
        final_latent=latents.cpu(),
    )
