"""The procedural demo world: determinism, layouts, label spaces, class statistics, equations."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flexseg.config import ConfigError
from flexseg.data.demo.classes import (
    FINE_CLASSES,
    FINE_TO_TRAIN,
    MAPILLARY_DISAGREES,
    F,
)
from flexseg.data.demo.domains import build_domains
from flexseg.data.demo.geometry import Camera, Canvas
from flexseg.data.demo.scene import render_scene
from flexseg.data.demo.street import Street, ground_buffers, sample_street
from flexseg.data.demo.style import _fog
from flexseg.data.demo.world import DEFAULT_PROMPT, render_item, render_world, validate_demo
from flexseg.io import read_image, read_label
from flexseg.labels import (
    ACDC_CONDITIONS,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CLASS_NAMES,
    CONDITIONS,
    IGNORE_INDEX,
    MAPILLARY_ID_TO_TRAIN_ID,
    NUM_CLASSES,
    lookup_table,
)

torch.set_num_threads(1)

TINY = {
    "seed": 3,
    "root": "unused",
    "source": {"count": 38, "size": [96, 56]},
    "source_val": {"count": 2, "size": [96, 56]},
    "prior": {"count": 5, "size": [48, 48]},
    "targets": {
        "cityscapes": {"count": 3, "size": [64, 32]},
        "bdd100k": {"count": 2, "size": [64, 36]},
        "mapillary": {"count": 4, "size": [56, 42]},
        "acdc": {"count": 4, "size": [64, 36]},
        "dark_zurich": {"count": 2, "size": [64, 36]},
    },
    "grid_samples": 1,
}

CS_TABLE = lookup_table(CITYSCAPES_ID_TO_TRAIN_ID)
MV_TABLE = lookup_table(MAPILLARY_ID_TO_TRAIN_ID)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("demo") / "world"
    grid = root.parent / "grid.png"
    summary = render_world(copy.deepcopy(TINY), root, grid, workers=2)
    return root, summary


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".demo_world"
    }


def _pairs(root: Path, image_glob: str, to_label) -> list[tuple[Path, Path]]:
    images = sorted(root.glob(image_glob))
    return [(p, Path(to_label(str(p)))) for p in images]


def _layouts(root: Path) -> dict[str, list[tuple[Path, Path]]]:
    return {
        "source": _pairs(root, "gta/images/*.png", lambda p: p.replace("/images/", "/labels/")),
        "source_val": _pairs(
            root, "gta_val/images/*.png", lambda p: p.replace("/images/", "/labels/")
        ),
        "cityscapes": _pairs(
            root,
            "cityscapes/leftImg8bit/val/*/*_leftImg8bit.png",
            lambda p: p.replace("/leftImg8bit/", "/gtFine/").replace(
                "_leftImg8bit.png", "_gtFine_labelIds.png"
            ),
        ),
        "bdd100k": _pairs(
            root,
            "bdd100k/images/10k/val/*.jpg",
            lambda p: p.replace("/images/10k/val/", "/labels/sem_seg/masks/val/").replace(
                ".jpg", ".png"
            ),
        ),
        "mapillary": _pairs(
            root,
            "mapillary/validation/images/*.jpg",
            lambda p: p.replace("/images/", "/v1.2/labels/").replace(".jpg", ".png"),
        ),
        "acdc": _pairs(
            root,
            "acdc/rgb_anon/*/val/*/*_rgb_anon.png",
            lambda p: p.replace("/rgb_anon/", "/gt/").replace(
                "_rgb_anon.png", "_gt_labelTrainIds.png"
            ),
        ),
        "dark_zurich": _pairs(
            root,
            "dark_zurich/rgb_anon/val/night/GOPR0356/*_rgb_anon.png",
            lambda p: p.replace("/rgb_anon/", "/gt/").replace(
                "_rgb_anon.png", "_gt_labelTrainIds.png"
            ),
        ),
        "prior": _pairs(
            root,
            "prior/images/*.png",
            lambda p: p.replace("/images/", "/labels/").replace(".png", "_labelTrainIds.png"),
        ),
    }


def _source_train_ids(root: Path) -> list[np.ndarray]:
    return [CS_TABLE[read_label(lab)] for _, lab in _layouts(root)["source"]]


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_identical_bytes_in_any_process_order(world, tmp_path):
    root, _ = world
    again = render_world(copy.deepcopy(TINY), tmp_path / "again", None, workers=1)
    first, second = _files(root), _files(tmp_path / "again")
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []
    assert again["files"] == json.loads((root / "world.json").read_text())["files"]


def test_one_image_alone_equals_its_file_in_the_world(world, tmp_path):
    root, _ = world
    domains = {d.name: d for d in build_domains(validate_demo(copy.deepcopy(TINY)))}
    for name, index in (("mapillary", 3), ("acdc", 2), ("source", 17)):
        domain = domains[name]
        item = domain.item(index)
        render_item(domain, item, tmp_path, DEFAULT_PROMPT, preview=False)
        assert (tmp_path / item.image).read_bytes() == (root / item.image).read_bytes()
        assert (tmp_path / item.label).read_bytes() == (root / item.label).read_bytes()


def test_another_seed_gives_other_images(world, tmp_path):
    root, _ = world
    cfg = copy.deepcopy(TINY)
    cfg["seed"] = 4
    render_world(cfg, tmp_path / "other", None, workers=1)
    first = _files(root)
    other = _files(tmp_path / "other")
    shared = [n for n in ("gta/images/00001.png", "gta/images/00002.png", "prior/images/00000.png")]
    for name in shared:
        assert first[name] != other[name], name
    assert json.loads((root / "world.json").read_text())["seed"] == 3


# ---------------------------------------------------------------------------------------------
# Layouts, sizes, checksums


def test_every_domain_is_written_in_its_dataset_layout(world):
    root, summary = world
    layouts = _layouts(root)
    expected = {
        "source": 38,
        "source_val": 2,
        "prior": 5,
        "cityscapes": 3,
        "bdd100k": 2,
        "mapillary": 4,
        "acdc": 4,
        "dark_zurich": 2,
    }
    for name, count in expected.items():
        pairs = layouts[name]
        assert len(pairs) == count, name
        assert summary["domains"][name]["count"] == count
        for image, label in pairs:
            assert label.is_file(), f"{image} has no label at {label}"
            assert read_image(image).shape[:2] == read_label(label).shape, image
    # Source images: GTA5's five-digit names from 00001; Cityscapes: 2:1 frames in 3 cities.
    assert layouts["source"][0][0].name == "00001.png"
    assert {p.parent.name for p, _ in layouts["cityscapes"]} == {"frankfurt", "lindau", "munster"}
    for image, _ in layouts["cityscapes"]:
        h, w = read_image(image).shape[:2]
        assert w == 2 * h
    assert {p.parts[-4] for p, _ in layouts["acdc"]} == set(ACDC_CONDITIONS)
    h, w = read_image(layouts["bdd100k"][0][0]).shape[:2]
    assert abs(w / h - 16 / 9) < 0.05
    aspects = {
        round(w / h, 2) for w, h in (read_label(lab).shape[::-1] for _, lab in layouts["mapillary"])
    }
    assert len(aspects) == 4
    assert (root.parent / "grid.png").is_file()


def test_world_json_is_last_and_its_checksums_match_the_files(world):
    root, summary = world
    world_file = root / "world.json"
    assert json.loads(world_file.read_text()) == json.loads(json.dumps(summary))
    on_disk = {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name not in ("world.json", ".demo_world")
    }
    listed = {f["path"]: f["sha256"] for f in summary["files"]}
    assert set(listed) == on_disk
    for path, digest in listed.items():
        assert hashlib.sha256((root / path).read_bytes()).hexdigest() == digest, path
    newest = max((root / p).stat().st_mtime_ns for p in on_disk)
    assert world_file.stat().st_mtime_ns >= newest


def test_a_smaller_render_removes_the_files_of_a_larger_one(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["source"]["count"] = 3
    render_world(cfg, tmp_path / "w", None, workers=1)
    assert (tmp_path / "w/gta/images/00003.png").is_file()
    cfg["source"]["count"] = 2
    render_world(cfg, tmp_path / "w", None, workers=1)
    assert not (tmp_path / "w/gta/images/00003.png").exists()
    assert not (tmp_path / "w/gta/labels/00003.png").exists()
    assert (tmp_path / "w/gta/images/00002.png").is_file()


def test_prior_never_holds_an_evaluation_image(world):
    root, summary = world
    digests = {f["path"]: f["sha256"] for f in summary["files"]}
    prior = {h for p, h in digests.items() if p.startswith("prior/images/")}
    evaluation = {h for p, h in digests.items() if not p.startswith(("prior/", "gta/"))}
    assert prior and evaluation and not prior & evaluation


# ---------------------------------------------------------------------------------------------
# Label spaces


def test_label_ids_are_in_each_formats_id_space(world):
    from PIL import Image

    root, _ = world
    layouts = _layouts(root)
    raw_ids = set(range(34)) | {IGNORE_INDEX}
    train_ids = set(range(NUM_CLASSES)) | {IGNORE_INDEX}
    seen: dict[str, set[int]] = {}
    for name, pairs in layouts.items():
        ids: set[int] = set()
        for _, label in pairs:
            ids |= set(np.unique(read_label(label)).tolist())
            mode = Image.open(label).mode
            assert mode == ("P" if name in ("source", "source_val", "mapillary") else "L"), label
        seen[name] = ids
    for name in ("source", "source_val", "cityscapes"):
        assert seen[name] <= raw_ids, name
    for name in ("bdd100k", "acdc", "dark_zurich", "prior"):
        assert seen[name] <= train_ids, name
    assert seen["mapillary"] <= set(range(66))
    # Raw ids, not train ids: road is 7, and unlabeled ids (mapped to 255) occur.
    assert {7, 8, 11, 23}.issubset(seen["source"])
    assert seen["source"] - set(CITYSCAPES_ID_TO_TRAIN_ID), "no unmapped ids in the source"
    assert seen["cityscapes"] - set(CITYSCAPES_ID_TO_TRAIN_ID), "no unmapped ids in Cityscapes"
    assert 1 in seen["cityscapes"], "the ego vehicle (id 1) is missing from Cityscapes"
    assert {13, 15, 27}.issubset(seen["mapillary"])
    assert seen["mapillary"] - set(MAPILLARY_ID_TO_TRAIN_ID), "no unmapped Mapillary ids"


def test_fine_classes_agree_with_the_dataset_id_maps():
    assert [c.name for c in FINE_CLASSES] == [f.name.lower().replace("_", " ") for f in F]
    for fine, cls in zip(F, FINE_CLASSES, strict=True):
        via_cs = CITYSCAPES_ID_TO_TRAIN_ID.get(cls.cityscapes_id, IGNORE_INDEX)
        via_mv = MAPILLARY_ID_TO_TRAIN_ID.get(cls.mapillary_id, IGNORE_INDEX)
        assert FINE_TO_TRAIN[fine] == via_cs
        if fine in MAPILLARY_DISAGREES:
            assert via_mv == IGNORE_INDEX and via_cs != IGNORE_INDEX, cls
        else:
            assert via_mv == via_cs, cls
    # Every train id is reachable from some fine class.
    assert set(FINE_TO_TRAIN[: len(F)].tolist()) == set(range(NUM_CLASSES)) | {IGNORE_INDEX}


# ---------------------------------------------------------------------------------------------
# Class statistics


def test_every_class_appears_in_the_source_and_in_at_least_two_images(world):
    root, _ = world
    images_with = np.zeros(NUM_CLASSES, int)
    for label in _source_train_ids(root):
        present = np.unique(label)
        images_with[present[present < NUM_CLASSES]] += 1
    missing = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if images_with[c] < 2]
    assert missing == []


def test_source_class_frequencies_are_long_tailed(world):
    root, summary = world
    pixels = np.zeros(NUM_CLASSES)
    for label in _source_train_ids(root):
        pixels += np.bincount(label.reshape(-1), minlength=256)[:NUM_CLASSES]
    assert np.array_equal(pixels, summary["domains"]["source"]["class_pixels"])
    share = pixels / pixels.sum()
    order = np.argsort(-share)
    assert share[order[:4]].sum() > 0.5
    assert {CLASS_NAMES[c] for c in order[:4]} <= {
        "road",
        "building",
        "sky",
        "vegetation",
        "sidewalk",
    }
    for name in ("train", "motorcycle", "rider", "bicycle"):
        c = CLASS_NAMES.index(name)
        assert 0 < share[c] < 0.01, (name, share[c])
    assert share[order[-1]] < share[order[0]] / 100


# ---------------------------------------------------------------------------------------------
# Prior captions and conditions


def test_prior_captions_name_the_classes_and_the_condition(world):
    root, _ = world
    with (root / "prior" / "captions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["condition"] for r in rows] == list(CONDITIONS)
    words = {"fog": "foggy", "rain": "rainy", "snow": "snowy", "night": "night"}
    for row in rows:
        label = read_label(root / "prior" / "labels" / f"{row['name']}_labelTrainIds.png")
        names = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if (label == c).any()]
        classes = " ".join(names)
        if row["condition"] == "standard":
            assert row["caption"] == classes
        else:
            assert row["caption"] == (
                f"A city street scene with {classes}, in {words[row['condition']]} weather."
            )


def test_night_is_dark_and_fog_lowers_contrast(world):
    root, _ = world
    layouts = _layouts(root)
    day = np.mean([read_image(p).mean() for p, _ in layouts["source_val"]])
    night = np.mean([read_image(p).mean() for p, _ in layouts["dark_zurich"]])
    assert night < 0.5 * day
    fog = [read_image(p) for p, _ in layouts["acdc"] if "/fog/" in str(p)]
    plain = [read_image(p) for p, _ in layouts["cityscapes"]]
    assert np.mean([f.std() for f in fog]) < np.mean([p.std() for p in plain])


# ---------------------------------------------------------------------------------------------
# Equations against plain references


def _camera() -> Camera:
    return Camera(width=40, height=30, focal=32.0, cx=19.0, horizon=12.5, height_m=1.7, x_m=0.8)


def test_projection_matches_the_pinhole_formula():
    rng = np.random.default_rng(0)
    cam = _camera()
    curve = 0.003
    canvas = Canvas(cam, curve)
    pts = np.column_stack([rng.uniform(-8, 8, 20), rng.uniform(0, 6, 20), rng.uniform(2, 60, 20)])
    got = canvas.project(pts)
    for (x, y, z), (u, v) in zip(pts, got, strict=True):
        u_ref = cam.cx + cam.focal * (x + curve * z * z - cam.x_m) / z
        v_ref = cam.horizon + cam.focal * (cam.height_m - y) / z
        assert u == pytest.approx(u_ref) and v == pytest.approx(v_ref)


def _flat_street(**changes) -> Street:
    street = sample_street(np.random.default_rng(1))
    from dataclasses import replace

    return replace(street, curve=0.0, **changes)


def test_ground_depth_is_the_distance_along_the_road():
    cam = _camera()
    gb = ground_buffers(cam, _flat_street())
    for row in range(cam.height):
        for col in range(0, cam.width, 7):
            v = row + 0.5
            if v - cam.horizon > 1e-3:
                z = cam.focal * cam.height_m / (v - cam.horizon)
                x = cam.x_m + (col + 0.5 - cam.cx) * z / cam.focal
                assert gb.depth[row, col] == pytest.approx(min(z, 5000.0), rel=1e-5)
                assert gb.ground_x[row, col] == pytest.approx(x, rel=1e-4, abs=1e-4)
            else:
                assert gb.fine[row, col] == F.SKY


def test_facade_depth_follows_its_plane():
    cam = _camera()
    canvas = Canvas(cam, 0.0)
    x0 = 6.0
    canvas.poly(
        np.array([(x0, 0, 4.0), (x0, 0, 40.0), (x0, 9, 40.0), (x0, 9, 4.0)]),
        F.BUILDING,
        10,
        0.5,
        1.0,
        x0,
    )
    gb = canvas.compose(ground_buffers(cam, _flat_street()))
    rows, cols = np.nonzero(gb.fine == F.BUILDING)
    assert len(rows) > 20
    for r, c in zip(rows, cols, strict=True):
        z = cam.focal * (x0 - cam.x_m) / (c + 0.5 - cam.cx)
        assert gb.depth[r, c] == pytest.approx(min(max(z, 4.0), 40.0), rel=1e-5)


def test_fog_follows_koschmieder():
    rng = np.random.default_rng(2)
    rgb = rng.random((5, 6, 3)).astype(np.float32)
    depth = rng.uniform(0, 200, (5, 6)).astype(np.float32)
    air = np.array([0.8, 0.81, 0.83], np.float32)
    got = _fog(rgb, depth, 0.03, air)
    for i in range(5):
        for j in range(6):
            t = np.exp(-0.03 * depth[i, j])
            for k in range(3):
                assert got[i, j, k] == pytest.approx(rgb[i, j, k] * t + air[k] * (1 - t), rel=1e-5)


def test_a_required_class_is_always_visible():
    def camera(rng):
        from flexseg.data.demo.street import CameraSpec

        return CameraSpec(focal=40.0, horizon=14.0, height_m=1.8)

    for c in (16, 17, 12, 18):
        render = render_scene((7, 1, c), 64, 32, camera, require=c)
        assert (FINE_TO_TRAIN[render.gbuffer.fine] == c).sum() >= 6


# ---------------------------------------------------------------------------------------------
# Bad input and the command line


def test_bad_configs_raise_errors_naming_the_key(tmp_path):
    bad = copy.deepcopy(TINY)
    bad["source"]["cuont"] = 3
    with pytest.raises(ConfigError, match="cuont"):
        validate_demo(bad)
    bad = copy.deepcopy(TINY)
    bad["targets"]["acdc"]["count"] = 3
    with pytest.raises(ConfigError, match="acdc"):
        validate_demo(bad)
    bad = copy.deepcopy(TINY)
    del bad["prior"]
    with pytest.raises(ConfigError, match="prior"):
        render_world(bad, tmp_path / "x")
    with pytest.raises(ValueError, match="require"):
        render_scene((0,), 32, 32, lambda rng: None, require=19)


def test_a_foreign_folder_is_not_overwritten(tmp_path):
    foreign = tmp_path / "data"
    (foreign / "gta").mkdir(parents=True)
    (foreign / "gta" / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="refusing"):
        render_world(copy.deepcopy(TINY), foreign)
    assert (foreign / "gta" / "mine.txt").read_text() == "keep"


def test_command_line_help_and_error_exit(tmp_path):
    cmd = [sys.executable, "-m", "flexseg.data.demo"]
    ok = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "--params" in ok.stdout
    params = json.dumps({"demo": {**TINY, "seed": "zero"}})
    bad = subprocess.run(
        [*cmd, "--params", params, "--out", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "demo.seed" in bad.stderr


FORK_AFTER_OPENCV = """
import multiprocessing, sys
import cv2, numpy as np
from flexseg.io import opencv_single_threaded

def init():
    cv2.setNumThreads(1)

def work(i):
    return int(cv2.resize(np.full((400, 400), i, np.uint8), (40, 40))[0, 0])

cv2.setNumThreads(2)
image = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
for _ in range(3):
    cv2.GaussianBlur(image, (31, 31), 5)  # starts OpenCV's thread pool
with opencv_single_threaded():
    assert cv2.getNumThreads() == 1
    with multiprocessing.get_context("fork").Pool(2, initializer=init) as pool:
        print(sorted(pool.imap_unordered(work, range(4))))
print(cv2.getNumThreads())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is the Linux start method")
def test_workers_forked_after_opencv_threads_do_not_hang() -> None:
    # Without opencv_single_threaded the children wait forever in cv2.setNumThreads (measured).
    done = subprocess.run(
        [sys.executable, "-c", FORK_AFTER_OPENCV],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split("\n")[:2] == ["[0, 1, 2, 3]", "2"]
