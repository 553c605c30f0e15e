"""Merge the generation shards into one dataset folder, with a manifest and a sample grid.

    results/generation/dataset/images/<id>.png
    results/generation/dataset/labels/<id>_labelTrainIds.png
    results/generation/dataset/manifest.csv

The layout is the one DGInStyle's segmentation code reads (one flat folder, label = image stem +
``_labelTrainIds.png``) and ``flexseg.data.readers`` lists as format ``generated``.

Decisions:

- Files are hard-linked from the shards (no copy of 10,000 images); where the file system refuses
  a link they are copied. Each lands under a temporary name and is renamed into place.
- The folder holds exactly the merged manifest's files: files from an earlier merge that are not
  in the new manifest are removed (the ``generated`` reader rejects unlisted images).
- The merged manifest keeps every shard column, replaces ``image`` / ``label`` with the merged
  paths, adds ``label_map`` = ``train_ids`` and is sorted by job id.
- The merge fails, naming the numbers, when the row count differs from ``expected`` (the number of
  jobs) or a sample id appears twice; a missing shard file is an error naming it.
- The grid shows ``grid_samples`` rows spread evenly over the manifest: the image, the label it
  was conditioned on, the label drawn over the image at 50 %, and the condition, RCS class, seed
  and prompt as text.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flexseg.config import ConfigError, add_params_arguments, params_from_args, read_stage
from flexseg.io import (
    DataError,
    atomic_path,
    read_image,
    read_label,
    remove_unlisted,
    write_csv,
)
from flexseg.labels import CLASS_NAMES, NUM_CLASSES, colorize

from .shard import MANIFEST_COLUMNS

REQUIRED_COLUMNS = (
    "name",
    "image",
    "label",
    "condition",
    "prompt",
    "rcs_class",
    "source_image",
    "seed",
    "job_id",
)
LEADING_COLUMNS = ("name", "image", "label", "label_map", "condition", "prompt", "rcs_class")
# The merged manifest: the leading columns, the other shard columns, where each row came from.
MERGED_COLUMNS = (
    *LEADING_COLUMNS,
    *(c for c in MANIFEST_COLUMNS if c not in LEADING_COLUMNS),
    "shard_manifest",
    "shard_image",
)


def read_shard_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"shard manifest not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"unreadable shard manifest {path}: {err}") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}")
    return frame.assign(shard_manifest=str(path))


def place_file(src: Path, dest: Path, what: str = "shard file") -> None:
    """Hard-link (else copy) ``src`` to ``dest`` through a temporary name."""
    if not src.is_file():
        raise DataError(f"{what} not found: {src}")
    if dest.exists() and os.path.samefile(src, dest):
        return
    # the caller clears the folder of an earlier run's files (temporaries included) afterwards
    with atomic_path(dest, clear_stale=False) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def merge_shards(shard_manifests: list[str | Path], out: str | Path, expected: int) -> pd.DataFrame:
    """Place every shard file under ``out``'s folder; return the merged manifest (not written)."""
    out = Path(out)
    frames = [read_shard_manifest(p) for p in shard_manifests]
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(merged) != expected:
        counts = ", ".join(f"{p}: {len(f)}" for p, f in zip(shard_manifests, frames, strict=True))
        raise DataError(
            f"the shards hold {len(merged)} samples, expected {expected} (one per job); "
            f"per shard: {counts}"
        )
    dup = merged["name"][merged["name"].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"sample ids listed more than once across the shards: {dup[:10]}")
    merged["job_id"] = merged["job_id"].astype(int)
    merged = merged.sort_values("job_id", kind="stable").reset_index(drop=True)

    images_dir, labels_dir = out.parent / "images", out.parent / "labels"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    new_images = [images_dir / f"{name}.png" for name in merged["name"]]
    new_labels = [labels_dir / f"{name}_labelTrainIds.png" for name in merged["name"]]
    for src, dest in zip(merged["image"], new_images, strict=True):
        place_file(Path(src), dest)
    for src, dest in zip(merged["label"], new_labels, strict=True):
        place_file(Path(src), dest)
    for folder in (images_dir, labels_dir):
        remove_unlisted(folder, {*new_images, *new_labels})

    merged["shard_image"] = merged["image"]
    merged["image"] = [str(p) for p in new_images]
    merged["label"] = [str(p) for p in new_labels]
    merged["label_map"] = "train_ids"
    first = list(LEADING_COLUMNS)
    return merged[first + [c for c in merged.columns if c not in first]]


def grid_rows(count: int, samples: int) -> list[int]:
    """``samples`` row indices spread evenly over ``count`` rows (all of them when fewer)."""
    if samples <= 0 or count == 0:
        return []
    if samples >= count:
        return list(range(count))
    return [round(i * (count - 1) / (samples - 1)) if samples > 1 else 0 for i in range(samples)]


def write_grid(path: str | Path, manifest: pd.DataFrame, samples: int) -> None:
    """Image | label (the ControlNet condition) | label over image | condition, RCS class and
    prompt, one sample per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = grid_rows(len(manifest), samples)
    fig, axes = plt.subplots(
        max(len(rows), 1), 4, figsize=(13, 3.2 * max(len(rows), 1)), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for r, index in enumerate(rows):
        row = manifest.iloc[index]
        image = read_image(row["image"])
        label = read_label(row["label"])
        overlay = image.copy()
        valid = label < NUM_CLASSES
        overlay[valid] = (0.5 * image[valid] + 0.5 * colorize(label)[valid]).astype(np.uint8)
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(row["name"], fontsize=8)
        axes[r, 1].imshow(colorize(label))
        axes[r, 1].set_title("condition (label, void black)", fontsize=8)
        axes[r, 2].imshow(overlay)
        axes[r, 2].set_title("label over image (50 %)", fontsize=8)
        rcs = int(row["rcs_class"])
        rcs_name = CLASS_NAMES[rcs] if 0 <= rcs < NUM_CLASSES else "none"
        text = (
            f"condition: {row['condition']}\nRCS class: {rcs_name}\nseed: {row['seed']}\n\n"
            + textwrap.fill(f"prompt: {row['prompt']}", width=40)
        )
        axes[r, 3].text(0.0, 1.0, text, va="top", ha="left", fontsize=8, wrap=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def run_merge(
    params: dict[str, Any], shard_manifests: list[str | Path], out: str | Path, grid: str | Path
) -> pd.DataFrame:
    params = read_stage(params, "merge_generated")
    merged = merge_shards(shard_manifests, out, params["expected"])
    write_grid(grid, merged, params["grid_samples"])
    write_csv(out, merged)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m generation.merge",
        description="Merge generation shards into results/generation/dataset/ with a sample grid.",
    )
    add_params_arguments(parser)
    parser.add_argument("--shards", nargs="+", required=True, help="the shards' manifest.csv files")
    parser.add_argument("--out", required=True, help="the merged manifest (dataset/manifest.csv)")
    parser.add_argument("--grid", required=True, help="the PNG grid of samples to write")
    args = parser.parse_args(argv)
    try:
        params = params_from_args(args, "merge_generated")
        merged = run_merge(params, args.shards, args.out, args.grid)
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"merged {len(merged)} samples from {len(args.shards)} shards into {args.out}")
    print(
        "conditions: "
        + ", ".join(f"{c} {n}" for c, n in merged["condition"].value_counts().items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
