"""The quality report of a generated set: how well a segmenter trained on the source only finds
each generated image's label in the image, overall, per condition, per class, and in the Eq. 1
boundary band versus the interior (the paper's Fig. 1 measure, applied to the generated set
itself: FLEX-Seg's premise is that generated images follow their layouts except near boundaries).

    python -m flexseg.quality score --params P --manifest results/generation/dataset/manifest.csv \\
        --checkpoint results/train/source_only/<model>/seed<s>/model.pt \\
        --scores results/generation/quality/scores.json \\
        --panels results/generation/quality/panels.npz
    python -m flexseg.quality report --scores results/generation/quality/scores.json \\
        --panels results/generation/quality/panels.npz \\
        [--reference results/evaluate/source_only/<model>/seed<s>/source_val/metrics.json] \\
        --out-csv results/generation/quality.csv --figure results/generation/quality.png

with P = {panels, boundary_kernel, tf32} (``flexseg.config.stage_params(config, "quality")``;
``tf32`` is the evaluation's, ``flexseg.precision``); the device is an option (``--device``), not
a param.

``score`` predicts every image of the set (``flexseg.data.readers``, format ``generated``, each
image's condition from the manifest) and sums, per group (the whole set and each condition), the
confusion matrix (``flexseg.metrics.confusion_matrix``), the same matrix restricted to the label's
boundary band B (Eq. 1, ``flexseg.metrics.gt_boundary`` with the evaluation's
``boundary_kernel``) and the evaluation's boundary / interior pixel counts
(``flexseg.metrics.boundary_interior_counts``); it writes them to ``scores.json`` with the
figure's image | label | prediction tiles in ``--panels``. ``report`` turns them into the table,
one row per group and per class:

- ``miou``: 100 x the nan-mean of per-class IoU (class rows: that class's IoU), as the
  evaluation computes it; ``boundary_miou`` / ``interior_miou``: the same from the matrix of the
  valid pixels inside B / outside B.
- ``boundary_agreement`` / ``interior_agreement``: percent of the valid pixels inside B / outside
  B whose prediction equals the label, i.e. 100 minus the evaluation's boundary / interior error
  rate (class rows: among the pixels of that class, the recall); ``boundary_pixels`` /
  ``interior_pixels`` count those pixels.
- ``source_miou``, ``source_boundary_agreement``, ``source_interior_agreement``: the same
  segmenter on held-out source images (the ``metrics.json`` of ``flexseg.evaluate`` given as
  ``--reference``; class rows: its per-class IoU, no band split); condition rows repeat the
  source's overall values, the source images having no condition. ``miou_ratio`` =
  ``miou / source_miou``.

Decisions:

- How a generated image is fed: whole, at the size training feeds generated images to this model
  (keep-ratio into the checkpoint's ``training.generated_resize``, as ``flexseg.data.transforms``;
  null: as it is), then softmax, bilinear to the label size and argmax
  (``flexseg.inference.predict_image`` in whole mode). At that size a generated crop is one
  training crop in every shipped config (demo 128 px, DAFormer 512, HRDA 512 -> 1024), where the
  evaluation's sliding window would be a single window; so the evaluation's mode, window, stride
  and batch size do not apply and do not rerun the stage.
- The segmenter must be trained on the source only (its checkpoint's experiment data): a model
  trained on generated images would be scored on its own training data.
- The reference must be the same checkpoint's (experiment, model, seed) with the same Eq. 1
  kernel, or the report stops naming both.
- Rates and IoUs are pooled over the pixels of a group, not averaged over images, as in the
  evaluation. The figure's rows are ``panels`` images spread evenly over the set (sorted by name,
  which is the job order).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from flexseg.config import (
    ConfigError,
    add_execution_arguments,
    add_params_arguments,
    build,
    execution_from_args,
    params_from_args,
    read_stage,
)
from flexseg.figures import PanelTiles, hconcat, load_tiles, panel_tiles, save_tiles
from flexseg.inference import InferenceSettings, Predictor, predict_image
from flexseg.io import DataError, atomic_path, git_revision, write_csv, write_json
from flexseg.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, colorize
from flexseg.metrics import (
    BoundaryCounts,
    boundary_interior_counts,
    confusion_matrix,
    gt_boundary,
    iou_per_class,
    mean_iou,
)
from flexseg.peak_memory import report_peak_memory
from flexseg.precision import apply_tf32

ALL = "all"
COLUMNS = (
    "scope",
    "name",
    "images",
    "miou",
    "boundary_miou",
    "interior_miou",
    "boundary_agreement",
    "interior_agreement",
    "boundary_pixels",
    "interior_pixels",
    "source_miou",
    "source_boundary_agreement",
    "source_interior_agreement",
    "miou_ratio",
)
COUNT_FIELDS = ("boundary_wrong", "boundary_valid", "interior_wrong", "interior_valid")


@dataclass(frozen=True)
class QualitySettings:
    """The ``quality`` stage slice."""

    panels: int
    boundary_kernel: int
    tf32: bool


@dataclass
class GroupScores:
    """One group's sums: the confusion matrix (rows = label), its part inside the boundary band,
    and the evaluation's boundary / interior pixel counts."""

    confusion: np.ndarray = field(
        default_factory=lambda: np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    )
    band_confusion: np.ndarray = field(
        default_factory=lambda: np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    )
    counts: BoundaryCounts = field(default_factory=BoundaryCounts)
    images: int = 0

    @property
    def interior_confusion(self) -> np.ndarray:
        return self.confusion - self.band_confusion

    def add(self, conf: np.ndarray, band_conf: np.ndarray, counts: BoundaryCounts) -> None:
        self.confusion += conf
        self.band_confusion += band_conf
        self.counts = self.counts + counts
        self.images += 1

    def to_record(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "confusion": self.confusion.tolist(),
            "band_confusion": self.band_confusion.tolist(),
            **{k: getattr(self.counts, k) for k in COUNT_FIELDS},
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], where: str) -> GroupScores:
        try:
            conf = np.asarray(record["confusion"], dtype=np.int64)
            band = np.asarray(record["band_confusion"], dtype=np.int64)
            counts = BoundaryCounts(**{k: int(record[k]) for k in COUNT_FIELDS})
            images = int(record["images"])
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(
                f"{where}: not a group written by flexseg.quality score ({err})"
            ) from err
        shape = (NUM_CLASSES, NUM_CLASSES)
        if conf.shape != shape or band.shape != shape:
            raise DataError(
                f"{where}: confusion matrices must be {shape}, got {conf.shape}, {band.shape}"
            )
        return cls(confusion=conf, band_confusion=band, counts=counts, images=images)


def image_scores(
    pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, kernel: int
) -> tuple[np.ndarray, np.ndarray, BoundaryCounts]:
    """One image's confusion matrix, its part inside the label's Eq. 1 band, and the band /
    interior counts of the evaluation."""
    gt_t = torch.as_tensor(gt).long()
    pred_t = torch.as_tensor(pred).long()
    band = gt_boundary(gt_t, kernel)
    conf = confusion_matrix(pred_t, gt_t)
    band_conf = confusion_matrix(pred_t, torch.where(band, gt_t, IGNORE_INDEX))
    return conf, band_conf, boundary_interior_counts(pred_t, gt_t, band)


def add_image(
    groups: dict[str, GroupScores],
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    condition: str,
    kernel: int,
) -> None:
    """Add one (prediction, label) pair to the whole set's group and to its condition's."""
    scores = image_scores(pred, gt, kernel)
    for key in (ALL, condition) if condition else (ALL,):
        groups.setdefault(key, GroupScores()).add(*scores)


def score_predictions(
    items: Iterable[tuple[str, np.ndarray, np.ndarray]], kernel: int
) -> dict[str, GroupScores]:
    """The groups of (condition, prediction, label) triples: the scoring without a model."""
    groups: dict[str, GroupScores] = {}
    for condition, pred, gt in items:
        add_image(groups, pred, gt, condition, kernel)
    if ALL not in groups:
        raise DataError("no images to score")
    return groups


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) else math.nan


def condition_order(names: Iterable[str]) -> list[str]:
    """Conditions for rows and bars: standard first, then by name."""
    names = sorted(set(names))
    return [n for n in names if n == "standard"] + [n for n in names if n != "standard"]


def quality_table(
    groups: Mapping[str, GroupScores], reference: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The report's rows (see the module doc): the whole set, each condition, each class."""
    if ALL not in groups:
        raise DataError(f"the scores hold no {ALL!r} group")
    ref_miou = ref_band = ref_inner = math.nan
    ref_class: Mapping[str, Any] = {}
    if reference is not None:
        ref_miou = _number(reference.get("miou"))
        ref_band = 100.0 - _number(reference.get("boundary_error"))
        ref_inner = 100.0 - _number(reference.get("interior_error"))
        ref_class = reference.get("per_class") or {}
    rows = []
    for name in [ALL, *condition_order(k for k in groups if k != ALL)]:
        g = groups[name]
        miou = mean_iou(g.confusion)
        rows.append(
            {
                "scope": "overall" if name == ALL else "condition",
                "name": name,
                "images": g.images,
                "miou": miou,
                "boundary_miou": mean_iou(g.band_confusion),
                "interior_miou": mean_iou(g.interior_confusion),
                "boundary_agreement": 100.0 - g.counts.boundary_error,
                "interior_agreement": 100.0 - g.counts.interior_error,
                "boundary_pixels": g.counts.boundary_valid,
                "interior_pixels": g.counts.interior_valid,
                "source_miou": ref_miou,
                "source_boundary_agreement": ref_band,
                "source_interior_agreement": ref_inner,
                "miou_ratio": _ratio(miou, ref_miou),
            }
        )
    g = groups[ALL]
    band, inner = g.band_confusion, g.interior_confusion
    iou, band_iou, inner_iou = (iou_per_class(m) * 100.0 for m in (g.confusion, band, inner))
    for c, cls in enumerate(CLASS_NAMES):
        source = _number(ref_class.get(cls))
        rows.append(
            {
                "scope": "class",
                "name": cls,
                "images": math.nan,
                "miou": iou[c],
                "boundary_miou": band_iou[c],
                "interior_miou": inner_iou[c],
                "boundary_agreement": _pct(band[c, c], band[c].sum()),
                "interior_agreement": _pct(inner[c, c], inner[c].sum()),
                "boundary_pixels": int(band[c].sum()),
                "interior_pixels": int(inner[c].sum()),
                "source_miou": source,
                "source_boundary_agreement": math.nan,
                "source_interior_agreement": math.nan,
                "miou_ratio": _ratio(iou[c], source),
            }
        )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    floats = [c for c in COLUMNS if c not in ("scope", "name", "images") and "pixels" not in c]
    frame[floats] = frame[floats].astype(float).round(2)
    frame["images"] = frame["images"].astype("Int64")
    return frame


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


# ---------------------------------------------------------------------------------------------
# score: the model over the generated set.


def feed_settings(height: int, width: int, box: Sequence[int] | None) -> InferenceSettings:
    """Whole-image inference at the training size of a generated image (see the module doc)."""
    scale = (
        (int(max(box)), int(min(box)))
        if box is not None
        else (max(height, width), min(height, width))
    )
    side = max(scale)
    return InferenceSettings(mode="whole", window=side, stride=side, batch_size=1, scale=scale)


@dataclass
class SetScores:
    groups: dict[str, GroupScores]
    panels: list[PanelTiles]
    panel_conditions: list[str]


def score_samples(
    model: Predictor,
    samples: Iterable[Any],
    total: int,
    settings: QualitySettings,
    box: Sequence[int] | None,
    device: torch.device,
) -> SetScores:
    """Predict each ``flexseg.evaluate.Sample`` and add it to its groups (and the panels)."""
    from flexseg.evaluate import panel_indices

    groups: dict[str, GroupScores] = {}
    tiles: list[PanelTiles] = []
    conditions: list[str] = []
    chosen = panel_indices(total, settings.panels)
    for i, sample in enumerate(tqdm(samples, total=total, desc="score generated", file=sys.stderr)):
        h, w = sample.label.shape
        if sample.rgb.shape[:2] != (h, w):
            raise DataError(
                f"{sample.name}: image {sample.rgb.shape[:2]} and label {(h, w)} differ in size"
            )
        pred = predict_image(model, sample.rgb, (h, w), feed_settings(h, w, box), device).labels
        try:
            add_image(groups, pred, sample.label, sample.condition, settings.boundary_kernel)
        except ValueError as err:
            raise DataError(f"{sample.name}: {err}") from err
        if i in chosen:
            tiles.append(panel_tiles(sample.name, sample.rgb, pred, sample.label))
            conditions.append(sample.condition)
    if ALL not in groups:
        raise DataError("the generated set holds no images")
    return SetScores(groups=groups, panels=tiles, panel_conditions=conditions)


def checked_source_only(meta: Any, checkpoint: str) -> Sequence[int] | None:
    """The checkpoint's ``training.generated_resize``, after checking it is a source-only run."""
    params = getattr(meta, "params", None) or {}
    data = (params.get("experiment") or {}).get("data")
    if data != "source":
        raise DataError(
            f"checkpoint {checkpoint} was trained on {data!r} data (its experiment "
            f"{getattr(meta, 'experiment', '?')!r}); the generated set is scored by a "
            "source-only segmenter"
        )
    training = params.get("training") or {}
    if "generated_resize" not in training:
        raise DataError(f"checkpoint {checkpoint}: no training.generated_resize recorded")
    return training["generated_resize"]


def score(
    params: Mapping[str, Any],
    manifest: str | Path,
    checkpoint: str | Path,
    scores: str | Path,
    panels: str | Path,
    device: str = "auto",
) -> dict[str, Any]:
    """Score the generated set of ``manifest`` with ``checkpoint`` on ``device`` (auto, cpu,
    cuda); write the scores (JSON) to ``scores`` and the panel tiles (NPZ) to ``panels``, and
    return the record."""
    from flexseg.checkpoint import load_model
    from flexseg.data.readers import list_samples, load_sample
    from flexseg.device import resolve_device
    from flexseg.evaluate import Sample, prefetch, run_identity

    settings = build(QualitySettings, read_stage(params, "quality"))
    manifest = Path(manifest)
    if manifest.name != "manifest.csv" or not manifest.is_file():
        raise DataError(
            f"generated-set manifest not found: {manifest} (expected <set>/manifest.csv)"
        )
    refs = list_samples({"name": "generated", "format": "generated", "root": str(manifest.parent)})
    if not refs:
        raise DataError(f"{manifest.parent}: the generated set holds no images")
    device = resolve_device(device, "evaluation.device")
    apply_tf32(settings.tf32)
    model, meta = load_model(checkpoint, map_location=device)
    model.to(device).eval()
    experiment, model_name, seed = run_identity(meta, str(checkpoint))
    box = checked_source_only(meta, str(checkpoint))

    def load(ref: Any) -> Sample:
        rgb, label = load_sample(ref)
        return Sample(name=ref.name, rgb=rgb, label=label, condition=ref.condition)

    result = score_samples(model, prefetch(refs, load), len(refs), settings, box, device)
    record = {
        "experiment": experiment,
        "model": model_name,
        "seed": seed,
        "checkpoint": str(checkpoint),
        "manifest": str(manifest),
        "num_images": result.groups[ALL].images,
        "settings": {
            "boundary_kernel": settings.boundary_kernel,
            "generated_resize": list(box) if box is not None else None,
            "panels": settings.panels,
            "tf32": settings.tf32,
            "device": str(device),
            "git_revision": git_revision(),
        },
        "panels": [
            {"name": t.name, "condition": c}
            for t, c in zip(result.panels, result.panel_conditions, strict=True)
        ],
        "groups": {k: g.to_record() for k, g in result.groups.items()},
    }
    save_tiles(panels, result.panels)
    write_json(scores, record)
    overall = mean_iou(result.groups[ALL].confusion)
    print(f"generated set: mIoU {overall:.2f} over {record['num_images']} images", file=sys.stderr)
    return record


# ---------------------------------------------------------------------------------------------
# report: the table and the figure.


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{what} {path} is unreadable: {err}") from err
    if not isinstance(data, dict):
        raise DataError(f"{what} {path} does not hold a JSON object")
    return data


def read_scores(path: str | Path) -> tuple[dict[str, Any], dict[str, GroupScores]]:
    record = read_json(path, "quality scores")
    raw = record.get("groups")
    if not isinstance(raw, dict) or ALL not in raw:
        raise DataError(
            f"{path}: no groups with an {ALL!r} group (written by flexseg.quality score?)"
        )
    return record, {k: GroupScores.from_record(v, f"{path}: group {k!r}") for k, v in raw.items()}


def check_reference(scores: Mapping[str, Any], reference: Mapping[str, Any], path: str) -> None:
    """The reference must be the scoring checkpoint's run, with the same Eq. 1 kernel."""
    run = tuple(scores.get(k) for k in ("experiment", "model", "seed"))
    ref_run = tuple(reference.get(k) for k in ("experiment", "model", "seed"))
    if run != ref_run:
        raise DataError(
            f"reference {path} scores run {ref_run} but the generated set was scored by {run}"
        )
    kernel = scores.get("settings", {}).get("boundary_kernel")
    ref_kernel = reference.get("settings", {}).get("boundary_kernel")
    if kernel != ref_kernel:
        raise DataError(
            f"reference {path} uses boundary_kernel {ref_kernel}, the scores {kernel}: the "
            "boundary / interior split would not be comparable"
        )


def quality_figure(
    table: pd.DataFrame,
    tiles: Sequence[PanelTiles],
    conditions: Sequence[str],
    title: str,
    source_name: str | None,
    path: str | Path,
) -> None:
    """Boundary vs interior agreement per group (and of the source reference), then one
    image | label | prediction row per panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = table[table["scope"] != "class"]
    names = list(groups["name"])
    band = list(groups["boundary_agreement"])
    inner = list(groups["interior_agreement"])
    if source_name is not None:
        first = groups.iloc[0]
        names.append(f"{source_name}\n(held-out source)")
        band.append(first["source_boundary_agreement"])
        inner.append(first["source_interior_agreement"])
    rows = len(tiles)
    fig = plt.figure(figsize=(max(7.0, 1.3 * len(names) + 2), 3.4 + 1.9 * rows))
    grid = fig.add_gridspec(1 + rows, 1, height_ratios=[3.4] + [1.9] * rows)
    ax = fig.add_subplot(grid[0])
    x = np.arange(len(names))
    for offset, values, hatch, label in (
        (-0.2, band, None, "boundary band (Eq. 1)"),
        (0.2, inner, "//", "interior"),
    ):
        bars = ax.bar(x + offset, values, 0.4, hatch=hatch, color="#4c72b0", edgecolor="black",
                      linewidth=0.5, label=label)  # fmt: skip
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    if source_name is not None:
        ax.axvline(len(names) - 1.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 118)
    ax.set_ylabel("pixels predicted as labelled (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", ncols=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    for i, (t, cond) in enumerate(zip(tiles, conditions, strict=True)):
        row = fig.add_subplot(grid[1 + i])
        row.imshow(hconcat([t.rgb, colorize(t.gt), colorize(t.pred)]))
        row.set_title(
            f"{t.name} ({cond or 'no condition'}): image | label | prediction", fontsize=8
        )
        row.set_axis_off()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def report(
    scores_path: str | Path,
    panels_path: str | Path,
    reference_path: str | Path | None,
    out_csv: str | Path,
    figure: str | Path,
) -> pd.DataFrame:
    """quality.csv and quality.png from ``score``'s outputs and the reference's metrics.json."""
    record, groups = read_scores(scores_path)
    reference = None
    if reference_path is not None:
        reference = read_json(reference_path, "reference metrics")
        check_reference(record, reference, str(reference_path))
    table = quality_table(groups, reference)
    tiles = load_tiles(panels_path)
    shown = record.get("panels") or []
    if [t.name for t in tiles] != [p.get("name") for p in shown]:
        raise DataError(f"{panels_path} does not hold the panels listed in {scores_path}")
    overall = table.iloc[0]
    title = (
        f"Generated set ({overall['images']} images) scored by {record.get('experiment')} "
        f"{record.get('model')} seed {record.get('seed')}: mIoU {overall['miou']:.1f}"
    )
    if reference is not None:
        title += (
            f", held-out source {overall['source_miou']:.1f} (ratio {overall['miou_ratio']:.2f})"
        )
    kernel = record.get("settings", {}).get("boundary_kernel")
    title += (
        f"\nagreement with the labels in the Eq. 1 boundary band (k = {kernel}) vs the interior"
    )
    source_name = str(reference.get("dataset")) if reference is not None else None
    write_csv(out_csv, table)
    quality_figure(
        table, tiles, [p.get("condition", "") for p in shown], title, source_name, figure
    )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flexseg.quality",
        description="How well a source-only segmenter recognises a generated set's labels.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sc = sub.add_parser("score", help="predict the generated set: its scores and panel tiles")
    add_params_arguments(sc)
    sc.add_argument("--manifest", required=True, help="the merged set's manifest.csv")
    sc.add_argument("--checkpoint", required=True, help="model.pt of a source-only run")
    sc.add_argument("--scores", required=True, help="the scores (JSON) to write")
    sc.add_argument("--panels", required=True, help="the panel tiles (NPZ) to write")
    add_execution_arguments(sc, "quality")
    rp = sub.add_parser("report", help="quality.csv and quality.png from the scores")
    rp.add_argument("--scores", required=True, help="scores.json written by score")
    rp.add_argument("--panels", required=True, help="panels.npz written by score")
    rp.add_argument(
        "--reference", help="metrics.json of the same checkpoint on held-out source images"
    )
    rp.add_argument("--out-csv", required=True)
    rp.add_argument("--figure", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        if args.command == "score":
            options = execution_from_args(args, "quality")
            torch.set_num_threads(options["threads"])
            params = params_from_args(args, "quality")
            score(
                params, args.manifest, args.checkpoint, args.scores, args.panels, options["device"]
            )
            report_peak_memory()
        else:
            report(args.scores, args.panels, args.reference, args.out_csv, args.figure)
    except (DataError, ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
