"""Train one segmentor: ``python -m flexseg.train --params P --data CSV --model-file model.pt
--loss-log loss_log.csv --resolved-config config.json --checkpoint-dir DIR``.

The recipe is DAFormer's (which FLEX-Seg inherits; training_and_evaluation.md §1): AdamW with the
decode head at 10x the rate, poly decay with linear warmup (``flexseg.schedule``), and the
objective of ``flexseg.losses.objective`` (Eq. 9: UBE, the Eq. 2 boundary weight or
cross-entropy, GAP, the ImageNet feature distance, SHADE's style consistency, per the
experiment's switches). Images are drawn by Hardness-Aware Sampling
(``flexseg.sampling``, Eqs. 10-12) when ``has`` is on, else in seeded epochs
(``flexseg.data.training_set``); processes, devices and random states are
``flexseg.distributed``'s. ``train`` holds the loop: one iteration reads top to bottom.

Decisions the paper leaves open:

* A non-finite loss stops the run at once with an error naming the iteration and the term; the
  step is not taken and no checkpoint is written after it.
* Checkpoints (``DIR/last.pt``, every ``checkpoint_every`` iterations) hold the
  objects ``Checkpoint`` lists (what is saved is what is restored) and a hash of (params, data
  list, world size). A run resumes from it when the hash matches and starts fresh otherwise
  (saying so). It is removed once ``model.pt`` is written: a finished run is never resumed, and
  at paper size it holds 0.95 GiB (MiT-B5's weights and AdamW's two moments). Data order and
  augmentation are pure functions of (seed, draw number, image), so on a CPU a resumed run ends
  bitwise identical to an uninterrupted one.
* Threads, loader workers, device, and the log and checkpoint intervals are options, not params:
  none of them changes the trained model (the loss log's rows follow ``--log-every``).
* The model and images are channels-last on every device. TF32 for the float32 work is
  ``tf32`` (``flexseg.precision``), set either way.
* The recipe of a run is its experiment's and model's (``flexseg.config.run_training``: the
  shared ``training``, then the model's, the experiment's and the experiment's per-model
  overrides). With ``online_rcs`` every source sample is an online RCS draw from the table
  ``--online-rcs`` names (``flexseg.data.rcs.OnlineRcs``); the table's bytes join the resume hash.
* DDP: every process keeps an identical prototype bank (all processes' boundary features update
  it) and identical HAS scores (losses all-reduced at each refresh); the loss terms are averaged
  over processes. ``nproc`` is a param: it multiplies the global batch.
* SHADE (``training.shade``, ``flexseg.shade``): the style hallucination is attached to the
  model after the frozen ImageNet copy is taken, its basis is computed at the top of the first
  iteration and every ``refresh_every`` (each pass printed with its cost) and saved in the
  checkpoint; every process holds the same basis.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from flexseg.checkpoint import load_training_state, save_model, save_training_state
from flexseg.config import (
    ConfigError,
    Experiment,
    add_execution_arguments,
    add_params_arguments,
    build,
    execution_from_args,
    flat,
    params_from_args,
    read_execution,
    read_stage,
)
from flexseg.data.lists import read_data_list
from flexseg.data.rcs import OnlineRcs
from flexseg.data.training_set import (
    BatchPlan,
    EpochOrder,
    TrainingSet,
    check_parts,
    count_parts,
    sampler_indices,
    window_end,
)
from flexseg.data.transforms import PipelineSettings
from flexseg.distributed import (
    Process,
    RandomState,
    autocast,
    relaunch,
    seed_everything,
    start_process,
    worker_init,
)
from flexseg.io import DataError, git_revision, remove_stale_temporaries, write_json, write_text
from flexseg.labels import NUM_CLASSES
from flexseg.losses.gap import PrototypeBank
from flexseg.losses.objective import (
    TERMS,
    BoundaryWeightSettings,
    FeatureDistanceSettings,
    GapSettings,
    Objective,
    UbeSettings,
)
from flexseg.models import build_model, parse_model_config
from flexseg.peak_memory import report_peak_memory
from flexseg.precision import apply_tf32
from flexseg.sampling import HardnessSampler
from flexseg.schedule import PolyWarmup
from flexseg.shade import ShadeSettings, StyleBasis

VALUES = ("total", *TERMS)  # the loss terms of each step, as ``LossTerms.values`` orders them
LOG_COLUMNS = ("iteration", "lr", *VALUES, "has_threshold", "seconds")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the message names the iteration and term."""


# ---------------------------------------------------------------------------------------------
# Settings: the `train` slice (workflow/schemas/training.schema.yaml) and the execution options


@dataclass(frozen=True)
class HasSettings:
    beta: float
    refresh_every: int
    k: float
    midpoint: float
    temperature: float


@dataclass(frozen=True)
class Recipe:
    """The ``training`` section of the slice."""

    iterations: int
    batch_size: int
    lr: float
    head_lr_mult: float
    weight_decay: float
    betas: tuple[float, float]
    warmup_iters: int
    warmup_ratio: float
    poly_power: float
    amp: str
    tf32: bool
    ce_reduction: str
    online_rcs: bool
    transforms: PipelineSettings = flat()
    feature_distance: FeatureDistanceSettings
    gap: GapSettings
    ube: UbeSettings
    boundary_weight: BoundaryWeightSettings
    has: HasSettings
    shade: ShadeSettings


@dataclass(frozen=True)
class RunSpec:
    """Everything the params say about one run."""

    experiment: Experiment
    model: dict[str, Any]  # the models entry with its name, as build_model reads it
    training: Recipe
    nproc: int
    seed: int


@dataclass(frozen=True)
class Execution:
    """How a run executes; none of it changes the trained model."""

    threads: int
    workers: int
    device: str
    log_every: int
    checkpoint_every: int


# ---------------------------------------------------------------------------------------------
# The loss log and the checkpoint


@dataclass
class LossLog:
    """Rows of ``loss_log.csv`` and the sums of the window since the last row."""

    rows: list[dict[str, float]] = field(default_factory=list)
    sums: list[float] = field(default_factory=lambda: [0.0] * len(VALUES))
    count: int = 0

    def add(self, values: Sequence[float]) -> None:
        self.sums = [s + float(v) for s, v in zip(self.sums, values, strict=True)]
        self.count += 1

    def flush(self, iteration: int, lr: float, threshold: float, seconds: float) -> dict:
        means = [s / max(self.count, 1) for s in self.sums]
        row = {"iteration": iteration, "lr": lr, **dict(zip(VALUES, means, strict=True))}
        row.update({"has_threshold": threshold, "seconds": seconds})
        self.rows.append(row)
        self.sums, self.count = [0.0] * len(self.sums), 0
        return row

    def csv_text(self) -> str:
        def cell(col: str, value: float) -> str:
            if col == "iteration":
                return str(int(value))
            return "" if isinstance(value, float) and math.isnan(value) else f"{value:.8g}"

        lines = [",".join(LOG_COLUMNS)]
        lines += [",".join(cell(c, row[c]) for c in LOG_COLUMNS) for row in self.rows]
        return "\n".join(lines) + "\n"

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows], "sums": list(self.sums), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.sums = [dict(r) for r in state["rows"]], list(state["sums"])
        self.count = state["count"]


def check_finite(iteration: int, values: Sequence[float]) -> None:
    """Stop before the step when a loss term (``VALUES``) is not finite, naming it."""
    bad = [n for n, v in zip(VALUES, values, strict=True) if not math.isfinite(v)]
    if bad:
        term = next((n for n in bad if n != "total"), "total")
        raise TrainingError(
            f"iteration {iteration + 1}: the {term} loss is {values[VALUES.index(term)]} "
            f"(non-finite terms: {', '.join(bad)}); stopping without taking the step or "
            "writing a checkpoint"
        )


def params_hash(
    params: dict[str, Any], data_path: Path, world: int, online_path: Path | None = None
) -> str:
    """What a checkpoint must match to be resumed: the params, the data list's bytes, the world
    (and the online RCS table's bytes when there is one)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(params, sort_keys=True, separators=(",", ":")).encode())
    digest.update(hashlib.sha256(data_path.read_bytes()).hexdigest().encode())
    digest.update(str(world).encode())
    if online_path is not None:
        digest.update(hashlib.sha256(online_path.read_bytes()).hexdigest().encode())
    return digest.hexdigest()


def check_recipe(recipe: Recipe, online_path: Path | None) -> None:
    """An online RCS table without its switch, or the switch without a table, stops the run
    before anything is built."""
    if recipe.online_rcs and online_path is None:
        raise ConfigError(
            "training.online_rcs is on: pass the online RCS table with --online-rcs "
            "(python -m flexseg.data.rcs online)"
        )
    if online_path is not None and not recipe.online_rcs:
        raise ConfigError("--online-rcs was given but training.online_rcs is off")


@dataclass
class Checkpoint:
    """``checkpoints/last.pt``. ``shared`` objects are identical on every process (rank 0's are
    saved); ``per_process`` ones are saved for each rank. None: not part of this run."""

    path: Path
    run_hash: str
    shared: dict[str, Any]
    per_process: dict[str, Any]

    def save(self, proc: Process, iteration: int, seconds: float) -> None:
        """Collective: every process hands in its own states; rank 0 writes."""
        mine = {k: o.state_dict() for k, o in self.per_process.items() if o is not None}
        ranks = proc.gather(mine)
        if proc.is_main:
            state = {k: o.state_dict() for k, o in self.shared.items() if o is not None}
            state.update(params_hash=self.run_hash, iteration=iteration, elapsed=seconds)
            save_training_state(self.path, {**state, "ranks": ranks})
            size = self.path.stat().st_size / 2**30
            proc.say(f"checkpoint at iteration {iteration}: {self.path} ({size:.2f} GiB)")

    def remove(self) -> None:
        """Delete the resume point once model.pt holds the result: a finished run is never
        resumed (changed params start afresh), and at paper size it is 0.95 GiB."""
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()

    def restore(self, proc: Process) -> tuple[int, float]:
        """(iteration, seconds) to continue from; (0, 0) without a checkpoint of this run."""
        if not self.path.is_file():
            return 0, 0.0
        state = load_training_state(self.path)
        if state.get("params_hash") != self.run_hash:
            proc.say(
                f"checkpoint {self.path} was written for other params, data or process count; "
                "starting fresh"
            )
            return 0, 0.0
        for key, obj in self.shared.items():
            if obj is not None:
                obj.load_state_dict(state[key])
        for key, obj in self.per_process.items():
            if obj is not None:
                obj.load_state_dict(state["ranks"][proc.rank][key])
        proc.say(f"resuming from {self.path} at iteration {state['iteration']}")
        return int(state["iteration"]), float(state["elapsed"])


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class RunFiles:
    """What a run writes: its outputs (the model, the loss log, the resolved config with seed and
    git revision) and the folder of its resume state (``last.pt``, and TensorBoard events when
    tensorboard is installed)."""

    model: Path
    loss_log: Path
    resolved_config: Path
    checkpoints: Path


@dataclass(frozen=True)
class TrainResult:
    """What a run did, with the trained objects (for programmatic use and tests)."""

    files: RunFiles
    iterations_done: int
    completed: bool  # False when stopped early by ``stop_after``
    resumed_from: int  # 0 for a fresh start
    model: nn.Module
    bank: PrototypeBank | None
    sampler: HardnessSampler | None
    shade: StyleBasis | None


def build_models(spec: RunSpec, device: torch.device) -> tuple[nn.Module, nn.Module | None]:
    """The model, channels-last on ``device``, and the frozen ImageNet copy the feature distance
    compares with (None when it is off)."""
    model = build_model(spec.model, gap_features=spec.experiment.gap)
    imagenet_model = None
    if spec.training.feature_distance.enabled:
        if spec.model["encoder"]["pretrained"] is None:
            raise ConfigError(
                "training.feature_distance.enabled is true but "
                f"models.{spec.model['name']}.encoder.pretrained is null: the feature distance "
                "compares with the encoder's ImageNet weights (set a pretrained source or "
                "disable the feature distance)"
            )
        # the fresh model holds exactly the ImageNet encoder weights: copy before training
        imagenet_model = copy.deepcopy(model).eval().requires_grad_(False).to(device)
    # Channels-last on every device: cuDNN's tensor-core kernels and oneDNN's CPU kernels both
    # prefer it (tiny demo model, one CPU thread: CE step 62 -> 56 ms), and GAP then gathers its
    # boundary pixels as contiguous rows of the decoder feature.
    model.to(device).to(memory_format=torch.channels_last)
    return model, imagenet_model


def build_loader(
    dataset: TrainingSet, spec: RunSpec, run: Execution, proc: Process
) -> tuple[DataLoader, BatchPlan, HardnessSampler | None]:
    """The loader, its batch plan and (with HAS) the sampler that picks the images."""
    batch, seed = spec.training.batch_size, spec.seed
    sampler = None
    if spec.experiment.has:
        h = spec.training.has
        sampler = HardnessSampler(
            len(dataset),
            batch,
            beta=h.beta,
            refresh_every=h.refresh_every,
            k=h.k,
            midpoint=h.midpoint,
            temperature=h.temperature,
            seed=seed,
            rank=proc.rank,
        )
        indices = sampler_indices(sampler, batch)
    else:
        order = EpochOrder(len(dataset), batch, proc.world, seed)

        def indices(iteration: int) -> list[int]:
            return order.indices(iteration, proc.rank)

    plan = BatchPlan(indices, proc.rank, proc.world, batch)
    loader = DataLoader(
        dataset,
        batch_sampler=plan,
        num_workers=run.workers,
        persistent_workers=run.workers > 0,
        pin_memory=proc.device.type == "cuda",
        worker_init_fn=worker_init if run.workers > 0 else None,
        # a private generator: opening loader iterators must not consume the global RNG
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, plan, sampler


def build_style_basis(
    model: nn.Module, entries: Sequence[Any], spec: RunSpec, run: Execution, proc: Process
) -> StyleBasis | None:
    """SHADE's basis (its style hallucination attached to ``model``), None when SHADE is off."""
    recipe = spec.training
    if not recipe.shade.enabled:
        return None
    basis = StyleBasis(
        model,
        recipe.shade,
        entries,
        recipe.transforms,
        spec.seed,
        recipe.batch_size,
        run.workers,
        rank=proc.rank,
        world=proc.world,
        autocast=lambda: autocast(proc.device, recipe.amp),
    )
    basis.style.to(proc.device)
    return basis


def _tensorboard(folder: Path, proc: Process) -> Any:
    if not proc.is_main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder / "tensorboard"))


def train(
    params: dict[str, Any],
    data_path: str | os.PathLike,
    files: RunFiles,
    options: dict[str, Any] | None = None,
    stop_after: int | None = None,
    online_rcs: str | os.PathLike | None = None,
) -> TrainResult:
    """Run (or resume) one training job; see the module doc. ``options`` are the execution
    settings (``Execution``; the schema's defaults for those not given). ``stop_after`` ends the
    run after that many iterations without writing the final outputs, as if it had been killed.
    ``online_rcs``: the online RCS table (with ``training.online_rcs`` on)."""
    params = read_stage(params, "train")
    spec, run = build(RunSpec, params), build(Execution, read_execution("train", options or {}))
    exp, recipe = spec.experiment, spec.training
    data_path = Path(data_path)
    online_path = None if online_rcs is None else Path(online_rcs)
    check_recipe(recipe, online_path)
    proc = start_process(run.device, run.threads, recipe.amp)
    apply_tf32(recipe.tf32)
    device = proc.device
    seed_everything(spec.seed)

    entries = read_data_list(data_path)
    parts = count_parts(entries)
    proc.say(f"data list {data_path}: {parts.source} source rows, {parts.generated} generated rows")
    check_parts(exp, data_path, parts)
    online = None
    if online_path is not None:
        names, kinds = [e.name for e in entries], [e.part for e in entries]
        online = OnlineRcs.read(online_path, names, kinds)
    dataset = TrainingSet(entries, recipe.transforms, spec.seed, online)
    model, imagenet_model = build_models(spec, device)
    shade = build_style_basis(model, entries, spec, run, proc)
    bank = None
    if exp.gap:
        dim = parse_model_config(spec.model).head.fusion_dim
        bank = PrototypeBank(NUM_CLASSES, len(recipe.gap.kernels), dim).to(device)
    objective = Objective(
        ube=recipe.ube if exp.ube else None,
        gap=recipe.gap if exp.gap else None,
        bank=bank,
        feature_distance=recipe.feature_distance,
        imagenet_model=imagenet_model,
        autocast=lambda: autocast(device, recipe.amp),
        boundary_weight=recipe.boundary_weight if exp.boundary_weight else None,
        ce_reduction=recipe.ce_reduction,
        shade=recipe.shade if shade is not None else None,
    )
    optimizer = torch.optim.AdamW(
        model.param_groups(recipe.lr, recipe.head_lr_mult, recipe.weight_decay),
        lr=recipe.lr,
        betas=recipe.betas,
        weight_decay=recipe.weight_decay,
    )
    schedule = PolyWarmup(
        recipe.iterations, recipe.poly_power, recipe.warmup_iters, recipe.warmup_ratio
    )
    schedule.attach(optimizer)
    scaler = torch.amp.GradScaler("cuda") if recipe.amp == "fp16" else None
    train_model = model
    if proc.active:
        train_model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[proc.local_rank] if device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )
    loader, plan, sampler = build_loader(dataset, spec, run, proc)
    log = LossLog()

    checkpoint = Checkpoint(
        files.checkpoints / "last.pt",
        params_hash(params, data_path, proc.world, online_path),
        shared={
            "model": model,
            "optimizer": optimizer,
            "scaler": scaler,
            "bank": bank,
            "log": log,
            "shade": shade,
        },
        per_process={"sampler": sampler, "rng": RandomState(device)},
    )
    if proc.is_main:
        # a job killed inside a write (a checkpoint, the loss log) left a temporary behind
        # (the outputs' own temporaries only: their folder may be shared)
        for place in (files.model, files.loss_log, files.resolved_config, files.checkpoints):
            remove_stale_temporaries(place)
    start, elapsed_before = checkpoint.restore(proc)
    revision = git_revision()
    if proc.is_main:
        record = {"params": params, "seed": spec.seed, "git_revision": revision}
        record.update(data=str(data_path), world_size=proc.world, params_hash=checkpoint.run_hash)
        if online_path is not None:
            record["online_rcs"] = str(online_path)
        write_json(files.resolved_config, record)
    writer = _tensorboard(files.checkpoints, proc)
    from tqdm import tqdm

    progress = tqdm(
        total=recipe.iterations,
        initial=start,
        disable=not proc.is_main,
        mininterval=2.0,
        desc=f"{exp.name} seed {spec.seed}",
        file=sys.stderr,
    )
    refresh = (recipe.has.refresh_every,) if sampler is not None else ()
    t0 = time.perf_counter()
    loader_iter, window_stop, done = None, start, start
    model.train()
    for it in range(start, recipe.iterations):
        if shade is not None and shade.due(it):
            basis_pass = shade.refresh(it)
            if proc.is_main:
                progress.write(basis_pass.message(), file=sys.stderr)  # clears the bar first
        if loader_iter is None or it >= window_stop:
            window_stop = window_end(it, recipe.iterations, run.checkpoint_every, *refresh)
            plan.set_window(it, window_stop)
            loader_iter = iter(loader)
        batch = next(loader_iter)

        schedule.apply(optimizer, it)
        images = batch.image.to(device, non_blocking=True)
        labels = batch.label.to(device, non_blocking=True)
        images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, recipe.amp):
            outputs = train_model(images, labels)
        terms = objective(outputs, images)
        # a non-finite term on any process makes the mean non-finite everywhere: all stop
        values = proc.mean(terms.values()).cpu().tolist()
        check_finite(it, values)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(terms.total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            terms.total.backward()
            optimizer.step()
        if sampler is not None:
            sampler.record(batch.index, terms.per_image)
            sampler.refresh(it + 1)

        done = it + 1
        log.add(values)
        seconds = elapsed_before + time.perf_counter() - t0
        if done % run.log_every == 0 or done == recipe.iterations:
            threshold = sampler.threshold(it) if sampler else float("nan")
            row = log.flush(done, recipe.lr * schedule.factor(it), threshold, seconds)
            if proc.is_main:
                write_text(files.loss_log, log.csv_text())
                progress.set_postfix(loss=f"{row['total']:.4f}", refresh=False)
                if writer is not None:
                    for name in ("lr", *VALUES):
                        writer.add_scalar(f"train/{name}", row[name], done)
        progress.update(1)
        if done % run.checkpoint_every == 0:
            checkpoint.save(proc, done, seconds)
        if stop_after is not None and done >= stop_after:
            break
    progress.close()
    if writer is not None:
        writer.close()

    completed = done == recipe.iterations
    if proc.active:
        # BN statistics are process-local after the last forward (DDP syncs them at the next
        # one): take rank 0's, which is what model.pt holds, so every process ends with it.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    if completed and proc.is_main:
        write_text(files.loss_log, log.csv_text())
        save_model(
            files.model,
            model,
            spec.model,
            experiment=exp.name,
            seed=spec.seed,
            params=params,
            git_revision=revision,
            iterations=recipe.iterations,
        )
        checkpoint.remove()
        proc.say(
            f"trained {recipe.iterations} iterations ({done - start} in this run); "
            f"wrote {files.model} and removed the resume checkpoint"
        )
    elif not completed:
        proc.say(f"stopped after iteration {done} (--stop-after); no model.pt written")
    if proc.active:
        dist.barrier()
    return TrainResult(files, done, completed, start, model, bank, sampler, shade)


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flexseg.train",
        description="Train one segmentor (one experiment x model x seed) on a data list; writes "
        "the model, the loss log, the resolved config and, until it finishes, a resume checkpoint. "
        "With nproc > 1 the command re-launches itself as nproc DDP processes, as torchrun does.",
    )
    add_params_arguments(parser)
    parser.add_argument("--data", required=True, help="the data list CSV to train on")
    for option, what in (
        ("--model-file", "the trained model (model.pt) to write"),
        ("--loss-log", "the loss log (CSV) to write"),
        ("--resolved-config", "the run's params, seed and git revision (JSON) to write"),
        ("--checkpoint-dir", "the folder of the resume state (last.pt), kept across kills"),
    ):
        parser.add_argument(option, required=True, type=Path, help=what)
    parser.add_argument(
        "--online-rcs",
        help="the online RCS table (python -m flexseg.data.rcs online), for a run with "
        "training.online_rcs on",
    )
    add_execution_arguments(parser, "train")
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
        run = {k: getattr(args, k) for k in ("experiment", "model", "seed")}
        if args.config is not None and None in run.values():
            missing = [k for k, v in run.items() if v is None]
            raise ConfigError(f"--config needs --{', --'.join(missing)} to pick the run")
        params = params_from_args(args, "train", **run)
        options = execution_from_args(args, "train")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if params["nproc"] > 1 and world == 1:
            return relaunch(params["nproc"], argv)
        if world > 1 and params["nproc"] not in (1, world):
            raise ConfigError(f"nproc is {params['nproc']} but torchrun started {world} processes")
        files = RunFiles(args.model_file, args.loss_log, args.resolved_config, args.checkpoint_dir)
        train(
            params,
            args.data,
            files,
            options,
            stop_after=args.stop_after,
            online_rcs=args.online_rcs,
        )
        report_peak_memory()
    except (ConfigError, DataError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
