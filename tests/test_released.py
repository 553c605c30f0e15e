"""A released DGInStyle set in place of generation: import, checks, and the DAG without shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flexseg.config import load_config, stage_params
from flexseg.data.combined import generated_entries
from flexseg.data.readers import list_samples
from flexseg.io import DataError, read_image, read_label, write_image, write_label
from generation.merge import MERGED_COLUMNS
from generation.released import import_released, main

REPO = Path(__file__).resolve().parent.parent

# stem -> condition; the tag anywhere in the stem as its own "_" part, DGInStyle's names
STEMS = {
    "00012_genid0": "standard",
    "00013_genid0_a": "adverse",
    "a_00020_genid3": "adverse",
    "00014_genid1_n": "night",
    "00015_genid1": "standard",
}
COUNTS = {"standard": 2, "adverse": 2, "night": 1}


def write_release(root: Path, stems=STEMS, size: int = 16) -> dict[str, np.ndarray]:
    """images/<stem>.png and labels/<stem>_labelTrainIds.png with void = 19, as released."""
    rng = np.random.default_rng(0)
    labels = {}
    for stem in stems:
        label = rng.integers(0, 19, (size, size)).astype(np.uint8)
        label[:3] = 19
        labels[stem] = label
        write_image(
            root / "images" / f"{stem}.png", rng.integers(0, 255, (size, size, 3), np.uint8)
        )
        write_label(root / "labels" / f"{stem}_labelTrainIds.png", label)
    return labels


def params_for(root: Path, counts=COUNTS) -> dict:
    config = load_config(
        overrides={"generation": {"released": {"root": str(root), "counts": dict(counts)}}}
    )
    return stage_params(config, "import_released")


def test_import_converts_labels_links_images_and_writes_merge_columns(tmp_path) -> None:
    release = tmp_path / "release"
    labels = write_release(release)
    out = tmp_path / "results" / "generation" / "dataset"
    (out / "images").mkdir(parents=True)
    (out / "images" / "old.png").write_bytes(b"stale")  # from an earlier set
    manifest = import_released(params_for(release), out / "manifest.csv", tmp_path / "grid.png")

    on_disk = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert tuple(on_disk.columns) == MERGED_COLUMNS
    assert len(manifest) == len(on_disk) == len(STEMS)
    assert dict(zip(on_disk["name"], on_disk["condition"], strict=True)) == STEMS
    row = on_disk.set_index("name").loc["00013_genid0_a"]
    assert (row["source_name"], row["seed"], row["rcs_class"]) == ("00013", "0", "-1")
    assert sorted(os.listdir(out / "images")) == sorted(f"{s}.png" for s in STEMS)
    for stem, label in labels.items():
        assert os.path.samefile(out / "images" / f"{stem}.png", release / "images" / f"{stem}.png")
        converted = read_label(out / "labels" / f"{stem}_labelTrainIds.png")
        np.testing.assert_array_equal(converted, np.where(label == 19, 255, label))
        assert (converted[:3] == 255).all() and converted[3:].max() < 19
    assert read_image(tmp_path / "grid.png").shape[0] > 100

    # What the rest of the DAG reads: the generated list and the "generated" reader.
    entries = generated_entries(out / "manifest.csv")
    assert [(e.name, e.condition) for e in entries] == sorted(STEMS.items())  # stem order
    refs = list_samples({"name": "generated", "format": "generated", "root": str(out)})
    assert sorted((r.name, r.condition) for r in refs) == sorted(STEMS.items())


def test_the_command_reports_counts(tmp_path, capsys) -> None:
    release = tmp_path / "release"
    write_release(release)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"generation": {"released": {"root": str(release), "counts": COUNTS}}})
    )
    out = tmp_path / "dataset" / "manifest.csv"
    args = ["--config", str(config), "--out", str(out), "--grid", str(tmp_path / "g.png")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "imported 5 released images" in printed and "standard 2, adverse 2, night 1" in printed
    assert main(["--params", '{"released": null}', "--out", str(out), "--grid", "g.png"]) == 1
    assert "generation.released is not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("label_without_image", "label without its image"),
        ("image_without_label", "image without its label"),
        ("bad_void", r"values \[200\] are neither class ids 0-18 nor the void value 19"),
        ("count", "holds standard 2, adverse 2, night 1 images"),
        ("two_tags", "more than one tag"),
        ("size", "label is 16x16, its image"),
    ],
)
def test_a_bad_release_is_an_error_naming_the_file(tmp_path, damage, message) -> None:
    release = tmp_path / "release"
    labels = write_release(release)
    counts = dict(COUNTS)
    named = None
    if damage == "label_without_image":
        named = release / "labels" / "00015_genid1_labelTrainIds.png"
        (release / "images" / "00015_genid1.png").unlink()
    elif damage == "image_without_label":
        named = release / "images" / "00014_genid1_n.png"
        (release / "labels" / "00014_genid1_n_labelTrainIds.png").unlink()
    elif damage == "bad_void":
        named = release / "labels" / "00012_genid0_labelTrainIds.png"
        label = labels["00012_genid0"].copy()
        label[0, 0] = 200
        write_label(named, label)
    elif damage == "count":
        counts["night"] = 1000
    elif damage == "two_tags":
        write_release(release, {"00016_a_genid2_n": "?"})
        named = release / "images" / "00016_a_genid2_n.png"
    elif damage == "size":
        named = release / "labels" / "00013_genid0_a_labelTrainIds.png"
        write_image(release / "images" / "00013_genid0_a.png", np.zeros((8, 16, 3), np.uint8))
    out = tmp_path / "dataset" / "manifest.csv"
    with pytest.raises(DataError, match=message) as err:
        import_released(params_for(release, counts), out, tmp_path / "g.png")
    if named is not None:
        assert str(named) in str(err.value)
    if damage == "count":
        assert "expects standard 2, adverse 2, night 1000" in str(err.value)
    assert not out.exists()


def _dry_run(tmp_path: Path, released: dict) -> subprocess.CompletedProcess:
    config = tmp_path / "released.yaml"
    config.write_text(yaml.safe_dump({"generation": {"released": released}}))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    cmd += ["-n", "--cores", "2", "--directory", str(tmp_path), "all", "--configfile", str(config)]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_the_dag_plans_no_generation_with_a_released_set(tmp_path) -> None:
    release = tmp_path / "release"
    write_release(release)
    proc = _dry_run(tmp_path, {"root": str(release), "counts": COUNTS})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = proc.stdout
    assert "import_released" in planned and "dataset_combined" in planned
    for rule in ("generation_jobs", "generate_shard", "merge_generated", "demo_generator_prior"):
        assert rule not in planned, rule

    (release / "labels").rename(release / "gone")
    proc = _dry_run(tmp_path, {"root": str(release), "counts": COUNTS})
    assert proc.returncode != 0
    assert "generation.released.root: folder not found" in proc.stdout + proc.stderr
