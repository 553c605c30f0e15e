"""Dataset readers on small trees written in each dataset's real layout."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from flexseg.config import ConfigError
from flexseg.data import readers
from flexseg.data.readers import SampleRef, list_samples, load_label, load_sample
from flexseg.io import DataError, write_image, write_label

torch.set_num_threads(1)

# Raw Cityscapes label ids -> train ids, typed from the published table (only the ids used here).
CS = {7: 0, 8: 1, 26: 13, 33: 18, 0: 255, 4: 255, 30: 255}
# Mapillary v1.2 index -> train id (ids used here).
MV = {13: 0, 24: 0, 2: 1, 55: 13, 52: 18, 23: 255, 65: 255}


def image(path: Path, h: int = 16, w: int = 24, seed: int = 0) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    write_image(path, rgb)
    return rgb


def label(path: Path, values: list[int], h: int = 16, w: int = 24, seed: int = 0, palette=False):
    arr = np.random.default_rng(seed + 100).choice(values, size=(h, w)).astype(np.uint8)
    write_label(path, arr, palette=np.zeros((256, 3), np.uint8) if palette else None)
    return arr


def expected(raw: np.ndarray, table: dict[int, int]) -> np.ndarray:
    out = np.empty_like(raw)
    for y in range(raw.shape[0]):
        for x in range(raw.shape[1]):
            out[y, x] = table[int(raw[y, x])]
    return out


@pytest.fixture(autouse=True)
def _fresh_unmapped_log():
    readers.UNMAPPED.clear()
    yield
    readers.UNMAPPED.clear()


# ---------------------------------------------------------------------------------------------
# One test per layout


def test_gta_raw_ids_and_converted_train_ids(tmp_path):
    root = tmp_path / "gta"
    raws = {}
    for i in range(3):
        image(root / "images" / f"{i:05d}.png", seed=i)
        raws[i] = label(root / "labels" / f"{i:05d}.png", list(CS), seed=i, palette=True)
    # Image 1 also has the converter's train-id label: it must be preferred, and it must not be
    # taken for a raw label of a sample of its own.
    converted = label(root / "labels" / "00001_labelTrainIds.png", [0, 5, 255], seed=9)
    refs = list_samples({"name": "gta", "format": "gta", "root": str(root)})
    assert [r.name for r in refs] == ["00000", "00001", "00002"]
    assert [r.label_map for r in refs] == ["cityscapes_ids", "train_ids", "cityscapes_ids"]
    assert refs[1].label.name == "00001_labelTrainIds.png"
    rgb, lab = load_sample(refs[0])
    assert rgb.shape == (16, 24, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(lab, expected(raws[0], CS))
    np.testing.assert_array_equal(load_label(refs[1]), converted)


def test_cityscapes_train_ids_preferred_over_label_ids(tmp_path):
    root = tmp_path / "cs"
    for city, i in (("aachen", 0), ("bremen", 1)):
        stem = f"{city}_000000_00001{i}"
        image(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", seed=i)
        label(root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", list(CS), seed=i)
    trainids = label(
        root / "gtFine" / "val" / "aachen" / "aachen_000000_000010_gtFine_labelTrainIds.png",
        [1, 2, 255],
    )
    image(root / "leftImg8bit" / "train" / "zurich" / "zurich_000000_000000_leftImg8bit.png")
    refs = list_samples({"format": "cityscapes", "root": str(root), "split": "val"})
    assert [r.name for r in refs] == ["aachen_000000_000010", "bremen_000000_000011"]
    assert [r.label_map for r in refs] == ["train_ids", "cityscapes_ids"]
    np.testing.assert_array_equal(load_label(refs[0]), trainids)
    raw = label(tmp_path / "again.png", list(CS), seed=1)
    np.testing.assert_array_equal(load_label(refs[1]), expected(raw, CS))


def test_bdd100k(tmp_path):
    root = tmp_path / "bdd"
    for i, stem in enumerate(("7d06fefd-f7be05a6", "7d128593-0ccfea4c")):
        image(root / "images" / "10k" / "val" / f"{stem}.jpg", seed=i)
        label(root / "labels" / "sem_seg" / "masks" / "val" / f"{stem}.png", [0, 13, 255], seed=i)
    refs = list_samples({"format": "bdd100k", "root": str(root), "split": "val"})
    assert [r.name for r in refs] == ["7d06fefd-f7be05a6", "7d128593-0ccfea4c"]
    assert all(r.label_map == "train_ids" and r.image.suffix == ".jpg" for r in refs)
    rgb, lab = load_sample(refs[1])
    assert rgb.shape == (16, 24, 3)
    assert set(np.unique(lab)) <= {0, 13, 255}


def test_mapillary_v12_index_and_converted(tmp_path):
    root = tmp_path / "mv"
    image(root / "validation" / "images" / "a.jpg", seed=0)
    image(root / "validation" / "images" / "b.jpg", seed=1)
    raw = label(root / "validation" / "v1.2" / "labels" / "a.png", list(MV), palette=True)
    label(root / "validation" / "v1.2" / "labels" / "b.png", list(MV), seed=1, palette=True)
    conv = label(root / "validation" / "labels" / "b_labelTrainIds.png", [3, 4, 255], seed=1)
    refs = list_samples({"format": "mapillary", "root": str(root), "split": "validation"})
    assert [(r.name, r.label_map) for r in refs] == [("a", "mapillary_ids"), ("b", "train_ids")]
    np.testing.assert_array_equal(load_label(refs[0]), expected(raw, MV))
    np.testing.assert_array_equal(load_label(refs[1]), conv)


def write_acdc(root: Path, conditions=("fog", "night", "rain", "snow")):
    for i, cond in enumerate(conditions):
        seq = f"GOPR04{i}0"
        stem = f"{seq}_frame_00000{i}"
        image(root / "rgb_anon" / cond / "val" / seq / f"{stem}_rgb_anon.png", seed=i)
        label(root / "gt" / cond / "val" / seq / f"{stem}_gt_labelTrainIds.png", [0, 10], seed=i)
        # The reference images of ACDC live in <split>_ref and are no samples.
        image(root / "rgb_anon" / cond / "val_ref" / seq / f"{stem}_ref_rgb_anon.png", seed=i)


def test_acdc_conditions(tmp_path):
    root = tmp_path / "acdc"
    write_acdc(root)
    refs = list_samples({"format": "acdc", "root": str(root), "split": "val"})
    assert sorted(r.condition for r in refs) == ["fog", "night", "rain", "snow"]
    assert all(r.label_map == "train_ids" for r in refs)
    assert {r.name for r in refs} == {f"GOPR04{i}0_frame_00000{i}" for i in range(4)}
    some = list_samples(
        {"format": "acdc", "root": str(root), "split": "val", "conditions": ["night", "fog"]}
    )
    assert sorted(r.condition for r in some) == ["fog", "night"]
    load_sample(some[0])


def test_dark_zurich(tmp_path):
    root = tmp_path / "dz"
    for i in range(2):
        stem = f"GOPR0356_frame_00032{i}"
        image(root / "rgb_anon" / "val" / "night" / "GOPR0356" / f"{stem}_rgb_anon.png", seed=i)
        label(root / "gt" / "val" / "night" / "GOPR0356" / f"{stem}_gt_labelTrainIds.png", [2, 8])
    refs = list_samples({"format": "dark_zurich", "root": str(root), "split": "val"})
    assert [r.name for r in refs] == ["GOPR0356_frame_000320", "GOPR0356_frame_000321"]
    assert {r.condition for r in refs} == {"night"}


def write_generated(root: Path, conditions: dict[str, str], manifest: bool = True):
    for i, stem in enumerate(conditions):
        image(root / "images" / f"{stem}.png", seed=i)
        label(root / "labels" / f"{stem}_labelTrainIds.png", [0, 11, 255], seed=i)
    if manifest:
        rows = "".join(
            f"images/{s}.png,labels/{s}_labelTrainIds.png,{c}\n" for s, c in conditions.items()
        )
        (root / "manifest.csv").write_text("image,label,condition\n" + rows)


def test_generated_reads_conditions_from_manifest(tmp_path):
    root = tmp_path / "gen"
    write_generated(root, {"0000_00001_fog": "fog", "0001_00007_standard": "standard"})
    refs = list_samples({"format": "generated", "root": str(root)})
    assert [(r.name, r.condition) for r in refs] == [
        ("0000_00001_fog", "fog"),
        ("0001_00007_standard", "standard"),
    ]
    (root / "images" / "0001_00007_standard.png").unlink()
    with pytest.raises(DataError, match="manifest.csv does not match"):
        list_samples({"format": "generated", "root": str(root)})


def test_generated_without_manifest(tmp_path):
    root = tmp_path / "gen"
    write_generated(root, {"x": ""}, manifest=False)
    assert [r.condition for r in list_samples({"format": "generated", "root": str(root)})] == [""]


# ---------------------------------------------------------------------------------------------
# Bad input


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="dataset root not found: .*nowhere"):
        list_samples({"format": "gta", "root": str(tmp_path / "nowhere")})


def test_layout_mismatch_says_what_was_expected_and_found(tmp_path):
    root = tmp_path / "cs"
    image(root / "leftImg8bit" / "train" / "aachen" / "aachen_0_0_leftImg8bit.png")
    (root / "README").write_text("x")
    with pytest.raises(DataError) as err:
        list_samples({"format": "cityscapes", "root": str(root), "split": "val"})
    msg = str(err.value)
    assert "expected leftImg8bit/val/<city>/*_leftImg8bit.png" in msg
    assert str(root) in msg and "train/" in msg


def test_layout_mismatch_lists_the_root(tmp_path):
    root = tmp_path / "bdd"
    (root / "masks").mkdir(parents=True)
    (root / "val.txt").write_text("")
    with pytest.raises(
        DataError, match=r"expected images/10k/val/\*\.jpg .*found: masks/, val.txt$"
    ):
        list_samples({"format": "bdd100k", "root": str(root)})
    (root / "images").mkdir()
    with pytest.raises(DataError, match=r"found: nothing \(in images/\)"):
        list_samples({"format": "bdd100k", "root": str(root)})


def test_empty_split_is_an_error(tmp_path):
    root = tmp_path / "cs"
    (root / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    (root / "gtFine" / "val" / "aachen").mkdir(parents=True)
    with pytest.raises(DataError, match="split is empty"):
        list_samples({"format": "cityscapes", "root": str(root)})


def test_image_without_label(tmp_path):
    root = tmp_path / "gta"
    image(root / "images" / "00000.png")
    image(root / "images" / "00001.png")
    label(root / "labels" / "00000.png", list(CS))
    label(root / "labels" / "00002_labelTrainIds.png", [0])
    with pytest.raises(DataError, match=r"1 images under .* have no label: .*00001\.png"):
        list_samples({"format": "gta", "root": str(root)})


def test_labels_without_image_are_named(tmp_path, caplog):
    # GTA5 as downloaded in parts: two labels (one raw, one converted) whose images are missing;
    # the converted label of a present image is not one of them.
    root = tmp_path / "gta"
    for stem in ("00000", "00001"):
        image(root / "images" / f"{stem}.png")
        label(root / "labels" / f"{stem}.png", list(CS))
    label(root / "labels" / "00001_labelTrainIds.png", [0])
    label(root / "labels" / "00007.png", list(CS))
    label(root / "labels" / "00009_labelTrainIds.png", [0])
    with caplog.at_level(logging.WARNING, logger="flexseg.data.readers"):
        refs = list_samples({"format": "gta", "root": str(root)})
    assert [r.name for r in refs] == ["00000", "00001"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"2 labels under {root} have no image and are left out: ")
    assert "00007.png" in warning and "00009_labelTrainIds.png" in warning
    assert str(root / "labels" / "00001") not in warning

    caplog.clear()
    bdd = tmp_path / "bdd"
    image(bdd / "images" / "10k" / "val" / "a.jpg")
    for stem in "ab":
        label(bdd / "labels" / "sem_seg" / "masks" / "val" / f"{stem}.png", [0])
    with caplog.at_level(logging.WARNING, logger="flexseg.data.readers"):
        assert len(list_samples({"format": "bdd100k", "root": str(bdd)})) == 1
    assert "1 labels under" in caplog.text and "b.png" in caplog.text

    caplog.clear()
    gen = tmp_path / "gen"
    write_generated(gen, {"a": ""}, manifest=False)
    label(gen / "labels" / "z_labelTrainIds.png", [0])
    with caplog.at_level(logging.WARNING, logger="flexseg.data.readers"):
        assert len(list_samples({"format": "generated", "root": str(gen)})) == 1
    assert "z_labelTrainIds.png" in caplog.text


def test_complete_folders_do_not_warn(tmp_path, caplog):
    root = tmp_path / "gta"
    image(root / "images" / "00000.png")
    label(root / "labels" / "00000.png", list(CS))
    label(root / "labels" / "00000_labelTrainIds.png", [0])
    with caplog.at_level(logging.WARNING, logger="flexseg.data.readers"):
        list_samples({"format": "gta", "root": str(root)})
    assert not caplog.records


def test_label_size_differs_from_image(tmp_path):
    root = tmp_path / "gta"
    image(root / "images" / "00000.png", h=16, w=24)
    label(root / "labels" / "00000.png", list(CS), h=16, w=20)
    (ref,) = list_samples({"format": "gta", "root": str(root)})
    with pytest.raises(DataError, match=r"00000\.png is 24x16 but its label .*00000\.png is 20x16"):
        load_sample(ref)


def test_truncated_files(tmp_path):
    root = tmp_path / "gta"
    image(root / "images" / "00000.png")
    label(root / "labels" / "00000.png", list(CS))
    (ref,) = list_samples({"format": "gta", "root": str(root)})
    data = ref.image.read_bytes()
    ref.image.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="00000.png"):
        load_sample(ref)
    data = ref.label.read_bytes()
    ref.label.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated label"):
        load_label(ref)


def test_unmapped_ids_become_ignore_and_warn_once_per_dataset(tmp_path, caplog):
    root = tmp_path / "gen"
    write_generated(root, {"a": "", "b": "", "c": ""}, manifest=False)
    # The public DGInStyle script left 19 for void in its labels: not a train id.
    bad = {}
    for stem in "abc":
        arr = np.zeros((16, 24), np.uint8)
        arr[0, : 3 + ord(stem) - ord("a")] = 19
        arr[1, 0] = 200
        write_label(root / "labels" / f"{stem}_labelTrainIds.png", arr)
        bad[stem] = arr
    refs = list_samples({"name": "gen", "format": "generated", "root": str(root)})
    with caplog.at_level(logging.WARNING, logger="flexseg.data.readers"):
        for ref in refs:
            lab = load_label(ref)
            assert (lab[0, : 3 + ord(ref.name) - ord("a")] == 255).all()
            assert lab[1, 0] == 255 and lab[2, 0] == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "gen" in warnings[0].getMessage() and "[19, 200]" in warnings[0].getMessage()
    assert readers.UNMAPPED.pixels("gen") == {19: 3 + 4 + 5, 200: 3}
    assert readers.UNMAPPED.images("gen") == 3
    # Another dataset gets its own warning.
    other = SampleRef("a", refs[0].image, refs[0].label, "train_ids", dataset="other")
    with caplog.at_level(logging.WARNING, logger="flexseg.data.readers"):
        load_label(other)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_void_ids_of_the_label_space_do_not_warn(tmp_path, caplog):
    root = tmp_path / "gta"
    image(root / "images" / "00000.png")
    label(root / "labels" / "00000.png", [0, 1, 4, 30, 33, 255])
    (ref,) = list_samples({"name": "gta", "format": "gta", "root": str(root)})
    with caplog.at_level(logging.WARNING):
        load_label(ref)
    assert not caplog.records and readers.UNMAPPED.pixels("gta") == {}


def test_options_a_format_does_not_have(tmp_path):
    root = tmp_path / "gta"
    image(root / "images" / "00000.png")
    label(root / "labels" / "00000.png", list(CS))
    with pytest.raises(ConfigError, match="no splits"):
        list_samples({"format": "gta", "root": str(root), "split": "train"})
    with pytest.raises(ConfigError, match="only the acdc format takes conditions"):
        list_samples({"format": "gta", "root": str(root), "conditions": ["fog"]})
    with pytest.raises(ConfigError, match="datasets.x.format: 'kitti' is not one of"):
        list_samples({"name": "x", "format": "kitti", "root": str(root)})
    with pytest.raises(ConfigError, match="conditions.1: 'dusk' is not one of"):
        list_samples({"format": "acdc", "root": str(root), "conditions": ["night", "dusk"]})


def test_exclude(tmp_path):
    root = tmp_path / "gta"
    for i in range(3):
        image(root / "images" / f"{i:05d}.png", seed=i)
        label(root / "labels" / f"{i:05d}.png", list(CS), seed=i)
    refs = list_samples({"format": "gta", "root": str(root), "exclude": ["00001"]})
    assert [r.name for r in refs] == ["00000", "00002"]
    with pytest.raises(DataError, match="00009"):
        list_samples({"format": "gta", "root": str(root), "exclude": ["00009"]})


def test_duplicate_names_across_folders(tmp_path):
    root = tmp_path / "cs"
    for city in ("aachen", "bremen"):
        image(root / "leftImg8bit" / "val" / city / "same_leftImg8bit.png")
        label(root / "gtFine" / "val" / city / "same_gtFine_labelTrainIds.png", [0])
    with pytest.raises(DataError, match="share the name 'same'"):
        list_samples({"format": "cityscapes", "root": str(root)})


def test_sorted_and_deterministic(tmp_path):
    root = tmp_path / "gta"
    for i in (3, 1, 2):
        image(root / "images" / f"{i:05d}.png", seed=i)
        label(root / "labels" / f"{i:05d}.png", list(CS), seed=i)
    first = list_samples({"format": "gta", "root": str(root)})
    assert [r.name for r in first] == ["00001", "00002", "00003"]
    assert first == list_samples({"format": "gta", "root": str(root)})


def test_unknown_label_map():
    with pytest.raises(ValueError, match="unknown label_map 'rgb'"):
        SampleRef("x", Path("a.png"), Path("b.png"), "rgb")
