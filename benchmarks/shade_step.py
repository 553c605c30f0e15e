"""The cost of SHADE as ratios (no absolute times): one training step with SHADE over the same
step without it, and one basis pass per source image over a plain step per batch image.

Steps: the same model config (``models.tiny`` of config/config.yaml unless ``--model``), the
FLEX-Seg objective (GAP + UBE) on the same batch (4 x 128 px street-like label layouts, CPU,
1 thread by default, channels-last as the trainer runs it); with SHADE the encoder stylizes
after its first stage, so everything after it runs on twice the images, and the style
consistency is added. The two variants are stepped alternately so that load changes on a shared
machine hit both alike; after a warmup the medians are compared (quartiles of the step-by-step
ratios show the noise).

Basis pass: ``--images`` synthetic source images of the demo's source size (320 x 176, GTA
layout, written as PNG to a temporary folder) through the whole pass as training runs it
(read, the training pipeline without RCS, the first stage in eval mode, farthest point sampling),
``--passes`` times; the median per image over the plain step's median per batch image. The last
lines are ``shade_step_over_plain=<ratio>`` and ``shade_basis_image_over_plain_image=<ratio>``.

    python benchmarks/shade_step.py [--steps 30] [--warmup 5] [--batch 4] [--size 128] [--images 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from flexseg.config import build, load_config, stage_params
from flexseg.data.lists import entry_from_ref
from flexseg.data.readers import list_samples
from flexseg.io import write_image, write_label
from flexseg.labels import NUM_CLASSES
from flexseg.losses import Objective, PrototypeBank
from flexseg.models import build_model, parse_model_config
from flexseg.shade import StyleBasis
from flexseg.train import Recipe

# train id -> raw Cityscapes / GTA5 label id
RAW_IDS = {0: 7, 2: 11, 5: 17, 6: 19, 7: 20, 8: 21, 10: 23, 11: 24, 13: 26, 18: 33}


def street_labels(batch: int, height: int, width: int, seed: int) -> np.ndarray:
    """Label maps (train ids) with horizontal bands and boxes, so that boundaries look like a
    street's."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((batch, height, width), dtype=np.int64)
    for b in range(batch):
        cuts = np.sort(rng.integers(0, height, size=3))
        labels[b, : cuts[0]] = 10
        labels[b, cuts[0] : cuts[1]] = 2
        labels[b, cuts[1] : cuts[2]] = 8
        labels[b, cuts[2] :] = 0
        for _ in range(6):
            y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
            h, w = rng.integers(4, max(5, height // 4)), rng.integers(4, max(5, width // 4))
            labels[b, y : y + h, x : x + w] = rng.choice([5, 6, 7, 11, 13, 18])
        labels[b, : max(1, height // 16)] = 255
    return labels


class Stepper:
    """A model, its optimizer and its objective: one training step per call."""

    def __init__(self, model_cfg: dict, recipe: Recipe, entries: list, shade: bool) -> None:
        torch.manual_seed(0)
        self.model = build_model(model_cfg).train().to(memory_format=torch.channels_last)
        self.basis = None
        if shade:
            settings = dataclasses.replace(recipe.shade, enabled=True)
            self.basis = StyleBasis(self.model, settings, entries, recipe.transforms, 0, 4, 0)
            self.basis.refresh(0)
        dim = parse_model_config(model_cfg).head.fusion_dim
        bank = PrototypeBank(NUM_CLASSES, len(recipe.gap.kernels), dim)
        shade_settings = self.basis.settings if self.basis is not None else None
        self.objective = Objective(
            recipe.ube,
            recipe.gap,
            bank,
            recipe.feature_distance,
            shade=shade_settings,
            ce_reduction=recipe.ce_reduction,
        )
        self.optimizer = torch.optim.AdamW(
            self.model.param_groups(recipe.lr, recipe.head_lr_mult, recipe.weight_decay),
            lr=recipe.lr,
            betas=recipe.betas,
            weight_decay=recipe.weight_decay,
        )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        start = time.perf_counter()
        outputs = self.model(images, labels)
        terms = self.objective(outputs, images)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def write_source_set(root: Path, count: int, size: tuple[int, int]) -> list:
    """``count`` GTA-layout images of ``size`` (width, height) and their data-list rows."""
    width, height = size
    labels = street_labels(count, height, width, seed=1)
    rng = np.random.default_rng(2)
    colours = rng.integers(0, 256, size=(256, 3))
    raw = np.zeros(256, dtype=np.uint8)
    for train_id, raw_id in RAW_IDS.items():
        raw[train_id] = raw_id
    for i, label in enumerate(labels):
        ids = np.where(label == 255, 0, raw[np.clip(label, 0, 255)]).astype(np.uint8)
        noise = rng.normal(0, 12, size=(height, width, 3))
        image = np.clip(colours[np.clip(label, 0, 255)] + noise, 0, 255).astype(np.uint8)
        write_image(root / "images" / f"{i:05d}.png", image)
        write_label(root / "labels" / f"{i:05d}.png", ids)
    refs = list_samples({"name": "gta", "format": "gta", "root": str(root)})
    return [entry_from_ref(r, "source") for r in refs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="a key of models in the config")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=64, help="source images of the basis pass")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config()
    spec = stage_params(config, "train", experiment="flexseg", model=args.model, seed=0)
    model_cfg, recipe = spec["model"], build(Recipe, spec["training"])
    source_size = tuple(config["demo"]["source"]["size"])
    with tempfile.TemporaryDirectory() as tmp:
        entries = write_source_set(Path(tmp), args.images, source_size)
        torch.manual_seed(0)
        images = torch.randn(args.batch, 3, args.size, args.size)
        images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.from_numpy(street_labels(args.batch, args.size, args.size, seed=0))
        plain = Stepper(model_cfg, recipe, entries, shade=False)
        shade = Stepper(model_cfg, recipe, entries, shade=True)
        times: dict[str, list[float]] = {"plain": [], "shade": []}
        for step in range(args.warmup + args.steps):
            order = (("plain", plain), ("shade", shade))
            for name, stepper in order if step % 2 else order[::-1]:
                seconds = stepper(images, labels)
                if step >= args.warmup:
                    times[name].append(seconds)
        passes = [shade.basis.refresh(0).seconds for _ in range(args.passes)]
    base, styled = statistics.median(times["plain"]), statistics.median(times["shade"])
    pairs = sorted(s / p for s, p in zip(times["shade"], times["plain"], strict=True))
    q1, q3 = statistics.quantiles(pairs, n=4)[::2] if len(pairs) > 1 else (pairs[0], pairs[0])
    per_image = statistics.median(passes) / args.images
    print(
        f"model {args.model}, batch {args.batch} x {args.size} px, {args.threads} thread(s), "
        f"GAP + UBE, median of {args.steps} steps"
    )
    print(f"step-by-step ratio (SHADE over plain): quartiles {q1:.3f} .. {q3:.3f}")
    print(
        f"basis pass: {args.images} images of {source_size[0]}x{source_size[1]} px, crop "
        f"{recipe.transforms.crop_size}, median of {args.passes} passes"
    )
    print(f"shade_step_over_plain={styled / base:.3f}")
    print(f"shade_basis_image_over_plain_image={per_image / (base / args.batch):.3f}")


if __name__ == "__main__":
    main()
