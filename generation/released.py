"""Use a generated set released by DGInStyle instead of generating one.

Generating the paper's 10,000 images is estimated (counted FLOPs, recipe_audit.md) at about 25
GPU-hours at half of an H100's bf16 peak. DGInStyle released generated sets (dginstyle_generation.md §3), e.g.
``half_adverse_half_normal``: 7,000 images, 3,000 tagged ``a`` (adverse-weather prompt, not
night), 1,000 tagged ``n`` (night), 3,000 untagged (no adverse condition); their labels hold 19
where void was (DGInStyle's one-hot helper rewrote 255 in place before saving). With
``generation.released`` set, this command takes the place of the job table, the shards and the
merge, and writes what ``generation.merge`` writes:

    results/generation/dataset/images/<stem>.png                hard link (else copy) of the image
    results/generation/dataset/labels/<stem>_labelTrainIds.png  the label, void -> 255, written whole
    results/generation/dataset/manifest.csv                     merge's columns (MERGED_COLUMNS)
    results/generation/samples_grid.png

What is assumed about the release (its exact file names are not published):

- DGInStyle's own output layout, flat: ``<root>/images/<stem>.png`` with
  ``<root>/labels/<stem>_labelTrainIds.png``, where DGInStyle's stems are
  ``<gta id>_genid<k>``.
- The tag is an ``_``-separated part of the stem that is exactly ``a`` or ``n``, anywhere in it
  (``a_00123_genid5``, ``00123_genid5_n``); a stem without one is standard. A stem with two tags
  is an error. If the release tags its files some other way, the count check below fails and
  says what was found.
- Labels hold class ids 0-18 and the void value ``void`` (19); any other value is an error.

Checks, each error naming the file: the folders exist; every image has its label and every
label its image; a label is a single-channel 8-bit map of its image's size; the number of
images per condition (``adverse`` for ``a``, ``night`` for ``n``, ``standard``) equals
``counts``. The pairing and the counts are checked before anything is written, each label before
it is written; the manifest is written last.

Manifest values: ``name`` the stem; ``condition`` from the tag; ``prompt`` empty and
``rcs_class`` -1 (the release records neither); ``source_name`` the GTA id and ``seed``
DGInStyle's gen id k (the seed of the chunk the image was generated in) when the stem has the
``<gta id>_genid<k>`` form, else empty; ``job_id`` the row's position in stem order;
``base_model`` / ``controlnet_model`` ``released:<root>``; ``shard_image`` the released image.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from flexseg.config import ConfigError, add_params_arguments, params_from_args, read_stage
from flexseg.io import DataError, read_label, remove_unlisted, write_csv, write_label
from flexseg.labels import IGNORE_INDEX, NUM_CLASSES

from .merge import MERGED_COLUMNS, place_file, write_grid

LABEL_SUFFIX = "_labelTrainIds.png"
TAGS = {"a": "adverse", "n": "night"}
CONDITIONS = ("standard", "adverse", "night")
_DGINSTYLE_STEM = re.compile(r"(?:^|_)(\d+)_genid(\d+)(?:_|$)")


@dataclass(frozen=True)
class ReleasedSample:
    stem: str
    image: Path
    label: Path
    condition: str


def condition_of(stem: str, where: Path) -> str:
    """``adverse`` / ``night`` from an ``a`` / ``n`` part of the stem, else ``standard``."""
    tags = [part for part in stem.split("_") if part in TAGS]
    if len(tags) > 1:
        raise DataError(f"{where}: the name carries more than one tag ({', '.join(tags)})")
    return TAGS[tags[0]] if tags else "standard"


def list_release(root: Path) -> list[ReleasedSample]:
    """The release's (image, label) pairs in stem order; unpaired files are errors."""
    images_dir, labels_dir = root / "images", root / "labels"
    for folder in (root, images_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(
                f"released set: folder not found: {folder} (expected images/<stem>.png and "
                f"labels/<stem>{LABEL_SUFFIX})"
            )
    images = {p.stem: p for p in images_dir.glob("*.png") if p.is_file()}
    labels: dict[str, Path] = {}
    for p in sorted(labels_dir.glob("*.png")):
        if not p.name.endswith(LABEL_SUFFIX):
            raise DataError(f"{p}: a label file name must end in {LABEL_SUFFIX}")
        labels[p.name[: -len(LABEL_SUFFIX)]] = p
    for stem in sorted(set(labels) - set(images)):
        raise DataError(f"{labels[stem]}: label without its image {images_dir / (stem + '.png')}")
    for stem in sorted(set(images) - set(labels)):
        raise DataError(
            f"{images[stem]}: image without its label {labels_dir / (stem + LABEL_SUFFIX)}"
        )
    if not images:
        raise DataError(f"released set {root}: no images in {images_dir}")
    return [
        ReleasedSample(stem, images[stem], labels[stem], condition_of(stem, images[stem]))
        for stem in sorted(images)
    ]


def check_counts(samples: list[ReleasedSample], counts: dict[str, int], root: Path) -> None:
    found = Counter(s.condition for s in samples)
    if any(found[c] != int(counts[c]) for c in CONDITIONS):
        have = ", ".join(f"{c} {found[c]}" for c in CONDITIONS)
        want = ", ".join(f"{c} {counts[c]}" for c in CONDITIONS)
        raise DataError(
            f"released set {root} holds {have} images (tag: an '_a' / '_n' part of the file "
            f"name, none = standard); generation.released.counts expects {want}"
        )


def check_label(sample: ReleasedSample, void: int) -> np.ndarray:
    """The sample's label with void -> 255, after checking its shape and values."""
    label = read_label(sample.label)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DataError(
            f"{sample.label}: expected a single-channel 8-bit label, got {label.dtype} "
            f"{label.shape}"
        )
    with Image.open(sample.image) as im:
        width, height = im.size
    if label.shape != (height, width):
        raise DataError(
            f"{sample.label}: label is {label.shape[1]}x{label.shape[0]}, its image "
            f"{sample.image} is {width}x{height}"
        )
    values = np.unique(label)
    bad = values[(values >= NUM_CLASSES) & (values != void)]
    if bad.size:
        raise DataError(
            f"{sample.label}: values {bad.tolist()} are neither class ids 0-{NUM_CLASSES - 1} "
            f"nor the void value {void} (generation.released.void)"
        )
    return np.where(label == void, IGNORE_INDEX, label).astype(np.uint8)


def manifest_row(sample: ReleasedSample, index: int, out_dir: Path, root: Path) -> dict[str, Any]:
    match = _DGINSTYLE_STEM.search(sample.stem)
    origin = f"released:{root}"
    return {
        "name": sample.stem,
        "image": str(out_dir / "images" / f"{sample.stem}.png"),
        "label": str(out_dir / "labels" / f"{sample.stem}{LABEL_SUFFIX}"),
        "label_map": "train_ids",
        "condition": sample.condition,
        "prompt": "",
        "rcs_class": -1,
        "source_name": match.group(1) if match else "",
        "source_image": "",
        "source_label": "",
        "x0": "",
        "y0": "",
        "x1": "",
        "y1": "",
        "seed": match.group(2) if match else "",
        "job_id": index,
        "base_model": origin,
        "controlnet_model": origin,
        "sampler": "",
        "shard_manifest": "",
        "shard_image": str(sample.image),
    }


def import_released(params: dict[str, Any], out: str | Path, grid: str | Path) -> pd.DataFrame:
    """Check the release of ``params['released']``, place it beside ``out`` and write ``out``."""
    params = read_stage(params, "import_released")
    released = params["released"]
    if not released:
        raise ConfigError("import params lack 'released' (generation.released is not set)")
    root = Path(released["root"])
    void = int(released["void"])
    samples = list_release(root)
    check_counts(samples, released["counts"], root)

    out = Path(out)
    images_dir, labels_dir = out.parent / "images", out.parent / "labels"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    rows = [manifest_row(s, k, out.parent, root) for k, s in enumerate(samples)]
    for sample, row in zip(samples, rows, strict=True):
        label = check_label(sample, void)
        place_file(sample.image, Path(row["image"]), what="released image")
        write_label(row["label"], label)
    written = {Path(r["image"]) for r in rows} | {Path(r["label"]) for r in rows}
    for folder in (images_dir, labels_dir):
        remove_unlisted(folder, written)
    manifest = pd.DataFrame(rows, columns=list(MERGED_COLUMNS))
    write_grid(grid, manifest, params["grid_samples"])
    write_csv(out, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m generation.released",
        description="Use a released DGInStyle set as results/generation/dataset/ (no generation).",
    )
    add_params_arguments(parser)
    parser.add_argument("--out", required=True, help="the manifest to write (dataset/manifest.csv)")
    parser.add_argument("--grid", required=True, help="the PNG grid of samples to write")
    args = parser.parse_args(argv)
    try:
        params = params_from_args(args, "import_released")
        manifest = import_released(params, args.out, args.grid)
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    counts = manifest["condition"].value_counts()
    print(
        f"imported {len(manifest)} released images into {Path(args.out).parent}: "
        + ", ".join(f"{c} {counts.get(c, 0)}" for c in CONDITIONS)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
