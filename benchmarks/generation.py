"""Throughput of the MRLF generator (``generation.sampler.generate``).

CPU: the demo generator at the demo config's sizes (``generation.jobs.crop_size`` and
``generation.sampler``): the trained demo model when ``results/generation/demo_model/{prior,
controlnet}`` exists, else randomly initialised tiny components (``TINY_SPEC``; their parameter
counts are printed, the trained demo model's widths may differ). Prints seconds per image and
ends with ``demo_images_per_min=<value>``.

CUDA (or ``--sd15`` on any device): randomly initialised components of Stable Diffusion 1.5's
size (U-Net, the DGInStyle ControlNet, VAE, CLIP ViT-L text tower) at 512 px crops with the
paper's sampler (20 DDIM steps, CFG, x2 pass 2, 64-latent tiles), tile stride 8 and 16, tiles
batched (``--tile-batch``) and one at a time, in ``--dtype`` (float16 by default); prints seconds
per image for each. Random weights run at the speed of trained ones.

    python benchmarks/generation.py [--images 2] [--sd15 --sd15-crop 64 --sd15-steps 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flexseg.config import load_config  # noqa: E402
from flexseg.labels import to_onehot20  # noqa: E402
from generation.components import (  # noqa: E402
    SD15_SPEC,
    TINY_SPEC,
    Components,
    load_components,
    place_components,
    random_components,
)
from generation.sampler import SamplerSettings, generate  # noqa: E402


def street_label(size: int, seed: int) -> np.ndarray:
    """A street-like train-id layout: sky, a band of buildings/vegetation/poles, cars, road."""
    rng = np.random.default_rng(seed)
    label = np.full((size, size), 2, dtype=np.uint8)
    label[: size // 3] = 10
    label[2 * size // 3 :] = 0
    cell = max(size // 8, 1)
    for x in range(0, size, cell):
        label[size // 3 : 2 * size // 3, x : x + cell] = rng.choice([2, 8, 5, 3])
    for _ in range(3):
        x, w = int(rng.integers(0, size - cell)), cell
        label[2 * size // 3 - cell // 2 : 2 * size // 3 + cell // 2, x : x + w] = 13
    return label


def params_m(components: Components) -> str:
    parts = []
    for name in ("unet", "controlnet", "vae", "text_encoder"):
        n = sum(p.numel() for p in getattr(components, name).parameters())
        parts.append(f"{name} {n / 1e6:.2f}M")
    return ", ".join(parts)


def time_images(components: Components, size: int, settings: SamplerSettings, images: int) -> float:
    """Mean seconds per image after one warm-up image."""
    cuda = components.device.type == "cuda"
    generate(components, to_onehot20(street_label(size, 0)), "road car sky", 0, settings)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for k in range(images):
        label = street_label(size, k + 1)
        generate(
            components, to_onehot20(label), "A city street scene with road car sky", k, settings
        )
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / images


def bench_sd15(args: argparse.Namespace, device: torch.device) -> None:
    print(f"SD1.5-sized random components on {device}, {args.dtype}, crop {args.sd15_crop}")
    t0 = time.perf_counter()
    components = place_components(random_components(SD15_SPEC), device, args.dtype)
    print(f"  built in {time.perf_counter() - t0:.1f} s: {params_m(components)}")
    base = SamplerSettings(
        steps=args.sd15_steps,
        guidance_scale=7.5,
        upscale=2,
        tile_latent=min(64, args.sd15_crop * 2 // 8),
        tile_stride=8,
        tile_batch=args.tile_batch,
        large_component_px=int(20000 * (args.sd15_crop / 512) ** 2),
        dtype=args.dtype,
        tf32=False,
        controlnet_scale=1.0,
    )
    for stride in (8, 16):
        for batch in (args.tile_batch, 1):
            settings = replace(base, tile_stride=min(stride, base.tile_latent), tile_batch=batch)
            seconds = time_images(components, args.sd15_crop, settings, args.sd15_images)
            mode = f"batched x{batch}" if batch > 1 else "sequential"
            print(f"  stride {stride:2d}, {mode:12s}: {seconds:8.2f} s/image")
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated() / 2**30
                print(f"    peak GPU memory so far {peak:.1f} GiB")
    del components
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_demo(args: argparse.Namespace) -> float:
    config = load_config(*args.config)
    crop = config["generation"]["jobs"]["crop_size"]
    settings = SamplerSettings.from_section(config["generation"]["sampler"])
    prior, controlnet = args.demo_model / "prior", args.demo_model / "controlnet"
    if prior.is_dir() and controlnet.is_dir():
        components = load_components({"kind": "demo"}, prior, controlnet, device="cpu")
        source = f"the demo model in {args.demo_model}"
    else:
        components = random_components(TINY_SPEC)
        source = f"random tiny components ({args.demo_model} not found)"
    print(f"demo generator on the CPU ({torch.get_num_threads()} threads): {source}")
    print(f"  {params_m(components)}")
    print(
        f"  crop {crop}, {settings.steps} steps, pass 2 x{settings.upscale}, tiles "
        f"{settings.tile_latent}/{settings.tile_stride}, batch {settings.tile_batch}"
    )
    seconds = time_images(components, crop, settings, args.images)
    print(f"  {seconds:.2f} s/image")
    return 60.0 / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", nargs="*", default=[], help="config overrides (YAML)")
    parser.add_argument("--images", type=int, default=2, help="timed demo images (after a warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the demo timing")
    parser.add_argument(
        "--demo-model", type=Path, default=REPO / "results" / "generation" / "demo_model"
    )
    parser.add_argument("--sd15", action="store_true", help="time SD1.5 sizes even without CUDA")
    parser.add_argument("--sd15-crop", type=int, default=512)
    parser.add_argument("--sd15-steps", type=int, default=20)
    parser.add_argument("--sd15-images", type=int, default=1)
    parser.add_argument("--tile-batch", type=int, default=16)
    parser.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args(argv)

    if torch.cuda.is_available():
        bench_sd15(args, torch.device("cuda"))
    elif args.sd15:
        bench_sd15(replace_dtype(args, "float32"), torch.device("cpu"))
    else:
        print("no CUDA device: SD1.5-sized timings skipped (--sd15 forces them on the CPU)")
    torch.set_num_threads(args.threads)
    per_min = bench_demo(args)
    print(f"demo_images_per_min={per_min:.2f}")
    return 0


def replace_dtype(args: argparse.Namespace, dtype: str) -> argparse.Namespace:
    """Half precision is CUDA-only (generation.components.resolve_dtype)."""
    return argparse.Namespace(**{**vars(args), "dtype": dtype})


if __name__ == "__main__":
    sys.exit(main())
