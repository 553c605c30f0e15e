"""Figures: the boundary vs interior error bars (the paper's Fig. 1) and qualitative panels.

Fig. 1 of the paper shows, for a model trained on generated data, the error rate of boundary
pixels (Eq. 1 on the ground truth) next to that of interior pixels, under normal and adverse
conditions, for DGInStyle and FLEX-Seg. Here: one panel per model, one group of bars per
evaluated dataset, and per method two bars (boundary solid, interior hatched) holding the mean
over seeds of the split-pooled error rates that ``flexseg.evaluate`` writes; the methods shown are
``tables.main_experiments``. Panels (input | prediction | ground truth) are drawn with the
Cityscapes palette, each tile scaled to a fixed height so that panels of large images stay small.

The paper's Fig. 5 (input | baseline | FLEX-Seg | ground truth, same images) is built from the
``panels.npz`` that every evaluation job writes next to ``panels.png``: the chosen images' names
and their tiles already scaled to the panel height (labels as train ids, nearest-neighbour
scaled), so comparing runs reads kilobytes, not the datasets. Runs of one (model, dataset) pick
the same images (``flexseg.evaluate.panel_indices``); different names are an error.
``python -m flexseg.figures compare --panels A.npz B.npz --titles A B --out fig.png`` draws it.

The paper's Fig. 2 (a generated training image and its label next to the predictions of the
DGInStyle baseline, the Eq. 2 boundary weight and FLEX-Seg on it) is ``generated_panels``:
``python -m flexseg.figures generated --manifest M --checkpoints A.pt B.pt C.pt --titles A B C
--images 4 --out fig.png``. The images are spread evenly over the merged generated set (sorted by
name, the job order) and each is predicted whole at the size training fed generated images to
that model (its ``training.generated_resize``), as the quality report predicts them
(``flexseg.quality.feed_settings``): they are the runs' own training images, so the panel shows
how each loss fits misaligned labels, not how it generalizes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from flexseg.io import DataError, atomic_path, write_image
from flexseg.labels import colorize

DATASET_ORDER = ("acdc", "dark_zurich", "cityscapes", "bdd100k", "mapillary", "source_val")
DATASET_TITLES = {
    "acdc": "ACDC",
    "dark_zurich": "DZ",
    "cityscapes": "CS",
    "bdd100k": "BDD",
    "mapillary": "MV",
    "source_val": "source val",
}
PANEL_HEIGHT = 192
PANEL_TITLES = ("input", "prediction", "ground truth")


def boundary_interior_figure(
    long: pd.DataFrame, experiments: Sequence[str], path: str | Path
) -> None:
    """Fig. 1-style bars from the long results table (columns experiment, method, model,
    dataset, boundary_error, interior_error), written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = long[long["experiment"].isin(list(experiments))]
    models = list(dict.fromkeys(data["model"]))
    fig_rows = max(len(models), 1)
    fig, axes = plt.subplots(fig_rows, 1, figsize=(12, 3.2 * fig_rows), squeeze=False)
    if not models:
        axes[0, 0].text(0.5, 0.5, "no evaluated runs of the main experiments", ha="center")
        axes[0, 0].set_axis_off()
    colors = plt.get_cmap("tab10")
    for ax, model in zip(axes[:, 0], models, strict=False):
        sub = data[data["model"] == model]
        mean = sub.groupby(["experiment", "dataset"])[["boundary_error", "interior_error"]].mean()
        present = set(sub["dataset"])
        datasets = [d for d in DATASET_ORDER if d in present]
        datasets += sorted(present - set(DATASET_ORDER))
        exps = [e for e in experiments if e in set(sub["experiment"])]
        labels = dict(zip(sub["experiment"], sub["method"], strict=False))
        width = 0.8 / max(2 * len(exps), 1)
        x = np.arange(len(datasets))
        for i, exp in enumerate(exps):
            for j, (col, hatch) in enumerate((("boundary_error", None), ("interior_error", "//"))):
                heights = [mean[col].get((exp, d), np.nan) for d in datasets]
                offset = (2 * i + j) * width - 0.4 + width / 2
                ax.bar(
                    x + offset,
                    heights,
                    width,
                    color=colors(i % 10),
                    hatch=hatch,
                    edgecolor="black",
                    linewidth=0.5,
                    label=f"{labels.get(exp, exp)} — {'boundary' if j == 0 else 'interior'}",
                )
        ax.set_xticks(x, [DATASET_TITLES.get(d, d) for d in datasets])
        ax.set_ylabel("error rate (%)")
        ax.set_title(f"Boundary vs interior error — {model}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _scaled(image: np.ndarray, height: int, labels: bool) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, round(w * height / h)), height)
    # Label colours must not blend; photos are area-averaged when shrunk.
    interp = cv2.INTER_NEAREST if labels else (cv2.INTER_AREA if height < h else cv2.INTER_LINEAR)
    return cv2.resize(image, size, interpolation=interp)


@dataclass
class PanelTiles:
    """One panel image: its name and the input, prediction and ground truth at panel height."""

    name: str
    rgb: np.ndarray  # (h, w, 3) uint8
    pred: np.ndarray  # (h, w) uint8 train ids, 255 void
    gt: np.ndarray  # (h, w) uint8 train ids, 255 void


def panel_tiles(
    name: str, rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray, height: int = PANEL_HEIGHT
) -> PanelTiles:
    """Scale one evaluated image to the panel height (labels nearest, photos area-averaged)."""
    if pred.shape != gt.shape:
        raise ValueError(
            f"{name}: prediction {pred.shape} and ground truth {gt.shape} differ in size"
        )
    if rgb.shape[:2] != gt.shape:
        rgb = cv2.resize(rgb, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
    return PanelTiles(
        name=name,
        rgb=_scaled(rgb, height, labels=False),
        pred=_scaled(pred.astype(np.uint8), height, labels=True),
        gt=_scaled(gt.astype(np.uint8), height, labels=True),
    )


def hconcat(tiles: Sequence[np.ndarray]) -> np.ndarray:
    """RGB tiles of one height side by side, 4 px of white between them."""
    gap = np.full((tiles[0].shape[0], 4, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, tile in enumerate(tiles):
        parts += [gap, tile] if i else [tile]
    return np.concatenate(parts, axis=1)


def tiles_row(t: PanelTiles) -> np.ndarray:
    """input | prediction | ground truth."""
    return hconcat([t.rgb, colorize(t.pred), colorize(t.gt)])


def save_tiles(path: str | Path, tiles: Sequence[PanelTiles]) -> None:
    """The panel tiles of one evaluation job as one compressed ``.npz``, written atomically."""
    arrays: dict[str, np.ndarray] = {"names": np.array([t.name for t in tiles], dtype=str)}
    for i, t in enumerate(tiles):
        arrays[f"rgb{i}"], arrays[f"pred{i}"], arrays[f"gt{i}"] = t.rgb, t.pred, t.gt
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def load_tiles(path: str | Path) -> list[PanelTiles]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [str(n) for n in data["names"]]
            return [
                PanelTiles(n, data[f"rgb{i}"], data[f"pred{i}"], data[f"gt{i}"])
                for i, n in enumerate(names)
            ]
    except (OSError, KeyError, ValueError) as err:
        raise DataError(
            f"{path}: not a panel-tiles file written by flexseg.evaluate ({err})"
        ) from err


def comparison_image(runs: Sequence[tuple[str, Sequence[PanelTiles]]]) -> np.ndarray:
    """The paper's Fig. 5: per image, input | one prediction per run | ground truth.

    ``runs`` is a list of (title, tiles); every run must hold the same images in the same order.
    """
    if not runs:
        raise ValueError("comparison_image needs at least one run")
    first_title, first = runs[0]
    names = [t.name for t in first]
    for title, tiles in runs[1:]:
        other = [t.name for t in tiles]
        if other != names:
            raise DataError(
                f"panels of {title!r} show {other}, those of {first_title!r} show {names}: "
                "the runs were not evaluated on the same images"
            )
    rows = []
    for i, base in enumerate(first):
        preds = [colorize(tiles[i].pred) for _, tiles in runs]
        rows.append(hconcat([base.rgb, *preds, colorize(base.gt)]))
    titles = ["input", *[title for title, _ in runs], "ground truth"]
    return panels_image(rows, titles)


def generated_panels(
    manifest: str | Path,
    checkpoints: Sequence[str | Path],
    titles: Sequence[str],
    images: int,
    device: str = "auto",
) -> np.ndarray:
    """Fig. 2: per generated image, image | one prediction per checkpoint | label."""
    from flexseg.checkpoint import load_model
    from flexseg.data.readers import list_samples, load_sample
    from flexseg.device import resolve_device
    from flexseg.evaluate import panel_indices
    from flexseg.inference import predict_image
    from flexseg.quality import feed_settings

    if len(titles) != len(checkpoints) or not checkpoints:
        raise ValueError(f"{len(checkpoints)} checkpoints but {len(titles)} titles")
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"generated-set manifest not found: {manifest}")
    refs = list_samples({"name": "generated", "format": "generated", "root": str(manifest.parent)})
    chosen = [refs[i] for i in sorted(panel_indices(len(refs), images))]
    if not chosen:
        raise DataError(f"{manifest.parent}: the generated set holds no images")
    samples = [(ref.name, *load_sample(ref)) for ref in chosen]
    torch_device = resolve_device(device, "evaluation.device")
    runs = []
    for title, path in zip(titles, checkpoints, strict=True):
        model, meta = load_model(path, map_location=torch_device)
        box = ((meta.params or {}).get("training") or {}).get("generated_resize")
        tiles = []
        for name, rgb, label in samples:
            h, w = label.shape
            settings = feed_settings(h, w, box)
            pred = predict_image(model, rgb, (h, w), settings, torch_device).labels
            tiles.append(panel_tiles(name, rgb, pred, label))
        runs.append((title, tiles))
        del model
    return comparison_image(runs)


def panels_image(rows: Sequence[np.ndarray], titles: Sequence[str] = PANEL_TITLES) -> np.ndarray:
    """Stack panel rows (padded to the widest) under a header naming the columns."""
    if not rows:
        canvas = np.full((60, 360, 3), 255, dtype=np.uint8)
        cv2.putText(canvas, "no images", (10, 35), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 1)
        return canvas
    width = max(r.shape[1] for r in rows)
    header = np.full((24, width, 3), 255, dtype=np.uint8)
    tile_w = (rows[0].shape[1] - 4 * (len(titles) - 1)) // len(titles)
    for i, title in enumerate(titles):
        cv2.putText(
            header, title, (i * (tile_w + 4) + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1
        )
    padded = [header]
    for r in rows:
        pad = np.full((r.shape[0], width - r.shape[1], 3), 255, dtype=np.uint8)
        padded += [np.concatenate([r, pad], axis=1), np.full((4, width, 3), 255, dtype=np.uint8)]
    return np.concatenate(padded, axis=0)


def write_panels(path: str | Path, rows: Sequence[np.ndarray]) -> None:
    write_image(path, panels_image(rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flexseg.figures",
        description="Figures from evaluation outputs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser(
        "compare", help="the paper's Fig. 5: input | one prediction per run | ground truth"
    )
    cmp.add_argument("--panels", nargs="+", required=True, help="panels.npz of each run")
    cmp.add_argument("--titles", nargs="+", required=True, help="one column title per run")
    cmp.add_argument("--out", required=True, help="PNG to write")
    gen = sub.add_parser(
        "generated",
        help="the paper's Fig. 2: generated training images, one prediction per run, labels",
    )
    gen.add_argument("--manifest", required=True, help="the merged generated set's manifest.csv")
    gen.add_argument("--checkpoints", nargs="+", required=True, help="model.pt of each run")
    gen.add_argument("--titles", nargs="+", required=True, help="one column title per run")
    gen.add_argument("--images", type=int, default=4, help="generated images shown")
    gen.add_argument("--device", default="auto", help="auto, cpu or cuda (evaluation.device)")
    gen.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    runs_given = args.panels if args.command == "compare" else args.checkpoints
    if len(args.titles) != len(runs_given):
        parser.error(f"{len(runs_given)} runs but {len(args.titles)} --titles")
    try:
        if args.command == "compare":
            runs = [(t, load_tiles(p)) for t, p in zip(args.titles, args.panels, strict=True)]
            write_image(args.out, comparison_image(runs))
        else:
            image = generated_panels(
                args.manifest, args.checkpoints, args.titles, args.images, args.device
            )
            write_image(args.out, image)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
