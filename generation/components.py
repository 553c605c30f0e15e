"""Loading the diffusion components of the DGInStyle-style generator.

DGInStyle's "Style Swap" (Jia et al., ECCV 2024, and its released code, prs-eth/DGInStyle), which
the FLEX-Seg paper follows for its generated set ("Implementation Details"): the ControlNet was
trained against a U-Net fine-tuned on the source domain, and at inference it is paired with the
ORIGINAL Stable Diffusion 1.5 U-Net, so the images take the prior's real-world style. This
module therefore loads the U-Net, VAE, text encoder, tokenizer and scheduler config from one
"prior" folder and the ControlNet from another, each through the stock diffusers/transformers
``from_pretrained``; no pipeline class is used (the sampling loop is ``generation.sampler``).

Decisions the paper and the released code leave open, taken here:

- The released ControlNet ``config.json`` has no ``conditioning_channels`` key (its own class
  defaulted to 20, stock diffusers defaults to 3), so 20 is forced at load time and checked.
- The scheduler is always built as DDIM from the saved scheduler config (Stable Diffusion 1.5
  ships a PNDM config; DGInStyle did the same). Only stateless schedulers are accepted: the tiled
  pass calls ``step()`` once per tile at the same timestep, which corrupts the history of
  multistep samplers (DPM-Solver, UniPC, PNDM).
- The VAE always stays in float32, whatever the sampler dtype, as in the original (which kept a
  separate float32 VAE for encoding); its three calls per image are a small share of the time
  next to the tiled denoising. float16 (U-Net, ControlNet, text encoder) is allowed only on
  CUDA; bfloat16 also runs on the CPU (slowly on most CPUs; the fp32-closeness test uses it).

``random_components`` builds randomly initialised components in the same layout (a tiny size for
tests and CPU benchmarks, the Stable Diffusion 1.5 size for GPU speed benchmarks), with the
offline CLIP tokenizer of ``generation.tokenizer``; there is no model hub on the project's
machines.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    SchedulerMixin,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer

from flexseg.config import ConfigError
from flexseg.device import resolve_device
from generation.architecture import (
    CONDITIONING_CHANNELS,
    SD15_SCHEDULER_CONFIG,
    Sizes,
    build_controlnet,
    build_text_encoder,
    build_unet,
    build_vae,
)
from generation.tokenizer import build_tokenizer

SAMPLER_DEVICE = "generation.sampler.device"
PRIOR_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

# Schedulers whose step() depends only on its arguments (no history between calls).
STATELESS_SCHEDULERS: tuple[type, ...] = (DDIMScheduler,)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ComponentIds:
    """Where the components came from (hub ids or folders), recorded in every manifest row."""

    base: str
    controlnet: str


@dataclass
class Components:
    unet: UNet2DConditionModel
    controlnet: ControlNetModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: SchedulerMixin
    ids: ComponentIds

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"generation.sampler.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    dtype = DTYPES[name]
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError(
            f"generation.sampler.dtype {name} needs a CUDA device (running on {device.type}); "
            "use float32 or bfloat16 on the CPU"
        )
    return dtype


def require_stateless(scheduler: Any) -> None:
    """Refuse schedulers that keep state between ``step()`` calls (see the module docstring).

    ``scheduler`` is an instance or a class."""
    cls = scheduler if isinstance(scheduler, type) else type(scheduler)
    if not issubclass(cls, STATELESS_SCHEDULERS):
        allowed = ", ".join(c.__name__ for c in STATELESS_SCHEDULERS)
        raise ValueError(
            f"scheduler {cls.__name__} is not stateless: the tiled pass calls step() "
            f"once per tile at the same timestep, which corrupts a multistep sampler's history. "
            f"Use one of: {allowed}"
        )


def check_folder(path: Path, what: str, subfolders: tuple[str, ...] = ()) -> None:
    """ConfigError unless ``path`` is a folder holding ``subfolders``."""
    if not path.is_dir():
        raise ConfigError(f"{what} folder not found: {path}")
    missing = [s for s in subfolders if not (path / s).is_dir()]
    if missing:
        raise ConfigError(
            f"{what} folder {path} lacks the subfolder(s) {missing} (expected the diffusers "
            f"layout {list(subfolders)})"
        )


def load_components(
    models_cfg: dict[str, Any],
    prior_dir: str | Path | None = None,
    controlnet_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    dtype: str = "float32",
    scheduler_class: type = DDIMScheduler,
) -> Components:
    """Load the prior (U-Net, VAE, text encoder, tokenizer, scheduler) and the ControlNet.

    ``models_cfg`` is ``generation.models``. kind ``pretrained``: the prior from ``base`` (hub id
    or local folder with the subfolders in PRIOR_SUBFOLDERS), the ControlNet from ``controlnet``
    (+ ``controlnet_subfolder``). kind ``demo``: ``prior_dir`` and ``controlnet_dir`` (the demo
    generator's outputs).
    """
    kind = models_cfg["kind"]
    if kind == "demo":
        if prior_dir is None or controlnet_dir is None:
            raise ConfigError(
                "generation.models.kind is demo: pass the demo generator's folders "
                "(--prior DIR --controlnet DIR)"
            )
        base: str = str(prior_dir)
        check_folder(Path(base), "prior", PRIOR_SUBFOLDERS)
        cn_source, cn_subfolder = str(controlnet_dir), None
        check_folder(Path(cn_source), "ControlNet")
    elif kind == "pretrained":
        if prior_dir is not None or controlnet_dir is not None:
            raise ConfigError(
                "generation.models.kind is pretrained: the components come from "
                "generation.models.base / .controlnet; do not pass --prior / --controlnet"
            )
        base = models_cfg["base"]
        cn_source, cn_subfolder = models_cfg["controlnet"], models_cfg["controlnet_subfolder"]
        if Path(base).exists():
            check_folder(Path(base), "generation.models.base", PRIOR_SUBFOLDERS)
    else:
        raise ConfigError(f"generation.models.kind must be demo or pretrained, got {kind!r}")

    device = resolve_device(device, SAMPLER_DEVICE) if isinstance(device, str) else device
    torch_dtype = resolve_dtype(dtype, device)
    require_stateless(scheduler_class)

    try:
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", torch_dtype=torch_dtype)
        vae = AutoencoderKL.from_pretrained(base, subfolder="vae", torch_dtype=torch.float32)
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
        tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
        scheduler_config = scheduler_class.load_config(base, subfolder="scheduler")
    except OSError as err:
        raise ConfigError(f"cannot load the prior components from {base!r}: {err}") from err
    scheduler = scheduler_class.from_config(scheduler_config)
    cn_kwargs: dict[str, Any] = {
        "conditioning_channels": CONDITIONING_CHANNELS,
        "torch_dtype": torch_dtype,
    }
    if cn_subfolder:
        cn_kwargs["subfolder"] = cn_subfolder
    try:
        controlnet = ControlNetModel.from_pretrained(cn_source, **cn_kwargs)
    except OSError as err:
        raise ConfigError(
            f"cannot load the ControlNet from {cn_source!r} (subfolder {cn_subfolder!r}): {err}"
        ) from err

    cn_name = f"{cn_source}/{cn_subfolder}" if cn_subfolder else cn_source
    components = Components(
        unet=unet.to(device),
        controlnet=controlnet.to(device),
        vae=vae.to(device),
        text_encoder=text_encoder.to(device=device, dtype=torch_dtype),
        tokenizer=tokenizer,
        scheduler=scheduler,
        ids=ComponentIds(base=str(base), controlnet=cn_name),
    )
    check_components(components)
    for model in (components.unet, components.controlnet, components.vae, components.text_encoder):
        model.eval().requires_grad_(False)
    return components


def place_components(c: Components, device: str | torch.device, dtype: str) -> Components:
    """``c`` moved to ``device``: U-Net, ControlNet and text encoder in ``dtype``, the VAE in
    float32 (see the module docstring)."""
    device = resolve_device(device, SAMPLER_DEVICE) if isinstance(device, str) else device
    torch_dtype = resolve_dtype(dtype, device)
    return Components(
        unet=c.unet.to(device=device, dtype=torch_dtype),
        controlnet=c.controlnet.to(device=device, dtype=torch_dtype),
        vae=c.vae.to(device=device, dtype=torch.float32),
        text_encoder=c.text_encoder.to(device=device, dtype=torch_dtype),
        tokenizer=c.tokenizer,
        scheduler=c.scheduler,
        ids=c.ids,
    )


def check_components(c: Components) -> None:
    """Shape agreements the sampler relies on; a mismatch names both values."""
    require_stateless(c.scheduler)
    cn_channels = c.controlnet.config.conditioning_channels
    if cn_channels != CONDITIONING_CHANNELS:
        raise ValueError(
            f"ControlNet {c.ids.controlnet} takes {cn_channels} conditioning channels; the "
            f"DGInStyle one-hot condition has {CONDITIONING_CHANNELS}"
        )
    cn_factor = 2 ** (len(c.controlnet.config.conditioning_embedding_out_channels) - 1)
    if cn_factor != c.vae_scale_factor:
        raise ValueError(
            f"ControlNet {c.ids.controlnet} downsamples its condition by {cn_factor}, the VAE of "
            f"{c.ids.base} by {c.vae_scale_factor}: they must match"
        )
    if c.unet.config.cross_attention_dim != c.text_encoder.config.hidden_size:
        raise ValueError(
            f"U-Net cross_attention_dim {c.unet.config.cross_attention_dim} != text encoder "
            f"hidden size {c.text_encoder.config.hidden_size} in {c.ids.base}"
        )
    if c.unet.config.in_channels != c.vae.config.latent_channels:
        raise ValueError(
            f"U-Net in_channels {c.unet.config.in_channels} != VAE latent_channels "
            f"{c.vae.config.latent_channels} in {c.ids.base}"
        )


# ---------------------------------------------------------------------------------------------
# Randomly initialised components (tests, benchmarks): same classes, same on-disk layout.

# A few channels per layer, VAE downsampling by 8 as in Stable Diffusion.
TINY_SPEC = Sizes(
    unet_channels=(32, 64),
    unet_layers_per_block=1,
    unet_heads=8,
    unet_norm_groups=32,
    text_width=32,
    text_layers=2,
    text_heads=4,
    text_intermediate=64,
    text_vocab=0,
    vae_channels=(16, 16, 32, 32),
    vae_layers_per_block=1,
    vae_norm_groups=8,
    vae_mid_attention=True,
    condition_embedding=(8, 8, 16, 16),
)

# Stable Diffusion 1.5's sizes (UNet2DConditionModel's defaults apart from the CLIP-L width,
# AutoencoderKL of SD, CLIP ViT-L/14's text tower, the DGInStyle ControlNet embedding).
SD15_SPEC = Sizes(
    unet_channels=(320, 640, 1280, 1280),
    unet_layers_per_block=2,
    unet_heads=8,
    unet_norm_groups=32,
    text_width=768,
    text_layers=12,
    text_heads=12,
    text_intermediate=3072,
    text_vocab=49408,
    vae_channels=(128, 256, 512, 512),
    vae_layers_per_block=2,
    vae_norm_groups=32,
    vae_mid_attention=True,
    condition_embedding=(16, 32, 96, 256),
)


def random_components(spec: Sizes, seed: int = 0) -> Components:
    """Randomly initialised float32 CPU components with the architecture ``spec``."""
    torch.manual_seed(seed)
    unet = build_unet(spec, sample_size=64)
    controlnet = build_controlnet(spec, unet)
    vae = build_vae(spec, sample_size=512)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(tmp)
    text_encoder = build_text_encoder(spec, tokenizer)
    components = Components(
        unet=unet,
        controlnet=controlnet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG),
        ids=ComponentIds(base=f"random-{seed}", controlnet=f"random-{seed}"),
    )
    for model in (unet, controlnet, vae, text_encoder):
        model.eval().requires_grad_(False)
    return components


def save_components(
    components: Components, prior_dir: str | Path, controlnet_dir: str | Path
) -> None:
    """Write the prior in the diffusers layout (PRIOR_SUBFOLDERS) and the ControlNet folder."""
    prior_dir = Path(prior_dir)
    components.unet.save_pretrained(prior_dir / "unet")
    components.vae.save_pretrained(prior_dir / "vae")
    components.text_encoder.save_pretrained(prior_dir / "text_encoder")
    components.tokenizer.save_pretrained(prior_dir / "tokenizer")
    components.scheduler.save_pretrained(prior_dir / "scheduler")
    components.controlnet.save_pretrained(Path(controlnet_dir))
