"""The cost of FLEX-Seg's losses: one training step with GAP + UBE over the plain CE step.

Both steps run the same model config (``models.tiny`` of config/config.yaml unless ``--model``)
on the same batch (4 x 128 px street-like label layouts, CPU, 1 thread by default), laid out
channels-last as the trainer does: forward, loss, backward, AdamW. The two variants are stepped
alternately so that load changes on a shared machine hit both alike; after a warmup the medians
are compared (the quartiles of the step-by-step ratios show the noise: on a shared 2-core VM
one run's ratio moves by about +-0.02). The last line is ``flexseg_step_over_ce=<ratio>``
(target: at most 1.05).

``--paper`` measures the paper's ``daformer_mitb5`` instead (config/paper/gta_to_five.yaml, random
MiT-B5 weights) at its 512 crop, batch 2, and ends with ``paper_flexseg_step_over_ce=<ratio>``
(target: at most 1.03). The ImageNet feature distance, on in both the paper's DGInStyle and
FLEX-Seg runs, is left out of both steps here: it adds the same frozen forward pass to each, so
the ratio without it is the stricter one. On a shared machine the step-by-step ratios of such
long CPU steps scatter by tens of percent; so the loss pieces that differ (CE against FLEX-Seg's
objective, and the boundary mask, CE, UBE and GAP alone) are also timed on one pass's outputs
held fixed, 20 times alternately, giving ``paper_flexseg_loss_extra_ms`` and
``paper_flexseg_step_over_ce_from_losses`` = (CE step + extra) / CE step, the figure to read when
the quartiles are wide (``--losses-only`` times these pieces alone, in minutes). The
``..._cpu_time`` figures are the same ratios of the process's CPU time, which time spent waiting
for a core does not inflate: with ``--threads 1`` the steadier figures on a busy machine (with
more threads, idle threads' spinning counts in them).

    python benchmarks/train_step.py [--steps 40] [--warmup 5] [--batch 4] [--size 128]
    python benchmarks/train_step.py --paper [--steps 10] [--warmup 2] [--threads 2]
    python benchmarks/train_step.py --paper --losses-only [--loss-repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from flexseg.config import REPO_ROOT, build, load_config, stage_params
from flexseg.labels import NUM_CLASSES
from flexseg.losses import Objective, PrototypeBank
from flexseg.losses.boundary import boundary_mask
from flexseg.losses.gap import gap_loss
from flexseg.losses.objective import cross_entropy
from flexseg.losses.ube import ube_loss
from flexseg.models import build_model, parse_model_config
from flexseg.models.encoders import MIT_B5
from flexseg.train import Recipe

PAPER_CONFIG = REPO_ROOT / "config" / "paper" / "gta_to_five.yaml"
PAPER_MODEL = "daformer_mitb5"


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
        self.objective = Objective(
            ube, gap, bank, recipe.feature_distance, ce_reduction=recipe.ce_reduction
        )
        self.optimizer = torch.optim.AdamW(
            self.model.param_groups(recipe.lr, recipe.head_lr_mult, recipe.weight_decay),
            lr=recipe.lr,
            betas=recipe.betas,
            weight_decay=recipe.weight_decay,
        )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """One step: (wall seconds, CPU seconds of this process)."""
        start, cpu = time.perf_counter(), time.process_time()
        outputs = self.model(images, labels)
        terms = self.objective(outputs, images)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        self.optimizer.step()
        return time.perf_counter() - start, time.process_time() - cpu


def paper_setup() -> tuple[dict, Recipe]:
    """The paper's DAFormer MiT-B5 with random weights and its training recipe, less the
    feature distance (see the module docstring)."""
    config = load_config(PAPER_CONFIG)
    spec = stage_params(config, "train", experiment="flexseg", model=PAPER_MODEL, seed=0)
    model_cfg = spec["model"]
    model_cfg["encoder"] = {**model_cfg["encoder"], "pretrained": None, "config": dict(MIT_B5)}
    training = spec["training"]
    training["feature_distance"] = {**training["feature_distance"], "enabled": False}
    return model_cfg, build(Recipe, training)


def _timed(fn: Callable[[], torch.Tensor], backward: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn`` and its backward."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if backward:
        out.backward()
    return time.perf_counter() - start, time.process_time() - cpu


def loss_costs(
    flex: Stepper, images: torch.Tensor, labels: torch.Tensor, recipe: Recipe, repeats: int
) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of the loss pieces (forward + backward into the model's outputs) on one
    training pass's outputs held fixed: the part of a step that differs between CE and FLEX-Seg,
    measured without the model's own forward and backward, whose noise on a shared machine
    hides a difference of a few percent between whole steps."""
    with torch.no_grad():
        (out,) = flex.model(images, labels)
    logits = out.logits.detach().contiguous(memory_format=torch.channels_last)
    features = out.features.detach()
    plain_objective = Objective(
        None, None, None, recipe.feature_distance, ce_reduction=recipe.ce_reduction
    )
    ube, gap = recipe.ube, recipe.gap

    def leaf(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone().requires_grad_(True)

    def objective(obj: Objective) -> torch.Tensor:
        fixed = replace(out, logits=leaf(logits), features=leaf(features))
        return obj([fixed], images).total

    def mask() -> torch.Tensor:
        return boundary_mask(labels, ube.dilate_kernel, ube.erode_kernel)

    def upsampled() -> torch.Tensor:
        return F.interpolate(
            leaf(logits), size=labels.shape[-2:], mode="bilinear", align_corners=False
        )

    pieces: dict[str, Callable[[], torch.Tensor]] = {
        "CE objective": lambda: objective(plain_objective),
        "FLEX-Seg objective": lambda: objective(flex.objective),
        "  boundary mask (Eq. 1)": mask,
        "  CE on upsampled logits": lambda: cross_entropy(
            upsampled(), labels, reduction=recipe.ce_reduction,
        )[0],
        "  UBE on upsampled logits": lambda: ube_loss(
            upsampled(), labels, mask(), alpha=ube.alpha, eps=ube.eps,
            reduction=recipe.ce_reduction,
        ).loss,
        "  GAP (+ bank update)": lambda: gap_loss(
            leaf(features), labels, flex.objective.bank, kernels=gap.kernels,
            temperature=gap.temperature, momentum=gap.momentum,
        ).loss,
    }  # fmt: skip
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in pieces}
    for repeat in range(repeats + 1):
        order = list(pieces.items())
        for name, fn in order if repeat % 2 else reversed(order):
            seconds = _timed(fn, backward=fn is not mask)
            if repeat:  # the first round warms up
                times[name].append(seconds)
    return {
        name: (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
        for name, values in times.items()
    }


def print_loss_costs(
    costs: dict[str, tuple[float, float]], ce_step: tuple[float, float] | None
) -> None:
    """The loss pieces' table, FLEX-Seg's extra milliseconds and, given the CE step's (wall,
    CPU) seconds, the step ratios they imply."""
    print("losses alone, median (forward + backward to the outputs):  wall ms    CPU ms")
    for name, (wall, cpu) in costs.items():
        print(f"  {name:<28} {wall * 1000:26.1f} {cpu * 1000:9.1f}")
    extra = [f - c for f, c in zip(costs["FLEX-Seg objective"], costs["CE objective"], strict=True)]
    print(f"paper_flexseg_loss_extra_ms={extra[0] * 1000:.1f}")
    print(f"paper_flexseg_loss_extra_cpu_ms={extra[1] * 1000:.1f}")
    if ce_step is not None:
        (ce, ce_cpu), (wall, cpu) = ce_step, extra
        print(f"paper_flexseg_step_over_ce_from_losses={(ce + wall) / ce:.4f}")
        print(f"paper_flexseg_step_over_ce_from_losses_cpu_time={(ce_cpu + cpu) / ce_cpu:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="a key of models in the config")
    parser.add_argument("--paper", action="store_true", help="the paper's daformer_mitb5, 512, 2")
    parser.add_argument("--steps", type=int, help="measured steps (default 40; --paper: 10)")
    parser.add_argument("--warmup", type=int, help="steps not measured (default 5; --paper: 2)")
    parser.add_argument("--batch", type=int, help="images per step (default 4; --paper: 2)")
    parser.add_argument("--size", type=int, help="crop side (default 128; --paper: 512)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--loss-repeats", type=int, default=20, help="--paper: repeats of the loss pieces"
    )
    parser.add_argument(
        "--losses-only",
        action="store_true",
        help="--paper: only the loss pieces (no whole steps; minutes instead of most of an hour)",
    )
    args = parser.parse_args()
    defaults = (10, 2, 2, 512) if args.paper else (40, 5, 4, 128)
    for key, value in zip(("steps", "warmup", "batch", "size"), defaults, strict=True):
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.losses_only and not args.paper:
        parser.error("--losses-only goes with --paper")
    torch.set_num_threads(args.threads)

    if args.paper:
        model_cfg, recipe = paper_setup()
        args.model = PAPER_MODEL
    else:
        spec = stage_params(load_config(), "train", experiment="flexseg", model=args.model, seed=0)
        model_cfg, recipe = spec["model"], build(Recipe, spec["training"])
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = street_labels(args.batch, args.size, seed=0)
    flex = Stepper(model_cfg, recipe, True)
    if args.losses_only:
        print_loss_costs(loss_costs(flex, images, labels, recipe, args.loss_repeats), None)
        return
    plain = Stepper(model_cfg, recipe, False)
    times: dict[str, list[float]] = {"ce": [], "flexseg": []}
    cpu_times: dict[str, list[float]] = {"ce": [], "flexseg": []}
    for step in range(args.warmup + args.steps):
        order = (
            (("ce", plain), ("flexseg", flex)) if step % 2 else (("flexseg", flex), ("ce", plain))
        )
        for name, stepper in order:
            seconds, cpu_seconds = stepper(images, labels)
            if step >= args.warmup:
                times[name].append(seconds)
                cpu_times[name].append(cpu_seconds)
    ce, fs = statistics.median(times["ce"]), statistics.median(times["flexseg"])
    ce_cpu, fs_cpu = statistics.median(cpu_times["ce"]), statistics.median(cpu_times["flexseg"])
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
    print(f"CPU time per step: plain CE {ce_cpu * 1000:.1f} ms, FLEX-Seg {fs_cpu * 1000:.1f} ms")
    prefix = "paper_" if args.paper else ""
    if args.paper:
        costs = loss_costs(flex, images, labels, recipe, args.loss_repeats)
        print_loss_costs(costs, (ce, ce_cpu))
    print(f"{prefix}flexseg_step_over_ce_cpu_time={fs_cpu / ce_cpu:.3f}")
    print(f"{prefix}flexseg_step_over_ce={fs / ce:.3f}")


if __name__ == "__main__":
    main()
