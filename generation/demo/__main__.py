"""Train the tiny demo stand-in for Stable Diffusion 1.5 and the DGInStyle ControlNet.

DGInStyle (Jia et al., ECCV 2024, Sec. 3.2, "Style Swap") builds its generator in three steps,
which the three sub-commands repeat on the demo world at toy scale:

1. ``prior``: the broad prior U^P. Stable Diffusion 1.5 is not available offline, so a tiny
   latent diffusion model is trained here on ``prior/`` (renders in every condition, captions that
   name the condition): a VAE (reconstruction + KL), an offline CLIP tokenizer
   (``generation.tokenizer``), a CLIP text encoder, and a U-Net trained with the DDPM loss
   (``generation.demo.train``: v- or epsilon-prediction; the text encoder learns with it or stays
   random and frozen). Output: a diffusers folder ``unet/ vae/ text_encoder/ tokenizer/
   scheduler/`` (the scheduler is SD 1.5's schedule as a DDIM config with the prediction type).
2. ``source``: U^S, a copy of the prior U-Net fine-tuned on the source domain with the empty
   prompt (DGInStyle's DreamBooth step). Output: a U-Net folder. It and the ControlNet use the
   prediction type saved in the prior's scheduler config, whatever the current settings say.
3. ``controlnet``: ``ControlNetModel.from_unet(U^S, conditioning_channels=20)`` trained against
   the frozen U^S on source crops, conditioned on the 20-channel one-hot label
   (``flexseg.labels.to_onehot20``) with the crop's class list as the caption
   (``flexseg.prompts.class_list``). Output: a ControlNet folder.

Generation then pairs the ControlNet with the PRIOR U-Net (the style swap; ``generation.sampler``).

Each output folder is written under a temporary name beside the final one and renamed into place
when complete, holds a ``train_log.csv`` (stage, step, mean loss, learning rate, seconds) and a
``demo_generator.json`` (settings, seed, git revision, timings). Everything is seeded; on the CPU
two runs with the same settings and thread count give identical weights.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from flexseg.config import ConfigError, add_params_arguments, params_from_args
from flexseg.io import DataError, atomic_folder, git_revision, write_json
from flexseg.prompts import class_list
from generation.architecture import (
    build_controlnet,
    build_text_encoder,
    build_unet,
    build_vae,
    inference_scheduler,
)
from generation.components import PRIOR_SUBFOLDERS, check_folder
from generation.demo.data import (
    encode_images,
    load_prior_images,
    load_source_images,
    read_captions,
)
from generation.demo.settings import DemoSettings, demo_sizes, settings_from_params
from generation.demo.train import (
    LOG_COLUMNS,
    DenoiserSetup,
    TextEmbedder,
    TrainLog,
    captions_with_dropout,
    class_list_prompts,
    empty_prompts,
    latent_scaling,
    train_denoiser,
    train_vae,
)
from generation.tokenizer import build_tokenizer

VAE_FACTOR = 8
ENCODE_BATCH = 16


def write_train_log(folder: Path, logs: list[TrainLog]) -> None:
    path = folder / "train_log.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        for log in logs:
            writer.writerows(log.rows)


def write_record(folder: Path, command: str, settings: DemoSettings, extra: dict[str, Any]) -> None:
    write_json(
        folder / "demo_generator.json",
        {
            "command": command,
            "settings": asdict(settings),
            "seed": settings.seed,
            "git_revision": git_revision(),
            "torch_threads": torch.get_num_threads(),
            **extra,
        },
    )


def train_prior(settings: DemoSettings, world: Path, out: Path) -> None:
    """Write the prior folder: tokenizer, text encoder, VAE, U-Net, scheduler."""
    sizes = demo_sizes(settings.architecture)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    prior_images = load_prior_images(world, VAE_FACTOR, settings.crop_size)
    source_images = load_source_images(world, VAE_FACTOR, settings.vae.crop_size)
    print(f"prior images: {len(prior_images)}, source images: {len(source_images)}", flush=True)
    with atomic_folder(out) as tmp:
        captions = [row.caption for row in read_captions(world / "prior")]
        tokenizer = build_tokenizer(tmp / "tokenizer", captions)
        torch.manual_seed(settings.seed)
        text_encoder = build_text_encoder(sizes, tokenizer)

        torch.manual_seed(settings.seed)
        vae = build_vae(sizes, sample_size=settings.crop_size)
        vae_log = TrainLog("vae", settings.log_every)
        train_vae(vae, prior_images + source_images, settings.vae, settings.seed, vae_log)
        latents = encode_images(vae, prior_images, ENCODE_BATCH)
        scaling = latent_scaling(latents, settings.seed)
        vae.register_to_config(scaling_factor=scaling)
        vae.save_pretrained(tmp / "vae")
        timings["vae_seconds"] = round(time.perf_counter() - start, 2)
        print(f"VAE latent scaling factor {scaling:.4f}", flush=True)

        torch.manual_seed(settings.seed)
        unet = build_unet(sizes, sample_size=settings.crop_size // VAE_FACTOR)
        unet_log = TrainLog("prior_unet", settings.log_every)
        train_denoiser(
            DenoiserSetup(unet=unet),
            latents,
            TextEmbedder(tokenizer, text_encoder, trainable=settings.train_text_encoder),
            captions_with_dropout(settings.prior.caption_dropout),
            settings.prior,
            settings.prediction_type,
            settings.crop_size // VAE_FACTOR,
            VAE_FACTOR,
            scaling,
            settings.seed,
            unet_log,
        )
        unet.save_pretrained(tmp / "unet")
        text_encoder.save_pretrained(tmp / "text_encoder")
        inference_scheduler(settings.prediction_type).save_pretrained(tmp / "scheduler")
        timings["total_seconds"] = round(time.perf_counter() - start, 2)
        write_train_log(tmp, [vae_log, unet_log])
        write_record(
            tmp,
            "prior",
            settings,
            {
                "world": str(world),
                "prior_images": len(prior_images),
                "vae_images": len(prior_images) + len(source_images),
                "vae_scaling_factor": scaling,
                "prediction_type": settings.prediction_type,
                "vocabulary_size": len(tokenizer),
                **timings,
            },
        )


def _load_prior_parts(prior: Path) -> tuple[AutoencoderKL, CLIPTokenizer, CLIPTextModel]:
    check_folder(prior, "prior", PRIOR_SUBFOLDERS)
    vae = AutoencoderKL.from_pretrained(prior, subfolder="vae").eval()
    tokenizer = CLIPTokenizer.from_pretrained(prior, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(prior, subfolder="text_encoder").eval()
    return vae, tokenizer, text_encoder


def _prediction_type(prior: Path) -> str:
    """The parameterisation the prior U-Net was trained with: its fine-tunes must share it."""
    return DDIMScheduler.from_pretrained(prior, subfolder="scheduler").config.prediction_type


def train_source(settings: DemoSettings, world: Path, prior: Path, out: Path) -> None:
    """Write U^S: the prior U-Net fine-tuned on the source images with the empty prompt."""
    _fit_on_source(settings, world, prior, None, out)


def train_controlnet(
    settings: DemoSettings, world: Path, prior: Path, source_unet: Path, out: Path
) -> None:
    """Write the ControlNet trained against the frozen U^S on one-hot source label crops."""
    _fit_on_source(settings, world, prior, source_unet, out)


def _fit_on_source(
    settings: DemoSettings, world: Path, prior: Path, source_unet: Path | None, out: Path
) -> None:
    """U^S (no ``source_unet``) or the ControlNet against the frozen U^S in ``source_unet``,
    fitted on the source images and written to ``out``."""
    start = time.perf_counter()
    vae, tokenizer, text_encoder = _load_prior_parts(prior)
    if source_unet is None:
        unet = UNet2DConditionModel.from_pretrained(prior, subfolder="unet")
    else:
        check_folder(source_unet, "source U-Net")
        unet = UNet2DConditionModel.from_pretrained(source_unet)
    prediction_type = _prediction_type(prior)
    images = load_source_images(world, VAE_FACTOR, settings.crop_size)
    latents = encode_images(vae, images, ENCODE_BATCH)
    print(f"source images: {len(images)}", flush=True)
    record = {"world": str(world), "prior": str(prior)}
    if source_unet is None:
        command, stage, training = "source", "source_unet", settings.source
        setup, prompts = DenoiserSetup(unet), empty_prompts
    else:
        torch.manual_seed(settings.seed)
        controlnet = build_controlnet(demo_sizes(settings.architecture), unet)
        command, stage, training = "controlnet", "controlnet", settings.controlnet
        setup, prompts = DenoiserSetup(unet, controlnet), class_list_prompts(class_list)
        record["source_unet"] = str(source_unet)
    with atomic_folder(out) as tmp:
        log = TrainLog(stage, settings.log_every)
        train_denoiser(
            setup,
            latents,
            TextEmbedder(tokenizer, text_encoder),
            prompts,
            training,
            prediction_type,
            settings.crop_size // VAE_FACTOR,
            VAE_FACTOR,
            vae.config.scaling_factor,
            settings.seed,
            log,
        )
        setup.trainable.save_pretrained(tmp)
        write_train_log(tmp, [log])
        record |= {"source_images": len(images), "prediction_type": prediction_type}
        record["total_seconds"] = round(time.perf_counter() - start, 2)
        write_record(tmp, command, settings, record)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generation.demo",
        description="Train the demo diffusion generator (DGInStyle's prior / source U-Net / "
        "ControlNet, in miniature) on the demo world.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    specs = {
        "prior": "VAE, tokenizer, text encoder and prior U-Net on <world>/prior (diffusers folder)",
        "source": "the prior U-Net fine-tuned on the source domain with the empty prompt",
        "controlnet": "the 20-channel ControlNet trained against the frozen source U-Net",
    }
    for name, help_text in specs.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_params_arguments(sub)
        sub.add_argument("--world", required=True, type=Path, help="the demo world root")
        if name in ("source", "controlnet"):
            sub.add_argument("--prior", required=True, type=Path, help="the prior folder")
        if name == "controlnet":
            sub.add_argument(
                "--source-unet", required=True, type=Path, help="the source U-Net folder"
            )
        sub.add_argument("--out", required=True, type=Path, help="output folder (replaced whole)")
        sub.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        settings = settings_from_params(params_from_args(args, "demo_generator"))
        world = args.world
        if not world.is_dir():
            raise DataError(f"demo world folder not found: {world}")
        if args.command == "prior":
            train_prior(settings, world, args.out)
        elif args.command == "source":
            train_source(settings, world, args.prior, args.out)
        else:
            train_controlnet(settings, world, args.prior, args.source_unet, args.out)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
