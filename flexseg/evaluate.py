"""Evaluate one trained run on one dataset: mIoU, per-class IoU, per-condition mIoU, boundary vs
interior error (the paper's Fig. 1), and qualitative panels.

``python -m flexseg.evaluate --params P --checkpoint model.pt --metrics M --panels PNG --tiles NPZ
[--device D]`` with P = {"evaluation": {mode, window, stride, batch_size, boundary_kernel, panels,
tf32}, "scale": [long, short], "dataset": {name, format, root, split, conditions}} writes the
scores to M (JSON), the qualitative panels to PNG and their tiles to NPZ (for comparisons across
runs).

The protocol is DAFormer/HRDA's single-scale test (``flexseg.inference``: keep-ratio resize
into ``scale`` x the model's ``test_scale_factor``, sliding window or whole image, softmax,
bilinear to the ground-truth size, argmax; ``window`` and ``stride`` are scaled by the same
factor, so HRDA slides 1024 px windows with stride 512 over its 2x test images, its ``.sl``
test mode, while DAFormer slides 512 / 256) with the scores of ``flexseg.metrics``: one confusion
matrix over the whole split, mIoU = 100 x nan-mean of per-class IoU; per-condition mIoU from one
matrix per condition (ACDC's fog / night / rain / snow); the boundary region is Eq. 1 on the
ground truth with ``boundary_kernel`` for both dilation and erosion.

The run's evaluation settings are its experiment's (``flexseg.config.run_evaluation``: e.g. the
HRDA dg recipe tests DAFormer on the whole image). metrics.json also records the run's
``recipe`` (``run_recipe``: what it trained on, SHADE, the feature distance, the CE's N, the Eq. 2
weight, HRDA's detail crop, the test mode), from model.pt's params, so every table row can name
the recipe behind it.

Decisions: per-class IoU and the error rates are written in percent; undefined values (a class
absent from ground truth and prediction, a region without pixels) are JSON ``null``. The panel
images are spread evenly over the split (the first images of ACDC would all be fog), each tile
scaled to a fixed height. Images are read up to two ahead on a background thread, so decoding
overlaps the forward pass; the queue is bounded so large splits never sit in memory.
"""

from __future__ import annotations

import argparse
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from flexseg.config import (
    ConfigError,
    add_execution_arguments,
    add_params_arguments,
    execution_from_args,
    params_from_args,
    read_stage,
)
from flexseg.device import resolve_device
from flexseg.figures import PanelTiles, panel_tiles, save_tiles, tiles_row, write_panels
from flexseg.inference import InferenceSettings, Predictor, predict_image
from flexseg.io import DataError, git_revision, write_json
from flexseg.labels import CLASS_NAMES, NUM_CLASSES
from flexseg.metrics import (
    SplitScores,
    boundary_interior_counts,
    confusion_matrix,
    gt_boundary,
    iou_per_class,
)
from flexseg.peak_memory import report_peak_memory
from flexseg.precision import apply_tf32


@dataclass(frozen=True)
class EvalSettings:
    """The ``evaluation`` slice of one (run, dataset) job, with the model's test scale factor."""

    inference: InferenceSettings
    boundary_kernel: int
    panels: int

    @classmethod
    def from_params(
        cls, evaluation: Mapping[str, Any], scale: Sequence[int], scale_factor: float
    ) -> EvalSettings:
        """From a validated slice's ``evaluation`` and ``scale``. Windows grow with the test
        size: HRDA (factor 2) slides 1024 / 512 over its 2x images where DAFormer slides
        512 / 256, as in HRDA's own test mode."""
        inference = InferenceSettings(
            mode=evaluation["mode"],
            window=round(evaluation["window"] * scale_factor),
            stride=round(evaluation["stride"] * scale_factor),
            batch_size=evaluation["batch_size"],
            scale=(scale[0], scale[1]),
            scale_factor=float(scale_factor),
        )
        return cls(inference, evaluation["boundary_kernel"], evaluation["panels"])


@dataclass
class Sample:
    """One loaded test image with its train-id ground truth."""

    name: str
    rgb: np.ndarray
    label: np.ndarray
    condition: str = ""


@dataclass
class EvaluationResult:
    scores: SplitScores
    panels: list[PanelTiles] = field(default_factory=list)
    seconds: float = 0.0


def panel_indices(count: int, panels: int) -> set[int]:
    """``panels`` indices spread evenly over ``count`` images (all of them when fewer)."""
    if count <= 0 or panels <= 0:
        return set()
    return {int(i) for i in np.linspace(0, count - 1, min(panels, count)).round()}


def prefetch(
    items: Sequence[Any], load: Callable[[Any], Sample], depth: int = 2
) -> Iterator[Sample]:
    """``load(item)`` for each item, computed ``depth`` items ahead on one background thread."""
    q: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def worker() -> None:
        for item in items:
            if stop.is_set():
                return
            try:
                q.put((True, load(item)))
            except Exception as err:  # handed to the consumer, which re-raises it
                q.put((False, err))
                return
        q.put((True, None))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            ok, value = q.get()
            if not ok:
                raise value
            if value is None:
                return
            yield value
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def evaluate_samples(
    model: Predictor,
    samples: Iterator[Sample],
    total: int,
    settings: EvalSettings,
    device: torch.device,
    desc: str = "evaluate",
) -> EvaluationResult:
    """Predict every sample and accumulate the split's scores (and the chosen panel rows)."""
    scores = SplitScores(num_classes=NUM_CLASSES)
    rows: list[PanelTiles] = []
    chosen = panel_indices(total, settings.panels)
    start = time.perf_counter()
    for i, sample in enumerate(tqdm(samples, total=total, desc=desc, file=sys.stderr)):
        if sample.label.ndim != 2:
            raise DataError(f"{sample.name}: ground truth must be (H, W), got {sample.label.shape}")
        pred = predict_image(model, sample.rgb, sample.label.shape, settings.inference, device)
        gt = torch.from_numpy(sample.label).to(device)
        pred_t = torch.from_numpy(pred.labels).to(device)
        try:
            conf = confusion_matrix(pred_t, gt)
        except ValueError as err:
            raise DataError(f"{sample.name}: {err}") from err
        boundary = gt_boundary(gt, settings.boundary_kernel)
        scores.add(conf, boundary_interior_counts(pred_t, gt, boundary), sample.condition)
        if i in chosen:
            rows.append(panel_tiles(sample.name, sample.rgb, pred.labels, sample.label))
    if scores.num_images == 0:
        raise DataError(f"{desc}: no images were evaluated")
    return EvaluationResult(scores=scores, panels=rows, seconds=time.perf_counter() - start)


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 4)


def run_identity(meta: Any, checkpoint: str) -> tuple[str, str, int]:
    """(experiment, model, seed) recorded in a checkpoint's ``ModelMeta``."""
    for key in ("experiment", "model"):
        if not getattr(meta, key):
            raise DataError(f"checkpoint {checkpoint}: no {key} name recorded")
    return meta.experiment, meta.model, meta.seed


def run_recipe(
    params: Mapping[str, Any], model_config: Mapping[str, Any], test_mode: str
) -> dict[str, Any]:
    """The recipe of a run as metrics.json records it, from its model.pt's params and model
    config (keys a file from before a setting existed lacks are left out)."""
    experiment = params.get("experiment") or {}
    training = params.get("training") or {}
    data = experiment.get("data")
    online = bool(training.get("online_rcs", False))
    if online:
        source = "whole source, online RCS"
    else:
        source = "RCS subset" if data == "combined" else "whole source"
    recipe: dict[str, Any] = {
        "data": {"source": source, "combined": f"{source} + generated"}.get(data, str(data)),
        "online_rcs": online,
    }
    if "shade" in training:
        recipe["shade"] = bool(training["shade"]["enabled"])
    if "feature_distance" in training:
        recipe["feature_distance"] = bool(training["feature_distance"]["enabled"])
    if "ce_reduction" in training:
        recipe["ce_reduction"] = training["ce_reduction"]
    if experiment.get("boundary_weight"):
        recipe["boundary_weight"] = float(training["boundary_weight"]["alpha"])
    if model_config.get("architecture") == "hrda":
        recipe["detail_crop"] = int(model_config["hrda"]["detail_crop"])
    recipe["test"] = test_mode
    return recipe


def metrics_record(
    result: EvaluationResult,
    identity: tuple[str, str, int],
    dataset: str,
    settings: EvalSettings,
    extra: Mapping[str, Any],
    recipe: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The metrics.json content."""
    s = result.scores
    experiment, model, seed = identity
    iou = iou_per_class(s.confusion) * 100.0
    inf = settings.inference
    return {
        "experiment": experiment,
        "model": model,
        "seed": seed,
        "dataset": dataset,
        "miou": _finite(s.miou),
        "per_class": {name: _finite(v) for name, v in zip(CLASS_NAMES, iou, strict=True)},
        "per_condition": {c: _finite(v) for c, v in s.per_condition().items()},
        "boundary_error": _finite(s.boundary.boundary_error),
        "interior_error": _finite(s.boundary.interior_error),
        "boundary_pixels": s.boundary.boundary_valid,
        "interior_pixels": s.boundary.interior_valid,
        "num_images": s.num_images,
        "confusion": s.confusion.tolist(),
        "recipe": dict(recipe) if recipe is not None else None,
        "settings": {
            "mode": inf.mode,
            "window": inf.window,
            "stride": inf.stride,
            "batch_size": inf.batch_size,
            "scale": list(inf.scale),
            "test_scale_factor": inf.scale_factor,
            "boundary_kernel": settings.boundary_kernel,
            "panels": settings.panels,
            **extra,
        },
    }


@dataclass(frozen=True)
class EvalFiles:
    """What an evaluation writes: the scores (JSON), the panels (PNG), their tiles (NPZ)."""

    metrics: Path
    panels: Path
    tiles: Path


def run(
    params: Mapping[str, Any], checkpoint: str | Path, files: EvalFiles, device: str = "auto"
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the dataset of ``params`` (the ``evaluate`` slice) on
    ``device`` (auto, cpu, cuda); write ``files``."""
    from flexseg.checkpoint import load_model
    from flexseg.data.readers import list_samples, load_sample

    params = read_stage(params, "evaluate")
    entry = params["dataset"]
    device = resolve_device(device, "evaluation.device")
    apply_tf32(params["evaluation"]["tf32"])
    model, meta = load_model(checkpoint, map_location=device)
    model.to(device).eval()
    identity = run_identity(meta, str(checkpoint))
    settings = EvalSettings.from_params(
        params["evaluation"], params["scale"], model.test_scale_factor
    )

    refs = list_samples(entry)
    if not refs:
        raise DataError(f"dataset {entry['name']!r}: no images under {entry['root']}")

    def load(ref: Any) -> Sample:
        rgb, label = load_sample(ref)
        return Sample(name=str(ref.image), rgb=rgb, label=label, condition=ref.condition)

    result = evaluate_samples(
        model, prefetch(refs, load), len(refs), settings, device, desc=f"evaluate {entry['name']}"
    )
    extra = {"device": str(device), "checkpoint": str(checkpoint), "git_revision": git_revision()}
    recipe = run_recipe(meta.params, meta.model_config, settings.inference.mode)
    record = metrics_record(result, identity, str(entry["name"]), settings, extra, recipe)
    write_panels(files.panels, [tiles_row(t) for t in result.panels])
    save_tiles(files.tiles, result.panels)
    write_json(files.metrics, record)
    rate = result.scores.num_images / max(result.seconds, 1e-9)
    print(
        f"{entry['name']}: mIoU {record['miou']} over {record['num_images']} images "
        f"({rate:.2f} images/s on {device})",
        file=sys.stderr,
    )
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flexseg.evaluate",
        description="Evaluate a checkpoint on one dataset: metrics.json (mIoU, per-class IoU, "
        "per-condition mIoU, boundary/interior error) and panels.png.",
    )
    add_params_arguments(parser)
    parser.add_argument(
        "--dataset", help="with --config: which entry of datasets (evaluation.scales) to use"
    )
    parser.add_argument("--checkpoint", required=True, help="model.pt written by flexseg.train")
    parser.add_argument("--metrics", required=True, type=Path, help="the scores (JSON) to write")
    parser.add_argument("--panels", required=True, type=Path, help="the panels (PNG) to write")
    parser.add_argument(
        "--tiles", required=True, type=Path, help="the panels' tiles (NPZ) to write"
    )
    add_execution_arguments(parser, "evaluate")
    args = parser.parse_args(argv)
    if args.config is not None and not args.dataset:
        parser.error("--config needs --dataset")
    try:
        params = params_from_args(args, "evaluate", dataset=args.dataset)
        options = execution_from_args(args, "evaluate")
        torch.set_num_threads(options["threads"])
        files = EvalFiles(args.metrics, args.panels, args.tiles)
        run(params, args.checkpoint, files, options["device"])
        report_peak_memory()
    except (DataError, ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
