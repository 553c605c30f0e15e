"""The demo world as training data for the demo generator, and its cached VAE latents.

Two parts of the world are read (config ``demo``; layouts written by ``flexseg.data.demo.world``):

- ``prior/images/*.png`` with ``prior/captions.csv`` (``name,condition,caption``): renders in every
  condition with captions that name it, the stand-in for Stable Diffusion's broad training set.
  Never the evaluation images.
- the source domain ``gta/`` (``images/*.png``, ``labels/*.png`` with raw Cityscapes ids) through
  ``flexseg.data.readers``, which returns train ids.

Decisions: each image is cut to a multiple of 8 pixels (its top-left part) so that latent and
pixel crops align; each image and its mirror image are encoded once by the trained VAE (posterior
mean and standard deviation kept) and the denoisers sample latents from these posteriors at
random crop positions, which is exact up to the crop border because the demo VAE is fully
convolutional.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from flexseg.data.readers import list_samples, load_sample
from flexseg.io import DataError, read_image

CAPTION_COLUMNS = ("name", "condition", "caption")


@dataclass(frozen=True)
class CaptionedImage:
    """One prior image and its caption."""

    path: Path
    condition: str
    caption: str


@dataclass
class TrainImage:
    """An RGB image (uint8, H x W x 3, sides multiples of 8), with its train-id label and
    caption where it has them."""

    name: str
    rgb: np.ndarray
    label: np.ndarray | None
    caption: str


@dataclass
class LatentImage:
    """The VAE posterior of one (possibly mirrored) image, unscaled: mean and std (4, h, w)."""

    name: str
    mean: torch.Tensor
    std: torch.Tensor
    label: np.ndarray | None
    caption: str


def read_captions(prior_root: str | Path) -> list[CaptionedImage]:
    """The rows of ``prior/captions.csv``; a row naming a missing image is a DataError."""
    prior_root = Path(prior_root)
    path = prior_root / "captions.csv"
    if not path.is_file():
        raise DataError(f"demo prior captions not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CAPTION_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing columns {missing} (expected {list(CAPTION_COLUMNS)})")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path}: no rows")
    out = []
    for line, row in enumerate(rows, start=2):
        name = row["name"].strip()
        candidates = [prior_root / "images" / name, prior_root / "images" / f"{name}.png"]
        image = next((p for p in candidates if p.is_file()), None)
        if not name or image is None:
            raise DataError(
                f"{path}, line {line}: image {name!r} not found under {prior_root}/images"
            )
        out.append(CaptionedImage(path=image, condition=row["condition"], caption=row["caption"]))
    return out


def _cut_to_multiple(
    rgb: np.ndarray, label: np.ndarray | None, factor: int, min_side: int, what: str
):
    height, width = rgb.shape[:2]
    if height < min_side or width < min_side:
        raise DataError(
            f"{what} is {width}x{height}, smaller than the {min_side}-pixel training crop"
        )
    h, w = height - height % factor, width - width % factor
    return rgb[:h, :w], None if label is None else label[:h, :w]


def load_prior_images(world: str | Path, factor: int, min_side: int) -> list[TrainImage]:
    """Every captioned prior image, cut to multiples of ``factor``."""
    out = []
    for row in read_captions(Path(world) / "prior"):
        rgb, _ = _cut_to_multiple(read_image(row.path), None, factor, min_side, str(row.path))
        out.append(TrainImage(name=row.path.stem, rgb=rgb, label=None, caption=row.caption))
    return out


def load_source_images(world: str | Path, factor: int, min_side: int) -> list[TrainImage]:
    """Every source (``gta`` layout) image with its label in train ids; no caption."""
    refs = list_samples({"name": "gta", "format": "gta", "root": str(Path(world) / "gta")})
    if not refs:
        raise DataError(f"no source images under {Path(world) / 'gta'}/images")
    out = []
    for ref in refs:
        rgb, label = load_sample(ref)
        rgb, label = _cut_to_multiple(rgb, label, factor, min_side, str(ref.image))
        out.append(TrainImage(name=ref.name, rgb=rgb, label=label, caption=""))
    return out


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1], the VAE's input range."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).float().div(127.5).sub(1.0)
    return t.movedim(-1, -3)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [-1, 1] -> uint8 (H, W, 3)."""
    return image.clamp(-1, 1).add(1).mul(127.5).round().byte().movedim(0, -1).cpu().numpy()


@torch.no_grad()
def encode_images(
    vae: AutoencoderKL, images: list[TrainImage], batch_size: int
) -> list[LatentImage]:
    """Posterior of every image and of its mirror image (mirrored labels too), in input order."""
    vae.eval()
    out: list[LatentImage] = []
    for flip in (False, True):
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            shapes = {im.rgb.shape for im in chunk}
            # Images of different sizes cannot share a batch; encode those one by one.
            groups = [chunk] if len(shapes) == 1 else [[im] for im in chunk]
            for group in groups:
                rgb = np.stack([im.rgb[:, ::-1] if flip else im.rgb for im in group])
                dist = vae.encode(to_tensor(rgb)).latent_dist
                for i, im in enumerate(group):
                    label = None if im.label is None else (im.label[:, ::-1] if flip else im.label)
                    out.append(
                        LatentImage(
                            name=im.name + ("_flip" if flip else ""),
                            mean=dist.mean[i].clone(),
                            std=dist.std[i].clone(),
                            label=None if label is None else np.ascontiguousarray(label),
                            caption=im.caption,
                        )
                    )
    return out


@dataclass(frozen=True)
class LatentCrop:
    """A batch of training crops: sampled scaled latents, labels (or None) and captions."""

    latents: torch.Tensor
    labels: np.ndarray | None
    captions: list[str]


def sample_crops(
    items: list[LatentImage],
    batch_size: int,
    crop_latent: int,
    factor: int,
    scaling: float,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> LatentCrop:
    """Random images, random aligned crops, one posterior sample each, times the VAE scaling."""
    picks = rng.integers(0, len(items), size=batch_size)
    latents, labels, captions = [], [], []
    for index in picks:
        item = items[int(index)]
        _, h, w = item.mean.shape
        y = int(rng.integers(0, h - crop_latent + 1))
        x = int(rng.integers(0, w - crop_latent + 1))
        window = (slice(None), slice(y, y + crop_latent), slice(x, x + crop_latent))
        noise = torch.randn(item.mean[window].shape, generator=generator)
        latents.append((item.mean[window] + item.std[window] * noise) * scaling)
        if item.label is not None:
            size = crop_latent * factor
            labels.append(
                item.label[y * factor : y * factor + size, x * factor : x * factor + size]
            )
        captions.append(item.caption)
    stacked = np.stack(labels) if len(labels) == len(picks) else None
    return LatentCrop(latents=torch.stack(latents), labels=stacked, captions=captions)


def sample_pixel_crops(
    images: list[TrainImage], batch_size: int, crop: int, rng: np.random.Generator
) -> torch.Tensor:
    """Random crops, randomly mirrored, as a VAE batch in [-1, 1]; an image is picked with
    probability proportional to its area, so every pixel of the world weighs the same."""
    areas = np.array([im.rgb.shape[0] * im.rgb.shape[1] for im in images], dtype=float)
    out = []
    for index in rng.choice(len(images), size=batch_size, p=areas / areas.sum()):
        rgb = images[int(index)].rgb
        y = int(rng.integers(0, rgb.shape[0] - crop + 1))
        x = int(rng.integers(0, rgb.shape[1] - crop + 1))
        patch = rgb[y : y + crop, x : x + crop]
        out.append(patch[:, ::-1] if rng.random() < 0.5 else patch)
    return to_tensor(np.stack(out))
