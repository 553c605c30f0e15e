"""Peak GPU memory of a generation job at Stable Diffusion 1.5 size, counted on the CPU.

Randomly initialised components of SD 1.5's size (``SD15_SPEC``: U-Net, the 20-channel DGInStyle
ControlNet, VAE, CLIP ViT-L text tower). Counted with ``live_memory.LiveTensorBytes`` (the bytes
of live tensors, op by op: what ``torch.cuda.max_memory_allocated`` counts on a GPU):

- one guided ControlNet + U-Net call (``generation.sampler.predict_noise``) on ``--tiles`` 64x64
  latent tiles (512 px, 2 samples per tile with guidance), in float32 and bfloat16; a line through
  the two smallest tile counts gives the fixed part and the cost per tile;
- the VAE (always float32): decoding latents of 32 and 64 px and encoding images of 256 and
  512 px, scaled by pixel count to pass 2's 1024 px (attention runs through
  scaled_dot_product_attention, flash on the CPU, memory-efficient or flash on CUDA: no
  tokens x tokens matrix, so the memory grows with the pixels);
- the parameters of every component (all four stay on the device for the whole job).

A job's peak is the parameters plus the larger of one U-Net call at ``tile_batch`` tiles and the
VAE at 1024 px; the pass-2 canvas and condition (under 0.1 GB) are left out. CUDA adds its
context (about 0.5 GB, outside max_memory_allocated), cuBLAS / cuDNN workspaces and the caching
allocator's slack: a setting "fits" a card when the counted peak leaves 3 GB of it free.
Prints one ``key=value`` line per figure, sizes in GiB.

    python benchmarks/generation_memory.py [--tiles 1 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from live_memory import LiveTensorBytes, parameter_bytes  # noqa: E402

from flexseg.config import Part, read_part  # noqa: E402
from generation.components import SD15_SPEC, place_components, random_components  # noqa: E402
from generation.sampler import SamplerSettings, predict_noise  # noqa: E402

GIB = 2**30
TILE_BATCHES = (1, 4, 16, 27, 41, 81)
CARDS_GB = {"24gb": 24, "48gb": 48}
HEADROOM_GB = 3.0


def unet_call_peak(components, tiles: int) -> int:
    """Live-tensor peak of one guided call on ``tiles`` 64x64 tiles, inputs made inside."""
    settings = SamplerSettings.from_section(read_part({}, Part("generation.sampler"), "sampler"))
    components.scheduler.set_timesteps(settings.steps)
    t = int(components.scheduler.timesteps[0])
    width = components.text_encoder.config.hidden_size
    with torch.no_grad(), LiveTensorBytes() as meter:
        latents = torch.randn(tiles, 4, 64, 64)
        condition = torch.zeros(tiles, 20, 512, 512)
        embeds = torch.randn(2, 77, width)
        predict_noise(components, latents, condition, t, embeds, settings)
    return meter.peak


def vae_peaks(components, latent: int) -> tuple[int, int]:
    """Live-tensor peaks of decoding a ``latent``-px latent and encoding the matching image."""
    vae = components.vae
    with torch.no_grad(), LiveTensorBytes() as decode:
        vae.decode(torch.randn(1, 4, latent, latent))
    with torch.no_grad(), LiveTensorBytes() as encode:
        vae.encode(torch.randn(1, 3, latent * 8, latent * 8)).latent_dist.sample()
    return decode.peak, encode.peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if len(args.tiles) < 2:
        parser.error("--tiles needs at least two counts for the line")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    components = random_components(SD15_SPEC)
    print(f"# SD 1.5-sized random components built in {time.perf_counter() - start:.0f} s")

    # The VAE first: it stays float32 whatever the sampler dtype.
    vae = {}
    for latent in (32, 64):
        vae[latent] = vae_peaks(components, latent)
        print(
            f"vae_decode_{latent * 8}px_gib={vae[latent][0] / GIB:.3f}\n"
            f"vae_encode_{latent * 8}px_gib={vae[latent][1] / GIB:.3f}"
        )
    # pixels x4 from 512 to 1024 px; the 256 -> 512 growth shows how close to linear it is
    print(f"vae_decode_growth_256_to_512px={vae[64][0] / vae[32][0]:.2f}")
    vae_1024 = 4 * max(vae[64])
    print(f"vae_1024px_gib={vae_1024 / GIB:.3f}")

    for dtype in ("float32", "bfloat16"):
        components = place_components(components, "cpu", dtype)
        params = parameter_bytes(
            components.unet, components.controlnet, components.vae, components.text_encoder
        )
        print(f"params_{dtype}_gib={params / GIB:.3f}")
        peaks = {}
        for tiles in args.tiles:
            start = time.perf_counter()
            peaks[tiles] = unet_call_peak(components, tiles)
            print(f"unet_call_{dtype}_tiles{tiles}_gib={peaks[tiles] / GIB:.3f}")
            print(f"# {dtype}, {tiles} tile(s): {time.perf_counter() - start:.0f} s")
        a, b = sorted(args.tiles)[:2]
        per_tile = (peaks[b] - peaks[a]) / (b - a)
        fixed = peaks[a] - a * per_tile
        print(f"unet_call_{dtype}_per_tile_gib={per_tile / GIB:.3f}")
        print(f"unet_call_{dtype}_fixed_gib={fixed / GIB:.3f}")
        for tile_batch in TILE_BATCHES:
            peak = params + max(fixed + tile_batch * per_tile, vae_1024)
            fits = [name for name, gb in CARDS_GB.items() if peak / GIB + HEADROOM_GB <= gb]
            print(f"job_peak_{dtype}_tile_batch{tile_batch}_gib={peak / GIB:.2f}")
            print(f"# fits: {', '.join(fits) or 'neither 24 nor 48 GB'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
