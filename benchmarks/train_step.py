"""The cost of FLEX-Seg's losses: one training step with GAP + UBE over the plain CE step.

Both steps run the same model config (``models.tiny`` of config/config.yaml unless ``--model``)
on the same batch (4 x 128 px street-like label layouts, CPU, 1 thread by default), laid out
channels-last as the trainer does: forward, loss, backward, AdamW. The two variants are stepped
alternately so that load changes on a shared machine hit both alike; after a warmup the medians
are compared (the quartiles of the step-by-step ratios show the noise: on a shared 2-core VM
one run's ratio moves by about +-0.02). The last line is ``flexseg_step_over_ce=<ratio>``
(target: at most 1.05).

    python benchmarks/train_step.py [--steps 40] [--warmup 5] [--batch 4] [--size 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from flexseg.config import build, load_config, stage_params
from flexseg.labels import NUM_CLASSES
from flexseg.losses import Objective, PrototypeBank
from flexseg.models import build_model, parse_model_config
from flexseg.train import Recipe


def street_labels(batch: int, size: int, seed: int) -> torch.Tensor:
    """Label maps with horizontal bands and boxes, so that boundaries look like a street's."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((batch, size, size), dtype=np.int64)
    for b in range(batch):
        cuts = np.sort(rng.integers(0, size, size=3))
        labels[b, : cuts[0]] = 10
        labels[b, cuts[0] : cuts[1]] = 2
        labels[b, cuts[1] : cuts[2]] = 8
        labels[b, cuts[2] :] = 0
        for _ in range(6):
            y, x = rng.integers(0, size - 8, size=2)
            h, w = rng.integers(4, size // 4, size=2)
            labels[b, y : y + h, x : x + w] = rng.choice([5, 6, 7, 11, 13, 18])
        labels[b, : size // 16] = 255
    return torch.from_numpy(labels)


class Stepper:
    """A model, its optimizer and its objective: one training step per call."""

    def __init__(self, model_cfg: dict, recipe: Recipe, flexseg: bool) -> None:
        torch.manual_seed(0)
        # laid out as the trainer lays it out (channels-last, the images too)
        self.model = build_model(model_cfg).train().to(memory_format=torch.channels_last)
        bank = None
        if flexseg:
            dim = parse_model_config(model_cfg).head.fusion_dim
            bank = PrototypeBank(NUM_CLASSES, len(recipe.gap.kernels), dim)
        ube, gap = (recipe.ube, recipe.gap) if flexseg else (None, None)
        self.objective = Objective(ube, gap, bank, recipe.feature_distance)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="a key of models in the config")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = stage_params(load_config(), "train", experiment="flexseg", model=args.model, seed=0)
    model_cfg, recipe = spec["model"], build(Recipe, spec["training"])
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = street_labels(args.batch, args.size, seed=0)
    plain, flex = Stepper(model_cfg, recipe, False), Stepper(model_cfg, recipe, True)
    times: dict[str, list[float]] = {"ce": [], "flexseg": []}
    for step in range(args.warmup + args.steps):
        order = (
            (("ce", plain), ("flexseg", flex)) if step % 2 else (("flexseg", flex), ("ce", plain))
        )
        for name, stepper in order:
            seconds = stepper(images, labels)
            if step >= args.warmup:
                times[name].append(seconds)
    ce, fs = statistics.median(times["ce"]), statistics.median(times["flexseg"])
    # The spread of the step-by-step ratios shows how far one run's medians can be trusted.
    pairs = sorted(f / c for f, c in zip(times["flexseg"], times["ce"], strict=True))
    q1, q3 = statistics.quantiles(pairs, n=4)[::2] if len(pairs) > 1 else (pairs[0], pairs[0])
    print(
        f"model {args.model}, batch {args.batch} x {args.size} px, {args.threads} thread(s), "
        f"median of {args.steps} steps"
    )
    print(f"plain CE step: {ce * 1000:.1f} ms")
    print(f"FLEX-Seg (GAP + UBE) step: {fs * 1000:.1f} ms (+{(fs - ce) * 1000:.1f} ms)")
    print(f"step-by-step ratio: quartiles {q1:.3f} .. {q3:.3f}")
    print(f"flexseg_step_over_ce={fs / ce:.3f}")


if __name__ == "__main__":
    main()
