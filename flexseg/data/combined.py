"""The training data lists: the source set, the generated set, and their union.

FLEX-Seg trains on the 10,000 generated images together with the 6,000-image RCS subset of GTA
(paper, "Implementation Details"); DGInStyle's ``DGDataset`` is the same plain concatenation, but
its released builder never passes the generated half and silently trains on GTA alone
(training_and_evaluation.md §1). Here each list is written with its row counts checked against
its inputs, part by part, after reading the written file back:

- ``source``: every image of the source dataset (``rcs_class`` -1);
- ``generated``: every row of the merged generation manifest (train-id labels, ``rcs_class`` -1:
  generated images are used whole, so there is no class-aware re-crop);
- ``combined``: the RCS subset rows (``rcs_class`` kept, for the re-crop) then all generated rows;
- ``combined_full``: every source image (``rcs_class`` -1) then all generated rows, for a run with
  online RCS (``training.online_rcs``: DGInStyle-SegModel experiment 61 draws its GTA part by RCS
  over all of GTA, not from the subset).

Decisions: relative paths in the manifest are read relative to the manifest's folder (the merged
set is ``images/<id>.png``, ``labels/<id>_labelTrainIds.png`` beside it); a path that is not there
but exists as given (relative to the working directory) is taken as given, and one found in
neither place is an error. The name column is used when present, else the image's stem. Names
must be unique within a list, since training keys per-image state (HAS hardness) by row.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flexseg.config import ConfigError, add_params_arguments, params_from_args
from flexseg.data.lists import ListEntry, entry_from_ref, read_data_list, write_data_list
from flexseg.data.readers import DatasetEntry, list_samples
from flexseg.io import DataError

MANIFEST_COLUMNS = ("image", "label", "condition")


def source_entries(entry: Mapping[str, Any] | DatasetEntry) -> list[ListEntry]:
    """Every sample of the source dataset entry."""
    return [entry_from_ref(ref, "source") for ref in list_samples(entry)]


def _resolve(manifest: Path, value: str, line: int, column: str) -> str:
    if not value:
        raise DataError(f"{manifest}, line {line}: empty {column}")
    given = Path(value)
    beside = given if given.is_absolute() else manifest.parent / given
    for path in (beside, given):
        if path.is_file():
            return str(path)
    raise DataError(
        f"{manifest}, line {line}: {column} file {value} not found "
        f"(looked for {beside} and {given})"
    )


def generated_entries(manifest: str | Path) -> list[ListEntry]:
    """One entry per row of the merged generation manifest; every file must exist."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"generation manifest not found: {manifest}")
    try:
        with open(manifest, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in MANIFEST_COLUMNS if c not in columns]
            if missing:
                raise DataError(
                    f"{manifest}: missing columns {missing} (columns: {', '.join(columns)})"
                )
            entries = []
            for line, row in enumerate(reader, start=2):
                image = _resolve(manifest, row["image"], line, "image")
                entries.append(
                    ListEntry(
                        name=row.get("name") or Path(image).stem,
                        image=image,
                        label=_resolve(manifest, row["label"], line, "label"),
                        label_map="train_ids",
                        part="generated",
                        rcs_class=-1,
                        condition=row["condition"] or "",
                    )
                )
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"unreadable generation manifest {manifest}: {err}") from err
    if not entries:
        raise DataError(f"{manifest}: the generation manifest has no rows")
    return entries


def combined_entries(
    subset: Sequence[ListEntry], generated: Sequence[ListEntry]
) -> list[ListEntry]:
    """The RCS source subset followed by the generated set."""
    wrong = [e.name for e in subset if e.part != "source"] + [
        e.name for e in generated if e.part != "generated"
    ]
    if wrong:
        raise DataError(f"entries in the wrong part of the combined list: {wrong[:5]}")
    return [*subset, *generated]


def _check_unique(entries: Sequence[ListEntry], what: str) -> None:
    repeated = [n for n, k in Counter(e.name for e in entries).items() if k > 1]
    if repeated:
        raise DataError(f"{what}: names used by more than one row: {sorted(repeated)[:5]}")


def write_checked(out: Path, entries: Sequence[ListEntry], expected: Mapping[str, int]) -> None:
    """Write ``entries``, read the file back and compare its rows per part with ``expected``."""
    _check_unique(entries, str(out))
    write_data_list(out, entries)
    written = Counter(e.part for e in read_data_list(out))
    for part in ("source", "generated"):
        if written[part] != expected.get(part, 0):
            out.unlink()
            raise DataError(
                f"{out}: {written[part]} {part} rows written, but the inputs have "
                f"{expected.get(part, 0)}; the list was removed"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flexseg.data.combined",
        description="Write a training data list: the source set, the generated set, or both.",
    )
    parser.add_argument("kind", choices=("source", "generated", "combined", "combined_full"))
    add_params_arguments(parser)
    parser.add_argument("--subset", type=Path, help="RCS subset data list (for combined)")
    parser.add_argument("--generated", type=Path, help="merged generation manifest.csv")
    parser.add_argument("--out", required=True, type=Path, help="data list CSV to write")
    return parser


def run(
    kind: str, params: Mapping[str, Any], subset: Path | None, generated: Path | None, out: Path
) -> None:
    """Write the ``kind`` data list; ``params`` is the validated ``combine`` slice."""
    if kind == "source":
        entries = source_entries(params["source"])
        write_checked(out, entries, {"source": len(entries)})
        print(f"source: {len(entries)} images of {params['source']['name']} -> {out}")
        return
    if generated is None:
        raise ConfigError(f"{kind} needs --generated MANIFEST")
    gen = generated_entries(generated)
    if kind == "generated":
        write_checked(out, gen, {"generated": len(gen)})
        print(f"generated: {len(gen)} images from {generated} -> {out}")
        return
    if kind == "combined_full":
        src = source_entries(params["source"])
        origin = f"all of {params['source']['name']}"
    elif subset is None:
        raise ConfigError("combined needs --subset CSV")
    else:
        src, origin = read_data_list(subset), f"RCS subset {subset}"
    write_checked(out, combined_entries(src, gen), {"source": len(src), "generated": len(gen)})
    print(
        f"{kind}: {len(src)} source ({origin}) + {len(gen)} generated "
        f"= {len(src) + len(gen)} rows -> {out}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args.kind, params_from_args(args, "combine"), args.subset, args.generated, args.out)
    except (DataError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
