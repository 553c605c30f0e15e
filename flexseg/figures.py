"""Figures: the boundary vs interior error bars (the paper's Fig. 1) and qualitative panels.

Fig. 1 of the paper shows, for a model trained on generated data, the error rate of boundary
pixels (Eq. 1 on the ground truth) next to that of interior pixels, under normal and adverse
conditions, for DGInStyle and FLEX-Seg. Here: one panel per model, one group of bars per
evaluated dataset, and per method two bars (boundary solid, interior hatched) holding the mean
over seeds of the split-pooled error rates that ``flexseg.evaluate`` writes; the methods shown are
``tables.main_experiments``. Panels (input | prediction | ground truth) are drawn with the
Cityscapes palette, each tile scaled to a fixed height so that panels of large images stay small.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from flexseg.io import atomic_path, write_image
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


def panel_row(
    rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray, height: int = PANEL_HEIGHT
) -> np.ndarray:
    """One row: input | prediction | ground truth, each scaled to ``height`` px."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    if rgb.shape[:2] != gt.shape:
        rgb = cv2.resize(rgb, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
    tiles = [
        _scaled(rgb, height, labels=False),
        _scaled(colorize(pred), height, labels=True),
        _scaled(colorize(gt), height, labels=True),
    ]
    gap = np.full((height, 4, 3), 255, dtype=np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)


def panels_image(rows: Sequence[np.ndarray], titles: Sequence[str] = PANEL_TITLES) -> np.ndarray:
    """Stack panel rows (padded to the widest) under a header naming the three columns."""
    if not rows:
        canvas = np.full((60, 360, 3), 255, dtype=np.uint8)
        cv2.putText(canvas, "no images", (10, 35), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 1)
        return canvas
    width = max(r.shape[1] for r in rows)
    header = np.full((24, width, 3), 255, dtype=np.uint8)
    tile_w = (rows[0].shape[1] - 8) // 3
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
