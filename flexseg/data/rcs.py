"""Rare-class sampling (RCS): class statistics, the rare-class source subset and RCS crops.

Implements DAFormer's RCS as DGInStyle and FLEX-Seg use it (dginstyle_generation.md §2; the
FLEX-Seg paper, "Implementation Details": RCS with T = 0.01 picks the GTA masks that are cropped
for generation and the 6,000 GTA images trained on):

- f_c = n_c / sum_k n_k, the share of class c among the labelled (non-void) source pixels, counted
  at native resolution;
- P(c) = softmax_c((1 - f_c) / T);
- a class is drawn by P, then an image uniformly among those with more than ``min_pixels`` of it.

Decisions the papers leave open:

- Classes absent from the source (n_c = 0) get probability 0: the softmax runs over the classes
  present, as DAFormer's statistics hold only classes that occur.
- Subset: a class that no image holds with more than ``min_pixels`` is dropped (probability 0, the
  rest renormalized, with a warning); DAFormer asserts instead. Every draw that would repeat an
  image is rejected, as in SegModel's ``rcs_sample_gta.py``; here the accepted draw is sampled
  directly: each step picks a class with weight P(c) * (unchosen candidates of c) / (candidates of
  c), then an unchosen candidate uniformly. That is exactly the distribution of the first accepted
  draw of the reject-and-retry loop, without its unbounded retries once the rare classes' images
  are used up. Asking for more unique images than are eligible is an error, not a smaller subset:
  the subset size is part of the experiment. The generator is a seeded ``numpy.random.Generator``.
- Crops (``select_crop``, DGInStyle's ``get_random_crop_rcs``): a try centres the crop on a
  uniformly drawn pixel of the class (every pixel, the last one included), clamps it to the image
  and is accepted when the class covers more than ``min_fraction`` of the crop area (DGInStyle's
  test is strict); after ``tries`` failures the last crop is kept. A class with no pixel gives one
  crop around a uniformly drawn pixel, marked not accepted. An image smaller than the crop gives a
  box starting at 0 that runs past the image: the consumer pads the label with 255 (and the image
  with 0) on the right and bottom.
- Online RCS (``training.online_rcs``; DAFormer's ``rare_class_sampling``, used by HRDA dg
  experiment 50 and DGInStyle-SegModel experiment 61): every source sample is drawn afresh, a
  class by P(c), then an image uniformly among those with more than ``min_pixels`` of it, over the
  whole source; the class then drives the re-crop (``flexseg.data.transforms``). The ``online``
  command writes that table (``online_table``: per drawable class its probability and candidate
  images by name); the trainer maps the names to its data list's rows (``OnlineRcs``) and draws
  from each sample's own generator, so a draw is a pure function of (seed, draw number). Classes
  no image holds enough of are dropped as for the subset (DAFormer would fail on them).
- Statistics also record each image's size against its label's: a pair of different sizes stops
  the stage with the list of such samples (GTA5 has a few), to be removed with the dataset entry's
  ``exclude``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexseg.config import ConfigError, add_params_arguments, build, params_from_args
from flexseg.data.lists import ListEntry, entry_from_ref, write_data_list
from flexseg.data.readers import (
    ID_MAPS,
    UNMAPPED,
    DatasetEntry,
    SampleRef,
    list_samples,
    map_label,
)
from flexseg.io import DataError, opencv_single_threaded, read_label, write_text
from flexseg.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Class statistics


@dataclass(frozen=True)
class FileCount:
    """Class pixels of one label, its size, and its ids foreign to the label space."""

    pixels: np.ndarray
    ignore: int
    height: int
    width: int
    image_size: tuple[int, int]
    unmapped: dict[int, int]


@dataclass(frozen=True)
class ClassStats:
    """Per source image (``refs[i]``) its class pixel counts ``pixels[i]`` at native resolution."""

    dataset: str
    refs: tuple[SampleRef, ...]
    pixels: np.ndarray
    ignore: np.ndarray
    sizes: np.ndarray
    unmapped: dict[int, int]

    @property
    def totals(self) -> np.ndarray:
        return self.pixels.sum(axis=0)


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels."""
    from PIL import Image

    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, SyntaxError) as err:
        raise DataError(f"unreadable image: {path} ({err})") from err
    return height, width


def count_classes(ref: SampleRef) -> FileCount:
    """Count the train-id pixels of ``ref``'s label (a process-pool task)."""
    mapped = map_label(read_label(ref.label), ref.label_map)
    counts = np.bincount(mapped.train_ids.reshape(-1), minlength=256)
    height, width = mapped.train_ids.shape
    return FileCount(
        pixels=counts[:NUM_CLASSES].astype(np.int64),
        ignore=int(counts[IGNORE_INDEX]),
        height=height,
        width=width,
        image_size=_image_size(ref.image),
        unmapped=mapped.unmapped,
    )


def compute_class_stats(entry: Mapping[str, Any] | DatasetEntry, workers: int) -> ClassStats:
    """Class statistics of every sample of a dataset entry, counted by ``workers`` processes."""
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    entry = DatasetEntry.read(entry)
    refs = list_samples(entry)
    if workers == 1 or len(refs) < 2:
        counts = [count_classes(r) for r in refs]
    else:
        chunk = max(1, len(refs) // (workers * 8))
        with opencv_single_threaded(), ProcessPoolExecutor(max_workers=workers) as pool:
            counts = list(pool.map(count_classes, refs, chunksize=chunk))
    mismatched = [
        f"{r.name} (image {c.image_size[1]}x{c.image_size[0]}, label {c.width}x{c.height})"
        for r, c in zip(refs, counts, strict=True)
        if c.image_size != (c.height, c.width)
    ]
    if mismatched:
        raise DataError(
            f"{len(mismatched)} samples under {entry.root} have an image and a label of "
            f"different sizes: {', '.join(mismatched[:10])}"
            f"{' ...' if len(mismatched) > 10 else ''}; list their names under the dataset "
            "entry's exclude (or fix the files)"
        )
    dataset = entry.name or entry.root
    unmapped: dict[int, int] = {}
    for ref, c in zip(refs, counts, strict=True):
        UNMAPPED.record(dataset, ref.label_map, ref.label, c.unmapped)
        for raw, n in c.unmapped.items():
            unmapped[raw] = unmapped.get(raw, 0) + n
    return ClassStats(
        dataset=dataset,
        refs=tuple(refs),
        pixels=np.stack([c.pixels for c in counts]),
        ignore=np.array([c.ignore for c in counts], dtype=np.int64),
        sizes=np.array([(c.height, c.width) for c in counts], dtype=np.int64),
        unmapped=dict(sorted(unmapped.items())),
    )


def _id_maps_json(label_maps: set[str]) -> dict[str, dict[str, int]]:
    return {m: {str(k): v for k, v in sorted(ID_MAPS[m].items())} for m in sorted(label_maps)}


def write_class_stats(path: str | Path, stats: ClassStats) -> None:
    """The statistics as JSON, one line per file so that the file stays readable at 25k images."""
    head = {
        "dataset": stats.dataset,
        "num_classes": NUM_CLASSES,
        "class_names": list(CLASS_NAMES),
        "id_maps": _id_maps_json({r.label_map for r in stats.refs}),
        "totals": [int(n) for n in stats.totals],
        "unmapped": {str(k): v for k, v in stats.unmapped.items()},
    }
    files = [
        {
            "name": r.name,
            "image": str(r.image),
            "label": str(r.label),
            "label_map": r.label_map,
            "condition": r.condition,
            "height": int(h),
            "width": int(w),
            "ignore": int(ign),
            "pixels": [int(n) for n in px],
        }
        for r, px, ign, (h, w) in zip(
            stats.refs, stats.pixels, stats.ignore, stats.sizes, strict=True
        )
    ]
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    body = ",\n".join(f"    {json.dumps(f)}" for f in files)
    write_text(path, "{\n" + "\n".join(lines) + '\n  "files": [\n' + body + "\n  ]\n}\n")


def read_class_stats(path: str | Path) -> ClassStats:
    """Read and check a statistics file (its totals and id maps must agree with its files)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class statistics not found: {path}")
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        refs = tuple(
            SampleRef(
                name=f["name"],
                image=Path(f["image"]),
                label=Path(f["label"]),
                label_map=f["label_map"],
                condition=f["condition"],
                dataset=data["dataset"],
            )
            for f in files
        )
        pixels = np.array([f["pixels"] for f in files], dtype=np.int64).reshape(len(files), -1)
        ignore = np.array([f["ignore"] for f in files], dtype=np.int64)
        sizes = np.array([(f["height"], f["width"]) for f in files], dtype=np.int64)
        totals = np.array(data["totals"], dtype=np.int64)
        id_maps = data["id_maps"]
        unmapped = {int(k): int(v) for k, v in data["unmapped"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"{path}: not a class statistics file ({type(err).__name__}: {err})"
        ) from err
    if not refs:
        raise DataError(f"{path}: the statistics list no files")
    if pixels.shape[1] != NUM_CLASSES or data.get("num_classes") != NUM_CLASSES:
        raise DataError(f"{path}: expected {NUM_CLASSES} classes, found {pixels.shape[1]}")
    if not np.array_equal(totals, pixels.sum(axis=0)):
        raise DataError(f"{path}: totals do not equal the sum of the per-file counts")
    if id_maps != _id_maps_json({r.label_map for r in refs}):
        raise DataError(
            f"{path}: its id maps differ from flexseg.labels' current ones; "
            "recompute the statistics"
        )
    return ClassStats(
        dataset=str(data["dataset"]),
        refs=refs,
        pixels=pixels,
        ignore=ignore,
        sizes=sizes,
        unmapped=unmapped,
    )


# ---------------------------------------------------------------------------------------------
# Sampling


def class_probabilities(totals: Sequence[int] | np.ndarray, temperature: float) -> np.ndarray:
    """P(c) = softmax((1 - f_c) / T) over the classes with pixels; 0 for absent classes."""
    totals = np.asarray(totals, dtype=np.float64)
    if totals.ndim != 1 or totals.size == 0:
        raise ValueError(f"class totals must be a non-empty 1-D array, got shape {totals.shape}")
    if (totals < 0).any():
        raise ValueError(f"class totals must not be negative: {totals.tolist()}")
    if not temperature > 0:
        raise ValueError(f"the RCS temperature must be positive, got {temperature}")
    if totals.sum() <= 0:
        raise ValueError("class totals are all zero: the source has no labelled pixel")
    present = totals > 0
    freq = totals[present] / totals.sum()
    logits = (1.0 - freq) / temperature
    weights = np.exp(logits - logits.max())
    probs = np.zeros_like(totals)
    probs[present] = weights / weights.sum()
    return probs


@dataclass(frozen=True)
class RcsPick:
    """An image of the statistics (``index`` into ``ClassStats.refs``) drawn for ``rcs_class``."""

    index: int
    rcs_class: int


def drawable_probabilities(
    stats: ClassStats, min_pixels: int, temperature: float, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """P(c) renormalized over the classes that some image holds more than ``min_pixels`` of
    (the others dropped, with a warning naming ``what``), and the (images, classes) candidate
    matrix."""
    candidate = stats.pixels > min_pixels
    probs = class_probabilities(stats.totals, temperature)
    drawable = candidate.any(axis=0)
    dropped = [CLASS_NAMES[c] for c in np.flatnonzero((probs > 0) & ~drawable)]
    if dropped:
        log.warning(
            "%s: no image of %s has more than %d px of %s; these classes are not drawn",
            what,
            stats.dataset,
            min_pixels,
            ", ".join(dropped),
        )
    probs = np.where(drawable, probs, 0.0)
    if probs.sum() == 0:
        raise DataError(f"no image of {stats.dataset} has more than {min_pixels} px of any class")
    probs /= probs.sum()
    return probs, candidate


def rare_class_subset(
    stats: ClassStats, size: int, min_pixels: int, temperature: float, seed: int
) -> list[RcsPick]:
    """``size`` unique images drawn by RCS, each with more than ``min_pixels`` of its class."""
    if size < 1:
        raise ValueError(f"the subset size must be at least 1, got {size}")
    probs, candidate = drawable_probabilities(stats, min_pixels, temperature, "RCS subset")
    eligible = int(candidate[:, probs > 0].any(axis=1).sum())
    if size > eligible:
        raise DataError(
            f"rcs.subset_size is {size}, but only {eligible} images of {stats.dataset} hold more "
            f"than {min_pixels} px (rcs.min_pixels) of a class that RCS draws"
        )
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(candidate[:, c]) for c in range(NUM_CLASSES)]
    class_sizes = candidate.sum(axis=0)
    unchosen = class_sizes.astype(np.float64)
    chosen = np.zeros(len(stats.refs), dtype=bool)
    picks = []
    for _ in range(size):
        weights = probs * unchosen / np.maximum(class_sizes, 1)
        if not weights.sum() > 0:
            raise DataError(f"RCS subset of {stats.dataset}: the remaining images cannot be drawn")
        cls = int(rng.choice(NUM_CLASSES, p=weights / weights.sum()))
        free = members[cls][~chosen[members[cls]]]
        index = int(free[rng.integers(len(free))])
        chosen[index] = True
        unchosen -= candidate[index]
        picks.append(RcsPick(index=index, rcs_class=cls))
    return picks


ONLINE_FORMAT = "flexseg-online-rcs"


def online_table(stats: ClassStats, min_pixels: int, temperature: float) -> dict[str, Any]:
    """The online RCS table of ``stats`` (JSON-ready): per drawable class, in class order, its
    probability and the names of the images holding more than ``min_pixels`` of it."""
    probs, candidate = drawable_probabilities(stats, min_pixels, temperature, "online RCS")
    classes = [
        {
            "class": int(c),
            "name": CLASS_NAMES[c],
            "probability": float(probs[c]),
            "images": [stats.refs[i].name for i in np.flatnonzero(candidate[:, c])],
        }
        for c in np.flatnonzero(probs > 0)
    ]
    return {
        "format": ONLINE_FORMAT,
        "dataset": stats.dataset,
        "images": len(stats.refs),
        "temperature": float(temperature),
        "min_pixels": int(min_pixels),
        "classes": classes,
    }


@dataclass(frozen=True)
class OnlineRcs:
    """Online RCS over the source rows of a data list: ``draw`` picks a class by its probability,
    then one of its candidate rows uniformly (``candidates[k]``: rows of ``classes[k]``)."""

    classes: tuple[int, ...]
    probabilities: np.ndarray
    candidates: tuple[np.ndarray, ...]

    @classmethod
    def read(cls, path: str | Path, names: Sequence[str], parts: Sequence[str]) -> OnlineRcs:
        """The table at ``path`` over a data list whose rows have ``names`` and ``parts``; every
        candidate must be a source row of the list."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"online RCS table not found: {path}")
        try:
            data = json.loads(path.read_text())
            if data.get("format") != ONLINE_FORMAT:
                raise KeyError("format")
            entries = [
                (int(e["class"]), float(e["probability"]), e["images"]) for e in data["classes"]
            ]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(
                f"{path}: not an online RCS table ({type(err).__name__}: {err})"
            ) from err
        rows = {
            n: i for i, (n, part) in enumerate(zip(names, parts, strict=True)) if part == "source"
        }
        candidates = []
        for c, _, images in entries:
            if not images:
                raise DataError(f"{path}: class {c} has no candidate image")
            missing = [n for n in images if n not in rows]
            if missing:
                raise DataError(
                    f"{path}: class {c} lists {len(missing)} images that are not source rows of "
                    f"the data list (e.g. {missing[:3]}): the table and the list come from "
                    "different source sets"
                )
            candidates.append(np.array([rows[n] for n in images], dtype=np.int64))
        probs = np.array([p for _, p, _ in entries], dtype=np.float64)
        if not entries or not np.isclose(probs.sum(), 1.0) or (probs <= 0).any():
            raise DataError(f"{path}: class probabilities must be positive and sum to 1")
        return cls(tuple(c for c, _, _ in entries), probs / probs.sum(), tuple(candidates))

    def draw(self, rng: np.random.Generator) -> RcsPick:
        """One online RCS sample: a class, then one of its candidate rows."""
        k = int(rng.choice(len(self.classes), p=self.probabilities))
        rows = self.candidates[k]
        return RcsPick(index=int(rows[rng.integers(len(rows))]), rcs_class=self.classes[k])


@dataclass(frozen=True)
class CropBox:
    """A crop ``[y0:y1, x0:x1]``; it may run past the image's right/bottom edge (pad there)."""

    x0: int
    y0: int
    x1: int
    y1: int
    class_pixels: int
    accepted: bool


def _crop_start(centre: int, extent: int, crop: int) -> int:
    if extent <= crop:
        return 0
    return int(np.clip(centre - crop // 2, 0, extent - crop))


def select_crop(
    label: np.ndarray,
    cls: int,
    crop_size: int,
    min_fraction: float,
    tries: int,
    rng: np.random.Generator,
) -> CropBox:
    """A ``crop_size`` square around class ``cls`` of a train-id ``label`` (see the module doc)."""
    if label.ndim != 2:
        raise ValueError(f"label must be 2-D, got shape {label.shape}")
    if crop_size < 1 or tries < 1:
        raise ValueError(f"crop_size and tries must be at least 1, got {crop_size}, {tries}")
    height, width = label.shape
    ys, xs = np.nonzero(label == cls)
    need = min_fraction * crop_size * crop_size
    box = None
    for _ in range(tries if len(ys) else 1):
        if len(ys):
            k = int(rng.integers(len(ys)))
            cy, cx = int(ys[k]), int(xs[k])
        else:
            cy, cx = int(rng.integers(height)), int(rng.integers(width))
        x0, y0 = _crop_start(cx, width, crop_size), _crop_start(cy, height, crop_size)
        inside = int((label[y0 : y0 + crop_size, x0 : x0 + crop_size] == cls).sum())
        box = CropBox(x0, y0, x0 + crop_size, y0 + crop_size, inside, accepted=inside > need)
        if box.accepted:
            break
    return box


# ---------------------------------------------------------------------------------------------
# Commands


@dataclass(frozen=True)
class SubsetSettings:
    """``rcs`` of the ``rcs_subset`` slice (not ``workers``: it does not change the subset)."""

    temperature: float
    min_pixels: int
    subset_size: int
    seed: int


def run_stats(params: Mapping[str, Any], out: Path, workers: int) -> ClassStats:
    """``params``: the validated ``class_stats`` slice."""
    stats = compute_class_stats(params["source"], workers)
    write_class_stats(out, stats)
    print(
        f"class statistics of {stats.dataset}: {len(stats.refs)} images, "
        f"{int(stats.totals.sum())} labelled px, {int(stats.ignore.sum())} ignored px -> {out}"
    )
    return stats


def run_subset(params: Mapping[str, Any], stats_path: Path, out: Path) -> list[ListEntry]:
    """``params``: the validated ``rcs_subset`` slice."""
    s = build(SubsetSettings, params["rcs"])
    stats = read_class_stats(stats_path)
    picks = rare_class_subset(stats, s.subset_size, s.min_pixels, s.temperature, s.seed)
    entries = [entry_from_ref(stats.refs[p.index], "source", p.rcs_class) for p in picks]
    write_data_list(out, entries)
    per_class = np.bincount([p.rcs_class for p in picks], minlength=NUM_CLASSES)
    print(f"RCS subset: {len(entries)} of {len(stats.refs)} images of {stats.dataset} -> {out}")
    for c in np.flatnonzero(per_class):
        print(f"  {CLASS_NAMES[c]:>14}: {per_class[c]}")
    return entries


@dataclass(frozen=True)
class OnlineSettings:
    """``rcs`` of the ``rcs_online`` slice: what the table depends on."""

    temperature: float
    min_pixels: int


def run_online(params: Mapping[str, Any], stats_path: Path, out: Path) -> dict[str, Any]:
    """``params``: the validated ``rcs_online`` slice."""
    s = build(OnlineSettings, params["rcs"])
    stats = read_class_stats(stats_path)
    table = online_table(stats, s.min_pixels, s.temperature)
    body = ",\n".join(f"    {json.dumps(c)}" for c in table["classes"])
    head = "\n".join(
        f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in table.items() if k != "classes"
    )
    write_text(out, "{\n" + head + '\n  "classes": [\n' + body + "\n  ]\n}\n")
    print(f"online RCS over {len(stats.refs)} images of {stats.dataset} -> {out}")
    for c in table["classes"]:
        print(f"  {c['name']:>14}: p {c['probability']:.4f}, {len(c['images'])} images")
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flexseg.data.rcs",
        description="Rare-class sampling: per-image class statistics, then the rare-class subset.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", help="count the class pixels of every source label")
    add_params_arguments(stats)
    stats.add_argument("--out", required=True, type=Path, help="class statistics JSON to write")
    stats.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes counting pixels (does not change the result)",
    )
    subset = sub.add_parser("subset", help="draw the rare-class subset of unique source images")
    add_params_arguments(subset)
    subset.add_argument("--stats", required=True, type=Path, help="class statistics JSON")
    subset.add_argument("--out", required=True, type=Path, help="data list CSV to write")
    online = sub.add_parser(
        "online", help="the online RCS table: per class its probability and candidate images"
    )
    add_params_arguments(online)
    online.add_argument("--stats", required=True, type=Path, help="class statistics JSON")
    online.add_argument("--out", required=True, type=Path, help="online RCS table JSON to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "stats":
            run_stats(params_from_args(args, "class_stats"), args.out, args.workers)
        elif args.command == "subset":
            run_subset(params_from_args(args, "rcs_subset"), args.stats, args.out)
        else:
            run_online(params_from_args(args, "rcs_online"), args.stats, args.out)
    except (DataError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def main_stats() -> int:
    return main(["stats", *sys.argv[1:]])


def main_subset() -> int:
    return main(["subset", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
