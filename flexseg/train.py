"""Train one segmentor: ``python -m flexseg.train --params P --data CSV --out-dir DIR``.

The recipe is DAFormer's (which FLEX-Seg inherits; training_and_evaluation.md §1): AdamW with the
decode head at 10x the rate, poly decay with linear warmup (``flexseg.schedule``), pixel
cross-entropy on logits upsampled bilinearly (align_corners False) to the label size, and
optionally DAFormer's ImageNet feature distance. FLEX-Seg adds, per the experiment's switches:

    L = sum_o weight_o * (L_seg(o) + lambda_gap * L_GAP(o)) + lambda_fd * L_FD        (Eq. 9)

over the segmentor's outputs o (DAFormer: one, weight 1; HRDA: fused 0.9 and detail 0.1), where
L_seg is UBE (Eqs. 7-8) when ``ube`` is on and the mean cross-entropy otherwise, L_GAP is the
prototype InfoNCE (Eqs. 3-6) on the output's decoder features with one prototype bank shared by
all outputs, and images are drawn by Hardness-Aware Sampling (Eqs. 10-12) when ``has`` is on.

Decisions the paper leaves open:

* GAP on HRDA runs on each output's features and is weighted like that output's segmentation
  loss (for DAFormer this is exactly Eq. 9). The feature distance is added once, unweighted, as
  in DAFormer, averaged over the outputs that carry encoder features.
* HAS records each image's own segmentation loss of the first (main) output: the UBE-weighted mean
  CE with UBE on, the mean CE otherwise.
* Without HAS, images are drawn in seeded epochs without replacement; the last partial
  iteration of an epoch is dropped (mmseg's ``drop_last``).
* Mixed precision (``amp`` bf16/fp16) is CUDA-only; asking for AMP on a CPU is an error, not a
  silent fallback. TF32 for the float32 work is ``tf32`` (``flexseg.precision``), set either way. The losses are computed in float32. The model and images are channels-last
  on every device.
* A non-finite loss stops the run at once with an error naming the iteration and the term; the
  step is not taken and no checkpoint is written after it.
* Checkpoints (``DIR/checkpoints/last.pt``, every ``checkpoint_every`` iterations) hold the
  model, optimizer, schedule, prototype bank, HAS sampler, all random states, the loss log and a
  hash of (params, data list, world size). A run resumes from it when the hash matches and starts
  fresh otherwise (saying so). Data order and augmentation are pure functions of (seed, draw
  number, image), so on a CPU a resumed run ends bitwise identical to an uninterrupted one.
* DDP: ``--nproc N`` (N > 1) re-launches the command as N processes under torch's elastic
  launcher (what torchrun runs); the same command can also be started as
  ``torchrun --standalone --nproc_per_node N -m flexseg.train ...``. Every
  process uses the same seed (so dropout and HRDA detail crops share a stream), draws its own
  images, keeps an identical prototype bank (all processes' boundary features update it) and
  identical HAS scores (losses all-reduced at each refresh). Only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from flexseg.checkpoint import load_training_state, save_model, save_training_state
from flexseg.config import ConfigError, add_params_arguments, params_from_args
from flexseg.data.lists import read_data_list
from flexseg.data.training_set import (
    Draw,
    EpochOrder,
    TrainingItem,
    TrainingSet,
    count_parts,
    draw_number,
)
from flexseg.device import resolve_device
from flexseg.io import (
    DataError,
    git_revision,
    remove_stale_temporaries,
    write_json,
    write_text,
)
from flexseg.labels import IGNORE_INDEX, NUM_CLASSES, THING_CLASSES
from flexseg.losses import PrototypeBank, boundary_mask, feature_distance, gap_loss, ube_loss
from flexseg.losses.ube import pixel_rows, valid_means
from flexseg.models import SegOutput, build_model
from flexseg.models.segmentor import parse_model_config
from flexseg.precision import apply_tf32
from flexseg.sampling import HardnessSampler
from flexseg.schedule import PolyWarmup

LOG_COLUMNS = ("iteration", "lr", "total", "seg", "gap", "fd", "has_threshold", "seconds")
TERM_NAMES = ("total", "seg", "gap", "fd")
DATA_KINDS = ("source", "combined", "generated")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the message names the iteration and term."""


# ---------------------------------------------------------------------------------------------
# Settings, read explicitly from the params (the `train` stage slice of the config)


def _get(section: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(section, dict):
        raise ConfigError(f"params {where}: expected a mapping, got {type(section).__name__}")
    if key not in section:
        raise ConfigError(f"params {where}: missing key {key!r}")
    return section[key]


@dataclass(frozen=True)
class Experiment:
    name: str
    data: str
    gap: bool
    ube: bool
    has: bool

    @classmethod
    def from_params(cls, exp: dict[str, Any]) -> Experiment:
        data = _get(exp, "data", "experiment")
        if data not in DATA_KINDS:
            raise ConfigError(f"params experiment.data: {data!r} is not one of {DATA_KINDS}")
        return cls(
            name=str(_get(exp, "name", "experiment")),
            data=data,
            gap=bool(_get(exp, "gap", "experiment")),
            ube=bool(_get(exp, "ube", "experiment")),
            has=bool(_get(exp, "has", "experiment")),
        )


@dataclass(frozen=True)
class GapSettings:
    momentum: float
    temperature: float
    weight: float
    kernels: tuple[int, ...]


@dataclass(frozen=True)
class UbeSettings:
    alpha: float
    eps: float
    dilate_kernel: int
    erode_kernel: int


@dataclass(frozen=True)
class HasSettings:
    beta: float
    refresh_every: int
    k: float
    midpoint: float
    temperature: float


@dataclass(frozen=True)
class FdSettings:
    enabled: bool
    weight: float
    thing_share: float


@dataclass(frozen=True)
class Recipe:
    """The ``training`` section fields the loop reads (transforms read theirs separately)."""

    iterations: int
    batch_size: int
    lr: float
    head_lr_mult: float
    weight_decay: float
    betas: tuple[float, float]
    warmup_iters: int
    warmup_ratio: float
    poly_power: float
    checkpoint_every: int
    log_every: int
    amp: str
    tf32: bool
    device: str
    threads: int
    workers: int
    nproc: int
    gap: GapSettings
    ube: UbeSettings
    has: HasSettings
    fd: FdSettings

    @classmethod
    def from_params(cls, t: dict[str, Any]) -> Recipe:
        w = "training"
        gap, ube = _get(t, "gap", w), _get(t, "ube", w)
        has, fd = _get(t, "has", w), _get(t, "feature_distance", w)
        amp = _get(t, "amp", w)
        if amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"params training.amp: {amp!r} is not one of none, bf16, fp16")
        device = _get(t, "device", w)
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"params training.device: {device!r} is not one of auto, cpu, cuda")
        betas = _get(t, "betas", w)
        recipe = cls(
            iterations=int(_get(t, "iterations", w)),
            batch_size=int(_get(t, "batch_size", w)),
            lr=float(_get(t, "lr", w)),
            head_lr_mult=float(_get(t, "head_lr_mult", w)),
            weight_decay=float(_get(t, "weight_decay", w)),
            betas=(float(betas[0]), float(betas[1])),
            warmup_iters=int(_get(t, "warmup_iters", w)),
            warmup_ratio=float(_get(t, "warmup_ratio", w)),
            poly_power=float(_get(t, "poly_power", w)),
            checkpoint_every=int(_get(t, "checkpoint_every", w)),
            log_every=int(_get(t, "log_every", w)),
            amp=amp,
            tf32=bool(_get(t, "tf32", w)),
            device=device,
            threads=int(_get(t, "threads", w)),
            workers=int(_get(t, "workers", w)),
            nproc=int(_get(t, "nproc", w)),
            gap=GapSettings(
                momentum=float(_get(gap, "momentum", f"{w}.gap")),
                temperature=float(_get(gap, "temperature", f"{w}.gap")),
                weight=float(_get(gap, "weight", f"{w}.gap")),
                kernels=tuple(int(k) for k in _get(gap, "kernels", f"{w}.gap")),
            ),
            ube=UbeSettings(
                alpha=float(_get(ube, "alpha", f"{w}.ube")),
                eps=float(_get(ube, "eps", f"{w}.ube")),
                dilate_kernel=int(_get(ube, "dilate_kernel", f"{w}.ube")),
                erode_kernel=int(_get(ube, "erode_kernel", f"{w}.ube")),
            ),
            has=HasSettings(
                beta=float(_get(has, "beta", f"{w}.has")),
                refresh_every=int(_get(has, "refresh_every", f"{w}.has")),
                k=float(_get(has, "k", f"{w}.has")),
                midpoint=float(_get(has, "midpoint", f"{w}.has")),
                temperature=float(_get(has, "temperature", f"{w}.has")),
            ),
            fd=FdSettings(
                enabled=bool(_get(fd, "enabled", f"{w}.feature_distance")),
                weight=float(_get(fd, "weight", f"{w}.feature_distance")),
                thing_share=float(_get(fd, "thing_share", f"{w}.feature_distance")),
            ),
        )
        for name in ("iterations", "batch_size", "checkpoint_every", "log_every", "threads"):
            if getattr(recipe, name) < 1:
                raise ConfigError(f"params training.{name} must be at least 1")
        return recipe


@dataclass(frozen=True)
class RunSpec:
    """Everything ``params`` says about one run."""

    experiment: Experiment
    model_cfg: dict[str, Any]
    training: dict[str, Any]
    recipe: Recipe
    seed: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RunSpec:
        for key in ("experiment", "model", "training", "seed"):
            if key not in params:
                raise ConfigError(f"params: missing key {key!r} (expected the `train` stage slice)")
        model_cfg = dict(params["model"])
        parse_model_config(model_cfg)  # fail early, naming the key, on a bad model entry
        return cls(
            experiment=Experiment.from_params(params["experiment"]),
            model_cfg=model_cfg,
            training=dict(params["training"]),
            recipe=Recipe.from_params(params["training"]),
            seed=int(params["seed"]),
        )


# ---------------------------------------------------------------------------------------------
# Losses


@dataclass
class LossTerms:
    """The objective of one step and its parts (all scalars; only ``total`` is back-propagated)."""

    total: torch.Tensor
    seg: torch.Tensor
    gap: torch.Tensor
    fd: torch.Tensor
    per_image: torch.Tensor  # (B,) detached segmentation loss of each image of the main output

    def values(self) -> torch.Tensor:
        return torch.stack([t.detach().float() for t in (self.total, self.seg, self.gap, self.fd)])


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean pixel CE over the valid pixels (ignore 255) and each image's mean CE (detached).

    Computed on pixel rows (``pixel_rows``: a view of channels-last logits), like UBE."""
    ce = F.cross_entropy(
        pixel_rows(logits), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return valid_means(ce, labels != IGNORE_INDEX)


class Objective:
    """Eq. 9 over a training pass's outputs (see the module doc)."""

    def __init__(
        self,
        experiment: Experiment,
        recipe: Recipe,
        bank: PrototypeBank | None = None,
        imagenet_model: nn.Module | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        if experiment.gap and bank is None:
            raise ValueError("GAP is on but no prototype bank was given")
        if recipe.fd.enabled and imagenet_model is None:
            raise ValueError("the feature distance is on but no ImageNet model was given")
        self.experiment = experiment
        self.recipe = recipe
        self.bank = bank
        self.imagenet_model = imagenet_model
        self.autocast = autocast

    def __call__(self, outputs: Sequence[SegOutput], images: torch.Tensor) -> LossTerms:
        exp, r = self.experiment, self.recipe
        zero = images.new_zeros((), dtype=torch.float32)
        seg_total, gap_total, per_image = zero, zero, None
        for out in outputs:
            # Upsampled in channels-last: on a CPU the bilinear kernel and its backward run 2-3x
            # faster than on (B, C, H, W) memory, and the losses read the result as pixel rows.
            logits = F.interpolate(
                out.logits.float().contiguous(memory_format=torch.channels_last),
                size=out.labels.shape[-2:],
                mode="bilinear",
                align_corners=False,
            )
            if exp.ube:
                boundary = boundary_mask(out.labels, r.ube.dilate_kernel, r.ube.erode_kernel)
                result = ube_loss(logits, out.labels, boundary, alpha=r.ube.alpha, eps=r.ube.eps)
                seg, images_loss = result.loss, result.per_image
            else:
                seg, images_loss = cross_entropy(logits, out.labels)
            if per_image is None:
                per_image = images_loss
            seg_total = seg_total + out.weight * seg
            if exp.gap:
                if out.features is None:
                    raise ValueError("GAP is on but the model was built without GAP features")
                gap = gap_loss(
                    out.features.float(),
                    out.labels,
                    self.bank,
                    kernels=r.gap.kernels,
                    temperature=r.gap.temperature,
                    momentum=r.gap.momentum,
                ).loss
                gap_total = gap_total + out.weight * gap
        total = seg_total + r.gap.weight * gap_total
        fd_total = zero
        if self.imagenet_model is not None:
            with_features = [o for o in outputs if o.stage_features is not None]
            if with_features:
                with torch.no_grad(), self.autocast():
                    reference = self.imagenet_model.encode_last_stage(images)
                for out in with_features:
                    fd_total = fd_total + feature_distance(
                        out.stage_features, reference, out.labels, THING_CLASSES, r.fd.thing_share
                    )
                fd_total = fd_total / len(with_features)
                total = total + r.fd.weight * fd_total
        return LossTerms(
            total=total, seg=seg_total, gap=gap_total, fd=fd_total, per_image=per_image
        )


# ---------------------------------------------------------------------------------------------
# Processes, devices, random states


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the process group that torchrun describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(rank=0, world=1, local_rank=0)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world=world, local_rank=local_rank)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    version, keys, *rest = state["python"]
    random.setstate((version, tuple(keys), *rest))
    name, np_keys, *np_rest = state["numpy"]
    np.random.set_state((name, np.asarray(np_keys, dtype=np.uint32), *np_rest))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def params_hash(params: dict[str, Any], data_path: Path, world: int) -> str:
    """What a checkpoint must match to be resumed: the params, the data list's bytes, the world."""
    digest = hashlib.sha256()
    digest.update(json.dumps(params, sort_keys=True, separators=(",", ":")).encode())
    digest.update(hashlib.sha256(data_path.read_bytes()).hexdigest().encode())
    digest.update(str(world).encode())
    return digest.hexdigest()


def _gather(obj: Any, info: DistInfo) -> list[Any]:
    """``obj`` of every process, by rank."""
    if not info.active:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------
# The order of draws


class BatchPlan:
    """The DataLoader's batch sampler: ``Draw`` keys for iterations ``[start, stop)``.

    The trainer opens a new loader iterator for each window between HAS refreshes and
    checkpoints, so that every draw of a window happens after the preceding refresh and a
    checkpoint never falls on draws made ahead (prefetched) but not yet trained on.
    """

    def __init__(
        self, indices: Callable[[int], list[int]], info: DistInfo, batch_size: int
    ) -> None:
        self.indices = indices
        self.info = info
        self.batch_size = batch_size
        self.start = 0
        self.stop = 0

    def set_window(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[Draw]]:
        for it in range(self.start, self.stop):
            idx = self.indices(it)
            if len(idx) != self.batch_size:
                raise RuntimeError(
                    f"iteration {it}: {len(idx)} indices for batch {self.batch_size}"
                )
            yield [
                Draw(draw_number(it, self.info.rank, self.info.world, self.batch_size, j), i)
                for j, i in enumerate(idx)
            ]


def has_indices(sampler: HardnessSampler, batch_size: int) -> Callable[[int], list[int]]:
    def indices(iteration: int) -> list[int]:
        expected = iteration * batch_size
        if sampler.draws != expected:
            raise RuntimeError(
                f"HAS sampler out of step: {sampler.draws} draws before iteration {iteration}, "
                f"expected {expected}"
            )
        return [sampler.draw() for _ in range(batch_size)]

    return indices


def window_end(iteration: int, recipe: Recipe, use_has: bool) -> int:
    stops = [
        recipe.iterations,
        (iteration // recipe.checkpoint_every + 1) * recipe.checkpoint_every,
    ]
    if use_has:
        every = recipe.has.refresh_every
        stops.append((iteration // every + 1) * every)
    return min(stops)


def _worker_init(_: int) -> None:
    # Workers only decode and augment; their own generators are never used (see TrainingSet).
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


# ---------------------------------------------------------------------------------------------
# The loss log


@dataclass
class LossLog:
    """Rows of ``loss_log.csv`` and the sums of the window since the last row."""

    rows: list[dict[str, float]] = field(default_factory=list)
    sums: list[float] = field(default_factory=lambda: [0.0] * len(TERM_NAMES))
    count: int = 0

    def add(self, values: Sequence[float]) -> None:
        self.sums = [s + float(v) for s, v in zip(self.sums, values, strict=True)]
        self.count += 1

    def flush(self, iteration: int, lr: float, threshold: float, seconds: float) -> dict:
        means = [s / max(self.count, 1) for s in self.sums]
        row = {"iteration": iteration, "lr": lr, **dict(zip(TERM_NAMES, means, strict=True))}
        row.update({"has_threshold": threshold, "seconds": seconds})
        self.rows.append(row)
        self.sums, self.count = [0.0] * len(TERM_NAMES), 0
        return row

    def csv_text(self) -> str:
        lines = [",".join(LOG_COLUMNS)]
        for row in self.rows:
            cells = []
            for col in LOG_COLUMNS:
                value = row[col]
                if col == "iteration":
                    cells.append(str(int(value)))
                elif isinstance(value, float) and math.isnan(value):
                    cells.append("")
                else:
                    cells.append(f"{value:.8g}")
            lines.append(",".join(cells))
        return "\n".join(lines) + "\n"

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows], "sums": list(self.sums), "count": self.count}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LossLog:
        return cls(
            rows=[dict(r) for r in state["rows"]], sums=list(state["sums"]), count=state["count"]
        )


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class TrainResult:
    """What a run did, with the trained objects (for programmatic use and tests)."""

    out_dir: Path
    iterations_done: int
    completed: bool  # False when stopped early by ``stop_after``
    resumed_from: int  # 0 for a fresh start
    seconds_per_iteration: float
    model: nn.Module
    bank: PrototypeBank | None
    sampler: HardnessSampler | None


def check_parts(experiment: Experiment, data_path: Path, source: int, generated: int) -> None:
    """The data list must hold the parts the experiment trains on (and only those)."""
    need_source = experiment.data in ("source", "combined")
    need_generated = experiment.data in ("generated", "combined")
    problems = []
    if need_source and source == 0:
        problems.append("no source rows")
    if need_generated and generated == 0:
        problems.append("no generated rows")
    if not need_source and source > 0:
        problems.append(f"{source} source rows")
    if not need_generated and generated > 0:
        problems.append(f"{generated} generated rows")
    if problems:
        raise DataError(
            f"{data_path}: experiment {experiment.name!r} trains on {experiment.data!r} data, but "
            f"the list has {' and '.join(problems)} (source {source}, generated {generated})"
        )


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _tensorboard(out_dir: Path, info: DistInfo) -> Any:
    if not info.is_main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


class Trainer:
    """One training job: built from the params, optionally restored, then run."""

    def __init__(self, params: dict[str, Any], data_path: Path, out_dir: Path) -> None:
        self.params = params
        self.spec = spec = RunSpec.from_params(params)
        self.recipe = recipe = spec.recipe
        self.data_path, self.out_dir = data_path, out_dir
        device = resolve_device(recipe.device, "training.device")
        if recipe.amp != "none" and device.type != "cuda":
            raise ConfigError(
                f"training.amp is {recipe.amp}, which needs a CUDA device (this run is on "
                f"{device}); set training.amp: none"
            )
        self.info = info = setup_distributed(device)
        apply_tf32(recipe.tf32)
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
            torch.backends.cudnn.benchmark = True
        else:
            torch.set_num_threads(recipe.threads)
        self.device = device
        cv2.setNumThreads(recipe.threads)
        seed_everything(spec.seed)

        entries = read_data_list(data_path)
        parts = count_parts(entries)
        self.say(
            f"data list {data_path}: {parts.source} source rows, {parts.generated} generated rows"
        )
        check_parts(spec.experiment, data_path, parts.source, parts.generated)
        self.dataset = TrainingSet(entries, spec.training, spec.seed)
        self._build_model()
        self._build_sampling()
        self.run_hash = params_hash(params, data_path, info.world)
        self.checkpoint_path = out_dir / "checkpoints" / "last.pt"
        if info.is_main:
            # a job killed inside a write (a checkpoint, the loss log) left a temporary behind
            for folder in (out_dir, self.checkpoint_path.parent):
                remove_stale_temporaries(folder)
        self.start, self.log, self.elapsed_before = 0, LossLog(), 0.0

    def say(self, message: str) -> None:
        if self.info.is_main:
            print(message, flush=True)

    def _build_model(self) -> None:
        spec, recipe, device = self.spec, self.recipe, self.device
        self.model = build_model(spec.model_cfg, gap_features=spec.experiment.gap)
        imagenet_model = None
        if recipe.fd.enabled:
            if spec.model_cfg.get("encoder", {}).get("pretrained") is None:
                raise ConfigError(
                    "training.feature_distance.enabled is true but "
                    f"models.{spec.model_cfg.get('name', '')}.encoder.pretrained is null: the "
                    "feature distance compares with the encoder's ImageNet weights (set a "
                    "pretrained source or disable the feature distance)"
                )
            # the fresh model holds exactly the ImageNet encoder weights: copy before training
            imagenet_model = copy.deepcopy(self.model).eval().requires_grad_(False).to(device)
        self.model.to(device)
        # Channels-last on every device: cuDNN's tensor-core kernels and oneDNN's CPU kernels
        # both prefer it (tiny demo model, one CPU thread: CE step 62 -> 56 ms), and GAP then
        # gathers its boundary pixels as contiguous rows of the decoder feature.
        self.model.to(memory_format=torch.channels_last)
        self.bank = None
        if spec.experiment.gap:
            dim = parse_model_config(spec.model_cfg).head.fusion_dim
            self.bank = PrototypeBank(NUM_CLASSES, len(recipe.gap.kernels), dim).to(device)
        self.objective = Objective(
            spec.experiment,
            recipe,
            self.bank,
            imagenet_model,
            autocast=lambda: _autocast(device, recipe.amp),
        )
        self.optimizer = torch.optim.AdamW(
            self.model.param_groups(recipe.lr, recipe.head_lr_mult, recipe.weight_decay),
            lr=recipe.lr,
            betas=recipe.betas,
            weight_decay=recipe.weight_decay,
        )
        self.schedule = PolyWarmup(
            recipe.iterations, recipe.poly_power, recipe.warmup_iters, recipe.warmup_ratio
        )
        self.schedule.attach(self.optimizer)
        self.scaler = torch.amp.GradScaler("cuda") if recipe.amp == "fp16" else None
        self.train_model: nn.Module = self.model
        if self.info.active:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.info.local_rank] if device.type == "cuda" else None,
                gradient_as_bucket_view=True,
            )

    def _build_sampling(self) -> None:
        spec, recipe, info = self.spec, self.recipe, self.info
        self.sampler = None
        if spec.experiment.has:
            self.sampler = HardnessSampler(
                len(self.dataset),
                recipe.batch_size,
                beta=recipe.has.beta,
                refresh_every=recipe.has.refresh_every,
                k=recipe.has.k,
                midpoint=recipe.has.midpoint,
                temperature=recipe.has.temperature,
                seed=spec.seed,
                rank=info.rank,
            )
            indices = has_indices(self.sampler, recipe.batch_size)
        else:
            order = EpochOrder(len(self.dataset), recipe.batch_size, info.world, spec.seed)

            def indices(iteration: int) -> list[int]:
                return order.indices(iteration, info.rank)

        self.plan = BatchPlan(indices, info, recipe.batch_size)
        self.loader = DataLoader(
            self.dataset,
            batch_sampler=self.plan,
            num_workers=recipe.workers,
            persistent_workers=recipe.workers > 0,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if recipe.workers > 0 else None,
            # a private generator: opening loader iterators must not consume the global RNG
            generator=torch.Generator().manual_seed(spec.seed),
        )

    # -- checkpoints ------------------------------------------------------------------------

    def restore(self) -> None:
        """Continue from ``checkpoints/last.pt`` when it was written for this very run."""
        if not self.checkpoint_path.is_file():
            return
        state = load_training_state(self.checkpoint_path)
        if state.get("params_hash") != self.run_hash:
            self.say(
                f"checkpoint {self.checkpoint_path} was written for other params, data or "
                "process count; starting fresh"
            )
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.bank is not None:
            self.bank.load_state_dict(state["bank"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"][self.info.rank])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][self.info.rank], self.device)
        self.log = LossLog.from_state(state["log"])
        self.start, self.elapsed_before = int(state["iteration"]), float(state["elapsed"])
        self.say(f"resuming from {self.checkpoint_path} at iteration {self.start}")

    def save_checkpoint(self, iteration: int, seconds: float) -> None:
        """Collective: every process hands in its random states; rank 0 writes."""
        rng = _gather(rng_state(self.device), self.info)
        sampler = _gather(self.sampler.state_dict(), self.info) if self.sampler else None
        if not self.info.is_main:
            return
        state = {
            "params_hash": self.run_hash,
            "iteration": iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "bank": self.bank.state_dict() if self.bank is not None else None,
            "sampler": sampler,
            "rng": rng,
            "log": self.log.state_dict(),
            "elapsed": seconds,
        }
        save_training_state(self.checkpoint_path, state)

    # -- the loop -----------------------------------------------------------------------------

    def step(self, it: int, batch: TrainingItem) -> list[float]:
        """One optimizer step; the loss terms averaged over processes."""
        self.schedule.apply(self.optimizer, it)
        images = batch.image.to(self.device, non_blocking=True)
        labels = batch.label.to(self.device, non_blocking=True)
        images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(self.device, self.recipe.amp):
            outputs = self.train_model(images, labels)
        terms = self.objective(outputs, images)
        values = terms.values()
        if self.info.active:
            # a non-finite term on any process makes the sum non-finite everywhere: all stop
            dist.all_reduce(values)
            values = values / self.info.world
        values = values.cpu().tolist()
        bad = [n for n, v in zip(TERM_NAMES, values, strict=True) if not math.isfinite(v)]
        if bad:
            term = next((n for n in bad if n != "total"), "total")
            raise TrainingError(
                f"iteration {it + 1}: the {term} loss is {values[TERM_NAMES.index(term)]} "
                f"(non-finite terms: {', '.join(bad)}); stopping without taking the step or "
                "writing a checkpoint"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(terms.total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            terms.total.backward()
            self.optimizer.step()
        if self.sampler is not None:
            self.sampler.record(batch.index, terms.per_image)
            self.sampler.refresh(it + 1)
        return values

    def run(self, stop_after: int | None = None) -> TrainResult:
        recipe, info, out_dir = self.recipe, self.info, self.out_dir
        revision = git_revision()
        if info.is_main:
            write_json(
                out_dir / "config.json",
                {
                    "params": self.params,
                    "seed": self.spec.seed,
                    "git_revision": revision,
                    "data": str(self.data_path),
                    "world_size": info.world,
                    "params_hash": self.run_hash,
                },
            )
        writer = _tensorboard(out_dir, info)
        from tqdm import tqdm

        progress = tqdm(
            total=recipe.iterations,
            initial=self.start,
            disable=not info.is_main,
            mininterval=2.0,
            desc=f"{self.spec.experiment.name} seed {self.spec.seed}",
            file=sys.stderr,
        )
        t0 = time.perf_counter()
        loader_iter, window_stop, done = None, self.start, self.start
        self.model.train()
        for it in range(self.start, recipe.iterations):
            if loader_iter is None or it >= window_stop:
                window_stop = window_end(it, recipe, self.sampler is not None)
                self.plan.set_window(it, window_stop)
                loader_iter = iter(self.loader)
            values = self.step(it, next(loader_iter))
            done = it + 1
            self.log.add(values)
            seconds = self.elapsed_before + time.perf_counter() - t0
            if done % recipe.log_every == 0 or done == recipe.iterations:
                threshold = self.sampler.threshold(it) if self.sampler else float("nan")
                row = self.log.flush(done, recipe.lr * self.schedule.factor(it), threshold, seconds)
                if info.is_main:
                    write_text(out_dir / "loss_log.csv", self.log.csv_text())
                    progress.set_postfix(loss=f"{row['total']:.4f}", refresh=False)
                    if writer is not None:
                        for name in (*TERM_NAMES, "lr"):
                            writer.add_scalar(f"train/{name}", row[name], done)
            progress.update(1)
            if done % recipe.checkpoint_every == 0:
                self.save_checkpoint(done, seconds)
            if stop_after is not None and done >= stop_after:
                break
        progress.close()
        if writer is not None:
            writer.close()
        completed = done == recipe.iterations
        per_iteration = (time.perf_counter() - t0) / max(done - self.start, 1)
        if info.active:
            # BN statistics are process-local after the last forward (DDP syncs them at the next
            # one): take rank 0's, which is what model.pt holds, so every process ends with it.
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)
        if completed and info.is_main:
            write_text(out_dir / "loss_log.csv", self.log.csv_text())
            save_model(
                out_dir / "model.pt",
                self.model,
                self.spec.model_cfg,
                experiment=self.spec.experiment.name,
                seed=self.spec.seed,
                params=self.params,
                git_revision=revision,
                iterations=recipe.iterations,
            )
            self.say(
                f"trained {recipe.iterations} iterations ({done - self.start} in this run, "
                f"{per_iteration:.3f} s/iteration); wrote {out_dir / 'model.pt'}"
            )
        elif not completed:
            self.say(f"stopped after iteration {done} (--stop-after); no model.pt written")
        if info.active:
            dist.barrier()
        return TrainResult(
            out_dir=out_dir,
            iterations_done=done,
            completed=completed,
            resumed_from=self.start,
            seconds_per_iteration=per_iteration,
            model=self.model,
            bank=self.bank,
            sampler=self.sampler,
        )


def train(
    params: dict[str, Any],
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    stop_after: int | None = None,
) -> TrainResult:
    """Run (or resume) one training job; see the module doc. ``stop_after`` ends the run after
    that many iterations without writing the final outputs, as if it had been killed."""
    trainer = Trainer(params, Path(data_path), Path(out_dir))
    trainer.restore()
    return trainer.run(stop_after=stop_after)


# ---------------------------------------------------------------------------------------------
# Command line


def relaunch_distributed(nproc: int, argv: Sequence[str]) -> int:
    """Run this command again as ``nproc`` processes under torch's elastic launcher (what
    ``torchrun --standalone --nproc_per_node N -m flexseg.train ...`` does). The arguments are
    passed verbatim, never parsed by the launcher (whose options could swallow ours)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"flexseg-train-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=1.0,
    )
    print(f"launching {nproc} training processes (torch.distributed elastic launcher)", flush=True)
    try:
        elastic_launch(config, sys.executable)("-m", "flexseg.train", *argv)
    except ChildFailedError as err:
        print(f"error: a training process failed:\n{err}", file=sys.stderr, flush=True)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flexseg.train",
        description="Train one segmentor (one experiment x model x seed) on a data list; writes "
        "DIR/model.pt, DIR/config.json, DIR/loss_log.csv and resumable DIR/checkpoints/last.pt.",
    )
    add_params_arguments(parser)
    parser.add_argument("--data", required=True, help="the data list CSV to train on")
    parser.add_argument("--out-dir", required=True, help="the run folder to write")
    parser.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="processes (DDP); >1 re-launches the command under torch's elastic launcher, "
        "as torchrun does "
        "(default: training.nproc)",
    )
    parser.add_argument("--experiment", help="with --config: the experiment to train")
    parser.add_argument("--model", help="with --config: the model to train")
    parser.add_argument("--seed", type=int, help="with --config: the seed")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="debugging: stop after N iterations as if killed (no final outputs; resume test)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.config is not None:
            missing = [k for k in ("experiment", "model", "seed") if getattr(args, k) is None]
            if missing:
                raise ConfigError(f"--config needs --{', --'.join(missing)} to pick the run")
            params = params_from_args(
                args, "train", experiment=args.experiment, model=args.model, seed=args.seed
            )
        else:
            params = params_from_args(args, "train")
        nproc = (
            args.nproc
            if args.nproc is not None
            else int(params.get("training", {}).get("nproc", 1))
        )
        if nproc < 1:
            raise ConfigError(f"--nproc must be at least 1, got {nproc}")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if nproc > 1 and world == 1:
            return relaunch_distributed(nproc, argv)
        if world > 1 and nproc not in (1, world):
            raise ConfigError(f"--nproc {nproc} but torchrun started {world} processes")
        train(params, args.data, args.out_dir, stop_after=args.stop_after)
    except (ConfigError, DataError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
