"""Data lists: the CSV files that tell training which images it reads (docs/CONTRACTS.md).

Columns ``name,image,label,label_map,part,rcs_class,condition``: ``part`` is ``source`` or
``generated``; ``rcs_class`` is the rare class a source-subset image was drawn for (training
re-crops until the crop holds it, DAFormer's class-aware re-crop) or -1; paths are stored as the
readers gave them (relative to the working directory, or absolute).

The file is plain ``csv`` written in one go, so the same entries give the same bytes. Reading
validates the header and every row and names the file and line at fault; an empty list is an
error, never an empty dataset.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flexseg.data.readers import LABEL_MAPS, SampleRef
from flexseg.io import DataError, write_text
from flexseg.labels import NUM_CLASSES

COLUMNS = ("name", "image", "label", "label_map", "part", "rcs_class", "condition")
PARTS = ("source", "generated")


@dataclass(frozen=True)
class ListEntry:
    """One row of a data list."""

    name: str
    image: str
    label: str
    label_map: str
    part: str
    rcs_class: int = -1
    condition: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.image or not self.label:
            raise ValueError(f"data list entry {self!r}: name, image and label must be non-empty")
        if self.label_map not in LABEL_MAPS:
            raise ValueError(
                f"data list entry {self.name!r}: label_map {self.label_map!r} is not one of "
                f"{', '.join(LABEL_MAPS)}"
            )
        if self.part not in PARTS:
            raise ValueError(
                f"data list entry {self.name!r}: part {self.part!r} is not one of "
                f"{', '.join(PARTS)}"
            )
        if not -1 <= self.rcs_class < NUM_CLASSES:
            raise ValueError(
                f"data list entry {self.name!r}: rcs_class {self.rcs_class} is not -1 or a "
                f"train id 0..{NUM_CLASSES - 1}"
            )


def entry_from_ref(ref: SampleRef, part: str, rcs_class: int = -1) -> ListEntry:
    return ListEntry(
        name=ref.name,
        image=str(ref.image),
        label=str(ref.label),
        label_map=ref.label_map,
        part=part,
        rcs_class=rcs_class,
        condition=ref.condition,
    )


def to_sample_ref(entry: ListEntry, dataset: str = "") -> SampleRef:
    """The reader's view of a row (``dataset`` groups the unmapped-id report)."""
    return SampleRef(
        name=entry.name,
        image=Path(entry.image),
        label=Path(entry.label),
        label_map=entry.label_map,
        condition=entry.condition,
        dataset=dataset,
    )


def format_data_list(entries: Iterable[ListEntry]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for e in entries:
        writer.writerow([e.name, e.image, e.label, e.label_map, e.part, e.rcs_class, e.condition])
    return buf.getvalue()


def write_data_list(path: str | os.PathLike, entries: Iterable[ListEntry]) -> None:
    """Write ``entries`` as a data list, whole or not at all; an empty list is refused."""
    entries = list(entries)
    if not entries:
        raise DataError(f"refusing to write an empty data list to {path}")
    write_text(path, format_data_list(entries))


def read_data_list(path: str | os.PathLike) -> list[ListEntry]:
    """Read and validate a data list; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data list not found: {path}")
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file (expected the header {','.join(COLUMNS)})")
            if tuple(header) != COLUMNS:
                raise DataError(
                    f"{path}: columns are {','.join(header)}; expected {','.join(COLUMNS)}"
                )
            entries = [_parse_row(path, line, row) for line, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"unreadable data list {path}: {err}") from err
    if not entries:
        raise DataError(f"{path}: the data list has a header but no rows")
    return entries


def _parse_row(path: Path, line: int, row: list[str]) -> ListEntry:
    if len(row) != len(COLUMNS):
        raise DataError(f"{path}, line {line}: {len(row)} fields, expected {len(COLUMNS)}")
    name, image, label, label_map, part, rcs_class, condition = row
    try:
        return ListEntry(
            name=name,
            image=image,
            label=label,
            label_map=label_map,
            part=part,
            rcs_class=int(rcs_class),
            condition=condition,
        )
    except ValueError as err:
        raise DataError(f"{path}, line {line}: {err}") from err
