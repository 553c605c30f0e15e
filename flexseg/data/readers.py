"""Readers for the official on-disk layouts of every dataset the pipeline reads.

A ``datasets.<name>`` config entry names a ``format`` (which reader), a ``root`` and, where the
dataset has them, a ``split`` and ``conditions``. ``list_samples(entry)`` turns it into sorted
``SampleRef`` records; ``load_sample`` / ``load_label`` read one of them and return Cityscapes
train ids (0..18, 255 = ignore) whatever the dataset ships (training_and_evaluation.md §3, §4).

Layouts (``<split>`` defaults: Cityscapes / BDD100K / ACDC / Dark Zurich ``val``, Mapillary
``validation``):

- ``gta``: ``images/<stem>.png`` with ``labels/<stem>_labelTrainIds.png`` (train ids, written by
  DAFormer's converter) when present, else ``labels/<stem>.png`` (raw Cityscapes label ids,
  palettized). Labels are looked up from the image stem, so converter outputs lying next to the
  raw labels are never mistaken for raw ones. No splits.
- ``cityscapes``: ``leftImg8bit/<split>/<city>/<id>_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/<id>_gtFine_labelTrainIds.png`` when present, else
  ``<id>_gtFine_labelIds.png``.
- ``bdd100k``: ``images/10k/<split>/<stem>.jpg`` with ``labels/sem_seg/masks/<split>/<stem>.png``
  (train ids).
- ``mapillary``: ``<split>/images/<stem>.jpg`` with a converted
  ``<split>/labels/<stem>_labelTrainIds.png`` or ``<split>/v1.2/labels/<stem>_labelTrainIds.png``
  when present, else the v1.2 66-class index ``<split>/v1.2/labels/<stem>.png``.
- ``acdc``: ``rgb_anon/<condition>/<split>/<seq>/<id>_rgb_anon.png`` with
  ``gt/<condition>/<split>/<seq>/<id>_gt_labelTrainIds.png`` for each of ``conditions``
  (default: fog, night, rain, snow).
- ``dark_zurich``: ``rgb_anon/<split>/night/<seq>/<id>_rgb_anon.png`` with
  ``gt/<split>/night/<seq>/<id>_gt_labelTrainIds.png``; condition ``night``.
- ``generated``: ``images/<stem>.png`` with ``labels/<stem>_labelTrainIds.png``; when a
  ``manifest.csv`` lies in the root its ``condition`` column is read (matched by image file name).

Decisions the papers leave open:

- The preference for converted train-id labels is per image, so a half-converted folder still
  reads correctly (each image says which id map its label uses).
- A raw id that does not belong to the label space at all (e.g. 19 in a train-id label, the bug of
  the public DGInStyle script; 70 in a Mapillary label) is set to 255 like the void ids, but is also
  counted per dataset and reported with one ``logging.warning`` per dataset, not one per image.
- A label without its image (GTA5, BDD100K and generated sets, whose label folders hold nothing
  else) is left out with one warning that names the files: the dataset is still usable, but an
  incomplete download must not shrink it unnoticed. An image without its label is an error.
- An entry may list ``exclude`` sample names (GTA5 ships a few image/label pairs of different
  sizes); a name that matches no sample is an error, so a typo cannot pass unnoticed.
- Splits and conditions given to a format that has none are errors, not ignored settings.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flexseg.config import DATASET_ENTRY, ConfigError, build, read_part
from flexseg.io import DataError, read_image, read_label
from flexseg.labels import (
    ACDC_CONDITIONS,
    CITYSCAPES_ID_TO_TRAIN_ID,
    IDENTITY_TRAIN_IDS,
    IGNORE_INDEX,
    MAPILLARY_ID_TO_TRAIN_ID,
    MAPILLARY_NUM_CLASSES,
    NUM_CLASSES,
    lookup_table,
)

log = logging.getLogger(__name__)

DEFAULT_SPLITS = {
    "cityscapes": "val",
    "bdd100k": "val",
    "mapillary": "validation",
    "acdc": "val",
    "dark_zurich": "val",
}

# Raw id -> train id for each label space a dataset may ship.
ID_MAPS: dict[str, dict[int, int]] = {
    "cityscapes_ids": CITYSCAPES_ID_TO_TRAIN_ID,
    "mapillary_ids": MAPILLARY_ID_TO_TRAIN_ID,
    "train_ids": IDENTITY_TRAIN_IDS,
}
LABEL_MAPS = tuple(ID_MAPS)

# The ids each label space can legitimately hold (void ones included). Cityscapes label ids run
# 0..33 (the license plate's -1 is stored as 255); Mapillary v1.2 indexes 0..65.
_VALID_RAW_IDS: dict[str, tuple[int, ...]] = {
    "cityscapes_ids": (*range(34), IGNORE_INDEX),
    "mapillary_ids": tuple(range(MAPILLARY_NUM_CLASSES)),
    "train_ids": (*range(NUM_CLASSES), IGNORE_INDEX),
}
_TABLES = {name: lookup_table(mapping) for name, mapping in ID_MAPS.items()}
_VALID = {}
for _name, _ids in _VALID_RAW_IDS.items():
    _VALID[_name] = np.zeros(256, dtype=bool)
    _VALID[_name][list(_ids)] = True


@dataclass(frozen=True)
class SampleRef:
    """One image and its label on disk. ``label_map`` says how to read the label's ids;
    ``dataset`` (the config entry's name) groups the unmapped-id report."""

    name: str
    image: Path
    label: Path
    label_map: str
    condition: str = ""
    dataset: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.label_map not in ID_MAPS:
            raise ValueError(
                f"sample {self.name!r}: unknown label_map {self.label_map!r} "
                f"(expected one of {', '.join(LABEL_MAPS)})"
            )
        object.__setattr__(self, "image", Path(self.image))
        object.__setattr__(self, "label", Path(self.label))


@dataclass(frozen=True)
class MappedLabel:
    """A label in train ids, with the pixel count of each raw id that is outside its label space."""

    train_ids: np.ndarray
    unmapped: dict[int, int]


def map_label(raw: np.ndarray, label_map: str) -> MappedLabel:
    """Raw ids to train ids (unknown ids -> 255), counting the ids foreign to the label space."""
    if label_map not in ID_MAPS:
        raise ValueError(
            f"unknown label_map {label_map!r} (expected one of {', '.join(LABEL_MAPS)})"
        )
    counts = np.bincount(raw.reshape(-1), minlength=256)
    foreign = np.flatnonzero((counts > 0) & ~_VALID[label_map])
    unmapped = {int(i): int(counts[i]) for i in foreign}
    return MappedLabel(train_ids=_TABLES[label_map][raw], unmapped=unmapped)


class UnmappedIdLog:
    """Per dataset, the pixels of raw ids outside the label space; warns once per dataset."""

    def __init__(self) -> None:
        self._pixels: dict[str, Counter[int]] = {}
        self._images: Counter[str] = Counter()

    def record(self, dataset: str, label_map: str, path: Path, unmapped: Mapping[int, int]) -> None:
        if not unmapped:
            return
        if dataset not in self._pixels:
            self._pixels[dataset] = Counter()
            log.warning(
                "dataset %s: label %s holds ids %s that are not %s; they are read as 255 "
                "(ignore). Further labels of this dataset with such ids are counted, not reported.",
                dataset or "<unnamed>",
                path,
                sorted(unmapped),
                label_map,
            )
        self._pixels[dataset].update(unmapped)
        self._images[dataset] += 1

    def pixels(self, dataset: str) -> dict[int, int]:
        """Raw id -> pixels read as 255 so far in ``dataset``."""
        return dict(sorted(self._pixels.get(dataset, Counter()).items()))

    def images(self, dataset: str) -> int:
        return self._images[dataset]

    def clear(self) -> None:
        self._pixels.clear()
        self._images.clear()


UNMAPPED = UnmappedIdLog()


def load_label(ref: SampleRef) -> np.ndarray:
    """The label of ``ref`` in train ids (H, W) uint8."""
    mapped = map_label(read_label(ref.label), ref.label_map)
    UNMAPPED.record(ref.dataset, ref.label_map, ref.label, mapped.unmapped)
    return mapped.train_ids


def load_sample(ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb uint8 (H, W, 3), train ids uint8 (H, W))``; the two must have the same size."""
    rgb = read_image(ref.image)
    label = load_label(ref)
    if rgb.shape[:2] != label.shape:
        raise DataError(
            f"image {ref.image} is {rgb.shape[1]}x{rgb.shape[0]} but its label {ref.label} is "
            f"{label.shape[1]}x{label.shape[0]} (width x height)"
        )
    return rgb, label


# ---------------------------------------------------------------------------------------------
# Listing


@dataclass(frozen=True)
class DatasetEntry:
    """A ``datasets.<name>`` entry (workflow/schemas/datasets.schema.yaml) with its ``name``."""

    format: str
    root: str
    exclude: tuple[str, ...]
    name: str = ""  # the key of the entry; the stage slices add it
    split: str | None = None  # the format's DEFAULT_SPLITS entry when unset
    conditions: tuple[str, ...] | None = None  # acdc only; all of ACDC_CONDITIONS when unset

    @classmethod
    def read(cls, entry: Mapping[str, Any] | DatasetEntry) -> DatasetEntry:
        """An entry checked against the schema, or one already read."""
        if isinstance(entry, DatasetEntry):
            return entry
        where = f"datasets.{entry['name']}" if entry.get("name") else "dataset entry"
        out = build(cls, read_part(entry, DATASET_ENTRY, where))
        if out.format in ("gta", "generated") and out.split:
            raise ConfigError(
                f"{where}: format {out.format} has no splits, but split is {out.split!r}"
            )
        if out.format != "acdc" and out.conditions:
            raise ConfigError(
                f"{where}: only the acdc format takes conditions, but format {out.format} has "
                f"conditions {list(out.conditions)}"
            )
        return out


def list_samples(entry: Mapping[str, Any] | DatasetEntry) -> list[SampleRef]:
    """Every sample of a ``datasets.<name>`` entry, sorted by image path."""
    entry = DatasetEntry.read(entry)
    root = Path(entry.root)
    if not root.is_dir():
        raise DataError(f"dataset root not found: {root} (format {entry.format})")
    refs = _LISTERS[entry.format](root, entry, entry.name or str(root))
    refs = _apply_exclude(refs, entry.exclude, root)
    refs.sort(key=lambda r: str(r.image))
    _check_unique_names(refs, root)
    return refs


def _apply_exclude(refs: list[SampleRef], exclude: Iterable[str], root: Path) -> list[SampleRef]:
    exclude = set(exclude)
    if not exclude:
        return refs
    unknown = exclude - {r.name for r in refs}
    if unknown:
        raise DataError(f"exclude names samples that are not under {root}: {sorted(unknown)}")
    return [r for r in refs if r.name not in exclude]


def _check_unique_names(refs: list[SampleRef], root: Path) -> None:
    seen: dict[str, Path] = {}
    for ref in refs:
        if ref.name in seen:
            raise DataError(
                f"two samples under {root} share the name {ref.name!r}: {seen[ref.name]} and "
                f"{ref.image}"
            )
        seen[ref.name] = ref.image


def _found(root: Path, rel: str) -> str:
    """What exists at the deepest existing folder on the way from ``root`` to ``root/rel``."""
    here = root
    for part in Path(rel).parts:
        if "<" in part or "*" in part or not (here / part).is_dir():
            break
        here = here / part
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in here.iterdir())
    shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
    where = "" if here == root else f" (in {here.relative_to(root)}/)"
    return (shown or "nothing") + where


def _require_dir(root: Path, rel: str, pattern: str) -> Path:
    path = root / rel
    if not path.is_dir():
        raise DataError(f"expected {pattern} under {root}, found: {_found(root, rel)}")
    return path


def _images(folder: Path, glob: str, root: Path, pattern: str) -> list[Path]:
    """Images matching ``glob`` in ``folder``; none at all is an error (an empty split)."""
    found = sorted(p for p in folder.glob(glob) if p.is_file())
    if not found:
        raise DataError(
            f"expected {pattern} under {root}, found no such image (the split is empty); "
            f"found: {_found(root, str(folder.relative_to(root)))}"
        )
    return found


def _pair(
    images: list[Path],
    label_for: Callable[[Path], tuple[Path, str] | None],
    name_for: Callable[[Path], str],
    root: Path,
    dataset: str,
    condition_for: Callable[[Path], str] = lambda _: "",
) -> list[SampleRef]:
    """Join images to labels; every image without its label is reported in one error."""
    refs, missing = [], []
    for image in images:
        found = label_for(image)
        if found is None:
            missing.append(image)
            continue
        label, label_map = found
        refs.append(
            SampleRef(
                name=name_for(image),
                image=image,
                label=label,
                label_map=label_map,
                condition=condition_for(image),
                dataset=dataset,
            )
        )
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{len(missing)} images under {root} have no label: {shown}{more}")
    return refs


def _warn_unpaired_labels(
    labels: Iterable[Path], image_stems: set[str], stem_for: Callable[[Path], str], root: Path
) -> list[Path]:
    """Labels whose image is missing are left out of the dataset; say which (one warning)."""
    unpaired = sorted(p for p in labels if stem_for(p) not in image_stems)
    if unpaired:
        shown = ", ".join(str(p) for p in unpaired[:5])
        more = f" and {len(unpaired) - 5} more" if len(unpaired) > 5 else ""
        log.warning(
            "%d labels under %s have no image and are left out: %s%s",
            len(unpaired),
            root,
            shown,
            more,
        )
    return unpaired


def _first_existing(*candidates: tuple[Path, str]) -> tuple[Path, str] | None:
    for path, label_map in candidates:
        if path.is_file():
            return path, label_map
    return None


def _strip(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) else name


def _stem(path: Path) -> str:
    return path.stem


def _split(entry: DatasetEntry, fmt: str) -> str:
    return entry.split or DEFAULT_SPLITS[fmt]


def _list_gta(root: Path, entry: DatasetEntry, dataset: str) -> list[SampleRef]:
    images_dir = _require_dir(root, "images", "images/*.png and labels/*.png")
    labels_dir = _require_dir(root, "labels", "images/*.png and labels/*.png")
    images = _images(images_dir, "*.png", root, "images/*.png")

    def label_for(image: Path) -> tuple[Path, str] | None:
        return _first_existing(
            (labels_dir / f"{image.stem}_labelTrainIds.png", "train_ids"),
            (labels_dir / f"{image.stem}.png", "cityscapes_ids"),
        )

    _warn_unpaired_labels(
        labels_dir.glob("*.png"),
        {p.stem for p in images},
        lambda p: _strip(p.stem, "_labelTrainIds"),
        root,
    )
    return _pair(images, label_for, lambda p: p.stem, root, dataset)


def _list_cityscapes(root: Path, entry: DatasetEntry, dataset: str) -> list[SampleRef]:
    split = _split(entry, "cityscapes")
    pattern = f"leftImg8bit/{split}/<city>/*_leftImg8bit.png"
    images_dir = _require_dir(root, f"leftImg8bit/{split}", pattern)
    labels_dir = _require_dir(root, f"gtFine/{split}", f"gtFine/{split}/<city>/*_gtFine_*.png")
    images = _images(images_dir, "*/*_leftImg8bit.png", root, pattern)

    def label_for(image: Path) -> tuple[Path, str] | None:
        stem = _strip(image.name, "_leftImg8bit.png")
        city = labels_dir / image.parent.name
        return _first_existing(
            (city / f"{stem}_gtFine_labelTrainIds.png", "train_ids"),
            (city / f"{stem}_gtFine_labelIds.png", "cityscapes_ids"),
        )

    return _pair(images, label_for, lambda p: _strip(p.name, "_leftImg8bit.png"), root, dataset)


def _list_bdd100k(root: Path, entry: DatasetEntry, dataset: str) -> list[SampleRef]:
    split = _split(entry, "bdd100k")
    pattern = f"images/10k/{split}/*.jpg"
    images_dir = _require_dir(root, f"images/10k/{split}", pattern)
    labels_dir = _require_dir(
        root, f"labels/sem_seg/masks/{split}", f"labels/sem_seg/masks/{split}/*.png"
    )
    images = _images(images_dir, "*.jpg", root, pattern)

    def label_for(image: Path) -> tuple[Path, str] | None:
        return _first_existing((labels_dir / f"{image.stem}.png", "train_ids"))

    _warn_unpaired_labels(labels_dir.glob("*.png"), {p.stem for p in images}, _stem, root)
    return _pair(images, label_for, lambda p: p.stem, root, dataset)


def _list_mapillary(root: Path, entry: DatasetEntry, dataset: str) -> list[SampleRef]:
    split = _split(entry, "mapillary")
    pattern = f"{split}/images/*.jpg"
    images_dir = _require_dir(root, f"{split}/images", pattern)
    converted = root / split / "labels"
    v12 = root / split / "v1.2" / "labels"
    if not converted.is_dir() and not v12.is_dir():
        raise DataError(
            f"expected {split}/v1.2/labels/*.png (or converted {split}/labels/*_labelTrainIds.png)"
            f" under {root}, found: {_found(root, f'{split}/v1.2/labels')}"
        )
    images = _images(images_dir, "*.jpg", root, pattern)

    def label_for(image: Path) -> tuple[Path, str] | None:
        return _first_existing(
            (converted / f"{image.stem}_labelTrainIds.png", "train_ids"),
            (v12 / f"{image.stem}_labelTrainIds.png", "train_ids"),
            (v12 / f"{image.stem}.png", "mapillary_ids"),
        )

    return _pair(images, label_for, lambda p: p.stem, root, dataset)


def _list_acdc(root: Path, entry: DatasetEntry, dataset: str) -> list[SampleRef]:
    split = _split(entry, "acdc")
    refs: list[SampleRef] = []
    for cond in entry.conditions or ACDC_CONDITIONS:
        pattern = f"rgb_anon/{cond}/{split}/<seq>/*_rgb_anon.png"
        images_dir = _require_dir(root, f"rgb_anon/{cond}/{split}", pattern)
        labels_dir = _require_dir(
            root, f"gt/{cond}/{split}", f"gt/{cond}/{split}/<seq>/*_gt_labelTrainIds.png"
        )
        images = _images(images_dir, "*/*_rgb_anon.png", root, pattern)

        def label_for(image: Path, labels_dir: Path = labels_dir) -> tuple[Path, str] | None:
            stem = _strip(image.name, "_rgb_anon.png")
            return _first_existing(
                (labels_dir / image.parent.name / f"{stem}_gt_labelTrainIds.png", "train_ids")
            )

        refs += _pair(
            images,
            label_for,
            lambda p: _strip(p.name, "_rgb_anon.png"),
            root,
            dataset,
            condition_for=lambda _, cond=cond: cond,
        )
    return refs


def _list_dark_zurich(root: Path, entry: DatasetEntry, dataset: str) -> list[SampleRef]:
    split = _split(entry, "dark_zurich")
    pattern = f"rgb_anon/{split}/night/<seq>/*_rgb_anon.png"
    images_dir = _require_dir(root, f"rgb_anon/{split}/night", pattern)
    labels_dir = _require_dir(
        root, f"gt/{split}/night", f"gt/{split}/night/<seq>/*_gt_labelTrainIds.png"
    )
    images = _images(images_dir, "*/*_rgb_anon.png", root, pattern)

    def label_for(image: Path) -> tuple[Path, str] | None:
        stem = _strip(image.name, "_rgb_anon.png")
        return _first_existing(
            (labels_dir / image.parent.name / f"{stem}_gt_labelTrainIds.png", "train_ids")
        )

    return _pair(
        images,
        label_for,
        lambda p: _strip(p.name, "_rgb_anon.png"),
        root,
        dataset,
        condition_for=lambda _: "night",
    )


def read_manifest_conditions(path: Path) -> dict[str, str]:
    """Image file name -> condition, from a generated set's ``manifest.csv``."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if "image" not in columns:
                raise DataError(f"{path}: no 'image' column (columns: {', '.join(columns)})")
            out: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                key = Path(row["image"] or "").name
                if not key:
                    raise DataError(f"{path}, line {line}: empty image")
                if key in out:
                    raise DataError(f"{path}, line {line}: image {key} is listed twice")
                out[key] = row.get("condition") or ""
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"unreadable manifest {path}: {err}") from err
    return out


def _list_generated(root: Path, entry: DatasetEntry, dataset: str) -> list[SampleRef]:
    pattern = "images/*.png and labels/*_labelTrainIds.png"
    images_dir = _require_dir(root, "images", pattern)
    labels_dir = _require_dir(root, "labels", pattern)
    images = _images(images_dir, "*.png", root, "images/*.png")
    conditions: dict[str, str] | None = None
    manifest = root / "manifest.csv"
    if manifest.is_file():
        conditions = read_manifest_conditions(manifest)
        on_disk = {p.name for p in images}
        absent = sorted(set(conditions) - on_disk)
        unlisted = sorted(on_disk - set(conditions))
        if absent or unlisted:
            raise DataError(
                f"{manifest} does not match {images_dir}: listed but missing {absent[:5]}, "
                f"present but unlisted {unlisted[:5]}"
            )

    def label_for(image: Path) -> tuple[Path, str] | None:
        return _first_existing((labels_dir / f"{image.stem}_labelTrainIds.png", "train_ids"))

    _warn_unpaired_labels(
        labels_dir.glob("*_labelTrainIds.png"),
        {p.stem for p in images},
        lambda p: _strip(p.stem, "_labelTrainIds"),
        root,
    )
    return _pair(
        images,
        label_for,
        lambda p: p.stem,
        root,
        dataset,
        condition_for=lambda p: conditions[p.name] if conditions is not None else "",
    )


_LISTERS: dict[str, Callable[[Path, DatasetEntry, str], list[SampleRef]]] = {
    "gta": _list_gta,
    "cityscapes": _list_cityscapes,
    "bdd100k": _list_bdd100k,
    "mapillary": _list_mapillary,
    "acdc": _list_acdc,
    "dark_zurich": _list_dark_zurich,
    "generated": _list_generated,
}
