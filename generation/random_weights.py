"""Randomly initialised stand-ins for the paper's weights, written in their hub layouts.

There is no model hub on the project's machines, yet the paper's runs load Stable Diffusion 1.5,
DGInStyle's ControlNet, MiT-B5 and a ResNet-101 from it. For a smoke run of the paper's
pipeline at its real sizes (``config/paper/smoke.yaml``) these commands write random weights of
the same architectures into local folders in the layouts the loaders read, so every loading
path, shape and cost is the paper's; only the images and predictions are noise.

``python -m generation.random_weights diffusion --params P --prior DIR --controlnet DIR``
(``P = {"random_weights": {"seed", "size"}, "controlnet_subfolder"}``,
``flexseg.config.stage_params(config, "random_weights_diffusion")``) writes

- ``DIR(prior)/unet, vae, text_encoder, tokenizer, scheduler``: the layout of
  ``stable-diffusion-v1-5/stable-diffusion-v1-5`` (``generation.components.save_components``), at
  Stable Diffusion 1.5's sizes (``SD15_SPEC``: U-Net 860M, VAE 84M, CLIP ViT-L/14 text encoder
  123M parameters) with the offline tokenizer (``generation.tokenizer``);
- ``DIR(controlnet)/<controlnet_subfolder>/``: the ControlNet copied from that U-Net with
  DGInStyle's 20-channel one-hot condition encoder (16, 32, 96, 256), its ``config.json``
  without the ``conditioning_channels`` key, as in the released ``yurujaja/DGInStyle``
  ``ControlNet_UNet-S`` (dginstyle_generation.md §1.1: the loader must force 20, and does).

``python -m generation.random_weights encoders --params P`` (``P = {"random_weights": {"seed",
"size"}, "encoders": {folder: {"type", "name"}}}``, stage ``random_weights_encoders``) writes, per
folder,

- ``type: mit``: ``config.json`` + ``model.safetensors`` of a
  ``SegformerForImageClassification`` with MiT-B5's config (``flexseg.models.encoders.MIT_B5``),
  the layout of ``nvidia/mit-b5`` (an ImageNet classifier whose ``segformer.`` weights the encoder
  loads);
- ``type: resnet``: ``model.safetensors`` (+ ``config.json``) of the timm model ``name``
  (default ``resnet101c``), the layout of ``timm/resnet101c.gluon_in1k``.

``size: tiny`` writes a few channels of each instead (``TINY_SPEC``, a four-stage MiT of widths
16..128; resnet encoders stay the timm model named), so tests run the same commands. Every
folder is written whole (a temporary sibling renamed into place); weights are a function of the
seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flexseg.config import ConfigError, add_params_arguments, build, params_from_args
from flexseg.io import atomic_folder
from flexseg.models.encoders import DEFAULT_RESNET, MIT_B5
from flexseg.peak_memory import report_peak_memory
from generation.components import SD15_SPEC, TINY_SPEC, random_components, save_components

MIT_TINY: dict[str, Any] = {
    "hidden_sizes": [16, 32, 64, 128],
    "depths": [1, 1, 1, 1],
    "num_attention_heads": [1, 1, 2, 4],
    "sr_ratios": [8, 4, 2, 1],
}
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class RandomWeights:
    """``random_weights`` less ``enabled``: what the weights are a function of."""

    seed: int
    size: str  # paper | tiny


def write_diffusion(params: dict[str, Any], prior: str | Path, controlnet: str | Path) -> None:
    """The prior folder and the ControlNet folder (see the module docstring); ``params`` is the
    validated ``random_weights_diffusion`` slice."""
    settings = build(RandomWeights, params["random_weights"], "random_weights")
    spec = SD15_SPEC if settings.size == "paper" else TINY_SPEC
    components = random_components(spec, seed=settings.seed)
    subfolder = params["controlnet_subfolder"]
    with atomic_folder(prior) as prior_tmp, atomic_folder(controlnet) as cn_tmp:
        cn_dir = cn_tmp / subfolder if subfolder else cn_tmp
        save_components(components, prior_tmp, cn_dir)
        config_file = cn_dir / "config.json"
        config = json.loads(config_file.read_text())
        config.pop("conditioning_channels")
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_mit(folder: str | Path, size: str, seed: int) -> None:
    from transformers import SegformerConfig, SegformerForImageClassification

    torch.manual_seed(seed)
    fields = MIT_B5 if size == "paper" else MIT_TINY
    model = SegformerForImageClassification(SegformerConfig(**fields, num_labels=IMAGENET_CLASSES))
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)


def write_resnet(folder: str | Path, name: str, seed: int) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=IMAGENET_CLASSES)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    with atomic_folder(folder) as tmp:
        save_file(state, str(tmp / "model.safetensors"))
        config = {"architecture": name, "num_classes": IMAGENET_CLASSES}
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def write_encoders(params: dict[str, Any]) -> None:
    """Every folder of the validated ``random_weights_encoders`` slice."""
    settings = build(RandomWeights, params["random_weights"], "random_weights")
    for folder, encoder in params["encoders"].items():
        if encoder["type"] == "mit":
            write_mit(folder, settings.size, settings.seed)
        else:
            write_resnet(folder, encoder["name"] or DEFAULT_RESNET, settings.seed)
        print(f"wrote random {encoder['type']} weights to {folder}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m generation.random_weights", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    diffusion = sub.add_parser("diffusion", help="Stable Diffusion 1.5 + DGInStyle's ControlNet")
    add_params_arguments(diffusion)
    diffusion.add_argument("--prior", required=True, help="folder for unet/ vae/ text_encoder/ ...")
    diffusion.add_argument("--controlnet", required=True, help="folder for the ControlNet")
    encoders = sub.add_parser("encoders", help="MiT and ResNet encoders in their hub layouts")
    add_params_arguments(encoders)
    args = parser.parse_args(argv)
    try:
        if args.command == "diffusion":
            write_diffusion(
                params_from_args(args, "random_weights_diffusion"), args.prior, args.controlnet
            )
            print(f"wrote random diffusion weights to {args.prior} and {args.controlnet}")
        else:
            write_encoders(params_from_args(args, "random_weights_encoders"))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report_peak_memory()
    return 0


if __name__ == "__main__":
    sys.exit(main())
