"""Training loops of the demo generator (DGInStyle §3.2's three models, in miniature).

- VAE: reconstruction L1, plus ``chroma_weight`` x the L1 of the error's two chroma components
  (BT.601 Cb, Cr), plus a small KL term towards N(0, I), on random crops drawn uniformly over
  the pixels of the world's images (Stable Diffusion's VAE adds perceptual and adversarial terms;
  too slow for the demo).
  Its latent scale factor is then set so scaled latents have unit variance, the way SD's 0.18215
  was chosen.
- Denoisers: the DDPM regression loss of Stable Diffusion, ``E || y - f_theta(x_t, t, c) ||^2``
  with ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` and ``t`` uniform over the 1000 training
  steps; the target ``y`` is the noise ``eps`` (SD 1.x, "epsilon") or the velocity
  ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0`` (SD 2.x, "v_prediction"). The prior U-Net
  sees the captions (with caption dropout, so classifier-free guidance has an unconditional
  model, as in SD's training); the source fine-tune sees the empty prompt (DreamBooth with
  instance prompt ""); the ControlNet sees the crop's class list and its one-hot label and is
  trained through the frozen source U-Net.

Decisions left open:

- The demo default is v-prediction: after a few hundred steps an epsilon model's clean-image
  estimate at high noise, ``(x_t - sqrt(1 - abar) eps_hat) / sqrt(abar)``, multiplies its
  errors by up to ~15 and the samples are texture; a v model's estimate is a blurred but
  coherent image, which is what lets a demo-sized ControlNet show its layout.
- Stable Diffusion's text encoder is CLIP, trained beforehand on image-text pairs; nothing of the
  kind exists offline, so the demo text encoder may be trained together with the prior U-Net
  (``train_text_encoder``) and is then frozen for the source fine-tune and the ControlNet, as in
  DGInStyle. A random frozen encoder barely separates "foggy" from "night" (one token of ~30).
- A demo VAE learns in two stages: first a latent with one used direction, which carries
  luminance only (grey reconstructions), and only after a plateau a second one with the colour.
  Measured on the demo world: with SD's loss (plain L1) and crops drawn per image (two in three
  from the prior renders, mostly fog, rain, snow and night, nearly grey) the default VAE was still
  on that plateau after its 400-step, ~95 s budget (held-out mean |error| 0.24; 0.15 after 2000
  steps). Weighting the chroma error and drawing crops per pixel (the larger, colourful source
  renders then give ~60 % of the crops) shorten the plateau; with the cheaper VAE of
  ``generation.architecture.build_vae`` it ends after ~700 steps, and 1900 steps (~90 s at 1
  thread) reach 0.13 with recognisable colours.
- The VAE's posterior starts narrow (log-variance -6); AdamW with a linear warm-up over the
  first 10 % of the steps (at most 100) then a cosine decay to 10 % of the learning rate (few
  steps, so the end of training settles); gradients clipped at norm 1 as in DGInStyle's
  ControlNet recipe; no EMA.
- The ControlNet's zero convolutions (the condition encoder's output convolution, one per U-Net
  residual and the mid-block one) learn at ``zero_conv_lr_mult`` x the learning rate (the demo:
  10; DGInStyle and the ControlNet paper: one rate). They start at zero, so at first the
  frozen U-Net sees no layout at all; measured on the demo (``docs/decisions.md``), 300 steps
  with a ten times faster rate for them score the generated set as 900 steps at one rate do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from flexseg.labels import to_onehot20
from generation.architecture import training_scheduler
from generation.demo.data import (
    LatentImage,
    TrainImage,
    sample_crops,
    sample_pixel_crops,
)
from generation.demo.settings import ControlNetTraining, DenoiserTraining, VaeTraining
from generation.tokenizer import tokenize

LOG_COLUMNS = ("stage", "step", "loss", "lr", "seconds")
INITIAL_LOG_VARIANCE = -6.0
# The chroma rows of BT.601 RGB -> YCbCr (Cb, Cr), applied to the reconstruction error.
CHROMA = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


@dataclass
class TrainLog:
    """Mean loss over each window of ``every`` steps, printed and kept for ``train_log.csv``."""

    stage: str
    every: int
    rows: list[dict] = field(default_factory=list)
    _window: list[float] = field(default_factory=list)
    _start: float = field(default_factory=time.perf_counter)

    def add(self, step: int, steps: int, loss: float, lr: float) -> None:
        self._window.append(loss)
        if step % self.every and step != steps:
            return
        row = {
            "stage": self.stage,
            "step": step,
            "loss": float(np.mean(self._window)),
            "lr": lr,
            "seconds": round(time.perf_counter() - self._start, 2),
        }
        self._window.clear()
        self.rows.append(row)
        print(
            f"[{self.stage}] step {step}/{steps} loss {row['loss']:.5f} lr {lr:.2e} "
            f"{row['seconds']:.1f} s",
            flush=True,
        )


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Warm-up then cosine decay to 10 % of ``peak``; ``step`` counts from 0."""
    warmup = min(100, max(1, steps // 10))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group to ``lr`` times its ``lr_mult`` (1 unless the group says otherwise)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def vae_loss(
    vae: AutoencoderKL,
    batch: torch.Tensor,
    kl_weight: float,
    generator: torch.Generator,
    chroma_weight: float = 0.0,
) -> torch.Tensor:
    """Mean absolute reconstruction error + ``chroma_weight`` x mean absolute chroma (Cb, Cr) of
    the error + ``kl_weight`` x KL per latent element."""
    posterior = vae.encode(batch).latent_dist
    latent = posterior.sample(generator=generator)
    recon = vae.decode(latent).sample
    kl = posterior.kl() / latent[0].numel()
    loss = F.l1_loss(recon, batch) + kl_weight * kl.mean()
    if chroma_weight:
        chroma = torch.tensor(CHROMA, dtype=recon.dtype, device=recon.device)
        error = torch.einsum("ij,bjhw->bihw", chroma, recon - batch)
        loss = loss + chroma_weight * error.abs().mean()
    return loss


@torch.no_grad()
def narrow_posterior(vae: AutoencoderKL) -> None:
    """Start the encoder's log-variance at INITIAL_LOG_VARIANCE instead of about 0.

    A fresh encoder's latent means are small, so unit-variance posterior noise would hide them
    from the decoder for the first few hundred steps, a large share of a demo-sized run.
    """
    latent = vae.config.latent_channels
    vae.quant_conv.bias[latent:] = INITIAL_LOG_VARIANCE


def train_vae(
    vae: AutoencoderKL, images: list[TrainImage], cfg: VaeTraining, seed: int, log: TrainLog
) -> None:
    rng = np.random.default_rng([seed, 1])
    generator = torch.Generator().manual_seed(seed)
    narrow_posterior(vae)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0, foreach=True)
    vae.train()
    for step in range(cfg.steps):
        lr = learning_rate(step, cfg.steps, cfg.lr)
        _set_lr(optimizer, lr)
        batch = sample_pixel_crops(images, cfg.batch_size, cfg.crop_size, rng)
        loss = vae_loss(vae, batch, cfg.kl_weight, generator, cfg.chroma_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        log.add(step + 1, cfg.steps, loss.item(), lr)
    vae.eval()


@torch.no_grad()
def latent_scaling(items: list[LatentImage], seed: int) -> float:
    """1 / standard deviation of posterior samples over ``items``: scaled latents get unit variance."""
    generator = torch.Generator().manual_seed(seed)
    values = [
        (it.mean + it.std * torch.randn(it.mean.shape, generator=generator)).reshape(-1)
        for it in items
    ]
    std = torch.cat(values).std().item()
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"VAE latents have standard deviation {std}; cannot scale them")
    return 1.0 / std


class TextEmbedder:
    """Text-encoder features of prompts (77 x width).

    Frozen (the default): computed without gradients and cached by prompt text. Trainable: run
    with gradients on every call, so the encoder learns with the model it conditions.
    """

    def __init__(
        self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, trainable: bool = False
    ) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.trainable = trainable
        text_encoder.train(trainable).requires_grad_(trainable)
        self._cache: dict[str, torch.Tensor] = {}

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        ids = torch.tensor(tokenize(self.tokenizer, prompts))
        return self.text_encoder(input_ids=ids).last_hidden_state

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        if self.trainable:
            return self._encode(prompts)
        new = sorted({p for p in prompts if p not in self._cache})
        if new:
            with torch.no_grad():
                self._cache.update(zip(new, self._encode(new), strict=True))
        return torch.stack([self._cache[p] for p in prompts])

    def freeze(self) -> None:
        self.trainable = False
        self.text_encoder.eval().requires_grad_(False)
        self._cache.clear()


# How a stage turns a batch of crops into prompts: from the caption (prior), empty (source),
# from the label (ControlNet).
PromptRule = Callable[[list[str], np.ndarray | None, np.random.Generator], list[str]]


def captions_with_dropout(dropout: float) -> PromptRule:
    def rule(captions: list[str], labels: np.ndarray | None, rng: np.random.Generator) -> list[str]:
        keep = rng.random(len(captions)) >= dropout
        return [c if k else "" for c, k in zip(captions, keep, strict=True)]

    return rule


def empty_prompts(captions: list[str], labels: np.ndarray | None, rng: np.random.Generator):
    return [""] * len(captions)


def class_list_prompts(class_list: Callable[[np.ndarray], str]) -> PromptRule:
    def rule(captions: list[str], labels: np.ndarray | None, rng: np.random.Generator) -> list[str]:
        if labels is None:
            raise ValueError("class-list prompts need labelled crops")
        return [class_list(label) for label in labels]

    return rule


@dataclass
class DenoiserSetup:
    """What one denoiser fit trains (``trainable``) and how it predicts noise."""

    unet: UNet2DConditionModel
    controlnet: ControlNetModel | None = None

    @property
    def trainable(self) -> torch.nn.Module:
        return self.controlnet if self.controlnet is not None else self.unet

    def predict(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        text: torch.Tensor,
        condition: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.controlnet is None:
            return self.unet(noisy, timesteps, encoder_hidden_states=text).sample
        down, mid = self.controlnet(
            noisy,
            timesteps,
            encoder_hidden_states=text,
            controlnet_cond=condition,
            return_dict=False,
        )
        return self.unet(
            noisy,
            timesteps,
            encoder_hidden_states=text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample


def regression_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the denoiser regresses: the noise, or the velocity, per the scheduler's config."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r} (epsilon or v_prediction)")


def denoising_loss(
    setup: DenoiserSetup,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    text: torch.Tensor,
    condition: torch.Tensor | None,
) -> torch.Tensor:
    """SD's training loss: noise ``latents`` to ``timesteps``, regress the target (mean squared)."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = regression_target(scheduler, latents, noise, timesteps)
    return F.mse_loss(setup.predict(noisy, timesteps, text, condition), target)


def onehot_batch(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([to_onehot20(label) for label in labels]))


def zero_convolutions(controlnet: ControlNetModel) -> list[torch.nn.Parameter]:
    """The parameters of a ControlNet's zero-initialised output convolutions: the one after the
    condition encoder, one per U-Net down-block residual, the mid-block one."""
    modules = [
        controlnet.controlnet_cond_embedding.conv_out,
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
    ]
    return [p for m in modules for p in m.parameters()]


def parameter_groups(
    setup: DenoiserSetup, params: list[torch.nn.Parameter], cfg: DenoiserTraining
) -> list[dict]:
    """One optimizer group for a U-Net; for a ControlNet two, its zero convolutions learning at
    ``cfg.zero_conv_lr_mult`` x the learning rate."""
    if setup.controlnet is None:
        return [{"params": params}]
    if not isinstance(cfg, ControlNetTraining):
        raise TypeError(f"a ControlNet fit needs ControlNetTraining, got {type(cfg).__name__}")
    zero = {id(p) for p in zero_convolutions(setup.controlnet)}
    return [
        {"params": [p for p in params if id(p) not in zero]},
        {"params": [p for p in params if id(p) in zero], "lr_mult": cfg.zero_conv_lr_mult},
    ]


def train_denoiser(
    setup: DenoiserSetup,
    items: list[LatentImage],
    text: TextEmbedder,
    prompts: PromptRule,
    cfg: DenoiserTraining,
    prediction_type: str,
    crop_latent: int,
    factor: int,
    scaling: float,
    seed: int,
    log: TrainLog,
) -> None:
    """Fit ``setup.trainable`` (and the text encoder when ``text`` is trainable) with the
    denoising loss on random latent crops."""
    rng = np.random.default_rng([seed, 2])
    generator = torch.Generator().manual_seed(seed + 1)
    scheduler = training_scheduler(prediction_type)
    model = setup.trainable
    if setup.controlnet is not None:
        setup.unet.eval().requires_grad_(False)
    model.train().requires_grad_(True)
    params = list(model.parameters())
    if text.trainable:
        params += list(text.text_encoder.parameters())
    optimizer = torch.optim.AdamW(
        parameter_groups(setup, params, cfg),
        lr=cfg.lr,
        weight_decay=1e-2,
        foreach=True,
    )
    for step in range(cfg.steps):
        lr = learning_rate(step, cfg.steps, cfg.lr)
        _set_lr(optimizer, lr)
        crops = sample_crops(items, cfg.batch_size, crop_latent, factor, scaling, rng, generator)
        prompt_list = prompts(crops.captions, crops.labels, rng)
        condition = None
        if setup.controlnet is not None:
            if crops.labels is None:
                raise ValueError("ControlNet training needs labelled crops")
            condition = onehot_batch(crops.labels)
        noise = torch.randn(crops.latents.shape, generator=generator)
        timesteps = torch.randint(
            0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=generator
        )
        loss = denoising_loss(
            setup, scheduler, crops.latents, noise, timesteps, text(prompt_list), condition
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        log.add(step + 1, cfg.steps, loss.item(), lr)
    model.eval()
    if text.trainable:
        text.freeze()
