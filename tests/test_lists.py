"""Data lists and the source / generated / combined list commands (counts checked)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flexseg.data import combined
from flexseg.data.lists import (
    COLUMNS,
    ListEntry,
    read_data_list,
    to_sample_ref,
    write_data_list,
)
from flexseg.data.readers import load_sample
from flexseg.io import DataError, write_image, write_label

torch.set_num_threads(1)


def entries() -> list[ListEntry]:
    return [
        ListEntry(
            "00001", "gta/images/00001.png", "gta/labels/00001.png", "cityscapes_ids", "source", 16
        ),
        ListEntry(
            "a,b",
            "g/images/a,b.png",
            "g/labels/a,b_labelTrainIds.png",
            "train_ids",
            "generated",
            -1,
            "fog",
        ),
    ]


def test_round_trip_and_stable_bytes(tmp_path):
    path = tmp_path / "list.csv"
    write_data_list(path, entries())
    assert read_data_list(path) == entries()
    text = path.read_text()
    assert text.splitlines()[0] == ",".join(COLUMNS)
    write_data_list(path, read_data_list(path))
    assert path.read_text() == text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("name,image,label,label_map,part,rcs_class\n", "columns are"),
        (",".join(COLUMNS) + "\n", "no rows"),
        (",".join(COLUMNS) + "\nx,a.png,b.png,rgb,source,-1,\n", "line 2: .*label_map 'rgb'"),
        (",".join(COLUMNS) + "\nx,a.png,b.png,train_ids,target,-1,\n", "line 2: .*part 'target'"),
        (",".join(COLUMNS) + "\nx,a.png,b.png,train_ids,source,19,\n", "line 2: .*rcs_class 19"),
        (",".join(COLUMNS) + "\nx,a.png,b.png,train_ids,source,car,\n", "line 2: invalid literal"),
        (",".join(COLUMNS) + "\nx,a.png,b.png,train_ids,source,-1\n", "line 2: 6 fields"),
        (",".join(COLUMNS) + "\n,a.png,b.png,train_ids,source,-1,\n", "line 2: .*non-empty"),
        ("", "empty file"),
    ],
)
def test_bad_lists_name_the_file_and_line(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(DataError, match=message) as err:
        read_data_list(path)
    assert "bad.csv" in str(err.value)


def test_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="data list not found"):
        read_data_list(tmp_path / "none.csv")
    with pytest.raises(DataError, match="empty data list"):
        write_data_list(tmp_path / "x.csv", [])
    assert not (tmp_path / "x.csv").exists()


# ---------------------------------------------------------------------------------------------
# The list commands


def write_gta(root: Path, n: int) -> None:
    for i in range(n):
        write_image(root / "images" / f"{i:05d}.png", np.full((8, 12, 3), i, np.uint8))
        write_label(root / "labels" / f"{i:05d}.png", np.full((8, 12), 7 + i % 2, np.uint8))


def write_merged(folder: Path, n: int, relative_to_manifest: bool = True) -> Path:
    rows = []
    for k in range(n):
        name = f"{k:04d}_{k:05d}_{'fog' if k % 2 else 'standard'}"
        write_image(folder / "images" / f"{name}.png", np.full((8, 8, 3), k, np.uint8))
        write_label(folder / "labels" / f"{name}_labelTrainIds.png", np.full((8, 8), 13, np.uint8))
        prefix = Path() if relative_to_manifest else folder
        rows.append(
            f"{name},{prefix / 'images' / f'{name}.png'},"
            f"{prefix / 'labels' / f'{name}_labelTrainIds.png'},{'fog' if k % 2 else 'standard'},"
            '"A city street scene with car, in foggy weather."\n'
        )
    manifest = folder / "manifest.csv"
    manifest.write_text("name,image,label,condition,prompt\n" + "".join(rows))
    return manifest


def test_source_generated_and_combined(tmp_path, capsys):
    root = tmp_path / "gta"
    write_gta(root, 5)
    params = json.dumps({"source": {"name": "gta", "format": "gta", "root": str(root)}})
    out = tmp_path / "dataset"
    assert combined.main(["source", "--params", params, "--out", str(out / "source.csv")]) == 0
    source = read_data_list(out / "source.csv")
    assert [e.name for e in source] == [f"{i:05d}" for i in range(5)]
    assert all(e.part == "source" and e.rcs_class == -1 for e in source)
    assert "source: 5 images" in capsys.readouterr().out
    rgb, lab = load_sample(to_sample_ref(source[1]))
    assert rgb.shape == (8, 12, 3) and (lab == 1).all()

    manifest = write_merged(tmp_path / "generation" / "dataset", 4)
    args = ["--params", params, "--generated", str(manifest)]
    assert combined.main(["generated", *args, "--out", str(out / "generated.csv")]) == 0
    gen = read_data_list(out / "generated.csv")
    assert [e.condition for e in gen] == ["standard", "fog", "standard", "fog"]
    assert all(
        e.part == "generated" and e.label_map == "train_ids" and e.rcs_class == -1 for e in gen
    )
    assert all(Path(e.image).is_file() and Path(e.label).is_file() for e in gen)
    assert "generated: 4 images" in capsys.readouterr().out

    subset = tmp_path / "rcs" / "source_subset.csv"
    write_data_list(
        subset, [ListEntry(e.name, e.image, e.label, e.label_map, "source", 1) for e in source[:3]]
    )
    assert (
        combined.main(
            ["combined", *args, "--subset", str(subset), "--out", str(out / "combined.csv")]
        )
        == 0
    )
    both = read_data_list(out / "combined.csv")
    assert [e.part for e in both] == ["source"] * 3 + ["generated"] * 4
    assert [e.rcs_class for e in both[:3]] == [1, 1, 1]
    printed = capsys.readouterr().out
    assert "combined: 3 source (RCS subset" in printed and "+ 4 generated = 7 rows" in printed

    # combined_full (online RCS runs): the whole source, then the generated set
    assert combined.main(["combined_full", *args, "--out", str(out / "full.csv")]) == 0
    full = read_data_list(out / "full.csv")
    assert full == source + gen
    assert "combined_full: 5 source (all of gta) + 4 generated = 9 rows" in capsys.readouterr().out


def test_manifest_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = write_merged(Path("results/generation/dataset"), 2, relative_to_manifest=False)
    gen = combined.generated_entries(manifest)
    assert gen[0].image == "results/generation/dataset/images/0000_00000_standard.png"


def test_manifest_errors(tmp_path):
    manifest = write_merged(tmp_path / "gen", 3)
    (tmp_path / "gen" / "labels" / "0001_00001_fog_labelTrainIds.png").unlink()
    with pytest.raises(DataError, match=r"manifest.csv, line 3: label file .*0001_00001_fog"):
        combined.generated_entries(manifest)
    manifest.write_text("image,condition\n")
    with pytest.raises(DataError, match=r"missing columns \['label'\]"):
        combined.generated_entries(manifest)
    manifest.write_text("image,label,condition\n")
    with pytest.raises(DataError, match="no rows"):
        combined.generated_entries(manifest)
    with pytest.raises(DataError, match="not found"):
        combined.generated_entries(tmp_path / "missing.csv")


def test_combined_refuses_repeated_names_and_missing_inputs(tmp_path, capsys):
    manifest = write_merged(tmp_path / "gen", 2)
    gen = combined.generated_entries(manifest)
    subset = tmp_path / "subset.csv"
    write_data_list(subset, [ListEntry(gen[0].name, "a.png", "b.png", "train_ids", "source", 3)])
    params = json.dumps({"source": {"format": "gta", "root": "x"}})
    argv = ["combined", "--params", params, "--generated", str(manifest), "--subset", str(subset)]
    assert combined.main([*argv, "--out", str(tmp_path / "c.csv")]) == 1
    assert "names used by more than one row" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists()
    assert (
        combined.main(
            [
                "combined",
                "--params",
                params,
                "--generated",
                str(manifest),
                "--out",
                str(tmp_path / "c.csv"),
            ]
        )
        == 1
    )
    assert "needs --subset" in capsys.readouterr().err
    assert combined.main(["generated", "--params", params, "--out", str(tmp_path / "c.csv")]) == 1
    assert "needs --generated" in capsys.readouterr().err


def test_count_check_catches_a_short_write(tmp_path, monkeypatch):
    manifest = write_merged(tmp_path / "gen", 3)
    gen = combined.generated_entries(manifest)
    real = combined.write_data_list
    monkeypatch.setattr(combined, "write_data_list", lambda path, rows: real(path, rows[:-1]))
    with pytest.raises(DataError, match="2 generated rows written, but the inputs have 3"):
        combined.write_checked(tmp_path / "g.csv", gen, {"generated": 3})
    assert not (tmp_path / "g.csv").exists()
