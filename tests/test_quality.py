"""The generated-set quality report: scores of given predictions against plain references, the
feeding of generated images, and the score / report commands on a tiny set with a checkpoint."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from flexseg.config import ConfigError, load_config, quality_run, stage_params
from flexseg.evaluate import Sample
from flexseg.inference import IMAGENET_MEAN, IMAGENET_STD
from flexseg.io import DataError, write_image, write_label
from flexseg.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE, colorize
from flexseg.metrics import mean_iou
from flexseg.quality import (
    ALL,
    QualitySettings,
    checked_source_only,
    feed_settings,
    main,
    quality_table,
    score_predictions,
    score_samples,
)

CONDITIONS = ("standard", "fog", "night")


def blocks(rng: np.random.Generator, h: int = 24, w: int = 32, classes: int = 5) -> np.ndarray:
    """A label of a few random rectangles over a background, with a void strip."""
    label = np.full((h, w), rng.integers(classes), dtype=np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        label[y : y + rng.integers(3, h // 2), x : x + rng.integers(3, w // 2)] = rng.integers(
            classes
        )
    label[:, :2] = IGNORE_INDEX
    return label


def table_rows(table, scope):
    return table[table["scope"] == scope].set_index("name")


# --------------------------------------------------------------------------------------------
# Scores of given predictions.


def test_perfect_predictions_score_100_everywhere():
    rng = np.random.default_rng(0)
    labels = [blocks(rng) for _ in range(6)]
    items = [(CONDITIONS[i % 3], lab, lab) for i, lab in enumerate(labels)]
    table = quality_table(score_predictions(items, kernel=3))
    groups = table[table["scope"] != "class"]
    assert list(groups["name"]) == [ALL, "standard", "fog", "night"]
    assert list(groups["images"]) == [6, 2, 2, 2]
    for col in (
        "miou",
        "boundary_miou",
        "interior_miou",
        "boundary_agreement",
        "interior_agreement",
    ):
        assert (groups[col] == 100.0).all(), col
    classes = table_rows(table, "class")
    present = {int(c) for lab in labels for c in np.unique(lab) if c != IGNORE_INDEX}
    for c, name in enumerate(CLASS_NAMES):
        assert (classes.loc[name, "miou"] == 100.0) == (c in present)
        assert math.isnan(classes.loc[name, "miou"]) == (c not in present)
    assert groups["boundary_pixels"].iloc[0] > 0 and groups["interior_pixels"].iloc[0] > 0


def test_a_shuffled_pairing_scores_near_chance():
    """Predictions of other images: the mIoU of independent labels with these class shares."""
    rng = np.random.default_rng(1)
    labels = [blocks(rng, 48, 48) for _ in range(80)]
    shuffled = labels[1:] + labels[:1]  # every image paired with another one's label
    groups = score_predictions([("", p, g) for p, g in zip(shuffled, labels, strict=True)], 5)
    miou = quality_table(groups).iloc[0]["miou"]
    stack = np.stack(labels)
    valid = stack != IGNORE_INDEX
    share = np.bincount(stack[valid], minlength=NUM_CLASSES) / valid.sum()
    # Independence: a fraction share_c * share_d of the valid pixels falls in cell (c, d).
    chance = mean_iou(np.outer(share, share) * valid.sum())
    assert miou == pytest.approx(chance, abs=3.0)
    assert miou < 30.0


def plain_band(label: np.ndarray, k: int) -> np.ndarray:
    """Eq. 1 pixel by pixel: a valid pixel whose k x k window holds a valid other class."""
    h, w = label.shape
    r = k // 2
    out = np.zeros_like(label, dtype=bool)
    for y in range(h):
        for x in range(w):
            if label[y, x] == IGNORE_INDEX:
                continue
            win = label[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1]
            out[y, x] = bool(((win != IGNORE_INDEX) & (win != label[y, x])).any())
    return out


def plain_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    ious = []
    for c in range(NUM_CLASSES):
        tp = np.sum((pred == c) & (gt == c))
        union = np.sum((pred == c) | (gt == c))
        if union:
            ious.append(tp / union)
    return 100.0 * float(np.mean(ious))


def test_the_boundary_interior_split_matches_a_plain_reference():
    rng = np.random.default_rng(2)
    labels = [blocks(rng, 12, 16, classes=4) for _ in range(4)]
    preds = [
        np.where(rng.random(lab.shape) < 0.3, rng.integers(0, 4, lab.shape), lab) for lab in labels
    ]
    preds = [p.astype(np.uint8) for p in preds]
    conds = ["fog", "fog", "night", "night"]
    table = quality_table(score_predictions(zip(conds, preds, labels, strict=True), kernel=3))
    groups = table.set_index("name")
    for name, idx in ((ALL, [0, 1, 2, 3]), ("fog", [0, 1]), ("night", [2, 3])):
        gt = np.concatenate([labels[i].ravel() for i in idx])
        pr = np.concatenate([preds[i].ravel() for i in idx])
        band = np.concatenate([plain_band(labels[i], 3).ravel() for i in idx])
        valid = gt != IGNORE_INDEX
        inner = valid & ~band
        row = groups.loc[name]
        assert row["boundary_agreement"] == pytest.approx(
            100 * np.mean(pr[band] == gt[band]), abs=0.01
        )
        assert row["interior_agreement"] == pytest.approx(
            100 * np.mean(pr[inner] == gt[inner]), abs=0.01
        )
        assert row["boundary_pixels"] == band.sum() and row["interior_pixels"] == inner.sum()
        assert row["miou"] == pytest.approx(plain_iou(pr[valid], gt[valid]), abs=0.01)
        assert row["boundary_miou"] == pytest.approx(plain_iou(pr[band], gt[band]), abs=0.01)
        assert row["interior_miou"] == pytest.approx(plain_iou(pr[inner], gt[inner]), abs=0.01)
    gt = np.concatenate([lab.ravel() for lab in labels])
    pr = np.concatenate([p.ravel() for p in preds])
    band = np.concatenate([plain_band(lab, 3).ravel() for lab in labels])
    for c in range(4):
        row = groups.loc[CLASS_NAMES[c]]
        in_band = band & (gt == c)
        inside = ~band & (gt == c)
        assert row["boundary_agreement"] == pytest.approx(100 * np.mean(pr[in_band] == c), abs=0.01)
        assert row["interior_agreement"] == pytest.approx(100 * np.mean(pr[inside] == c), abs=0.01)


def test_the_reference_fills_the_source_columns_and_the_ratio():
    rng = np.random.default_rng(3)
    lab = blocks(rng)
    pred = np.where(lab == 0, 1, lab).astype(np.uint8)
    reference = {
        "miou": 80.0,
        "boundary_error": 30.0,
        "interior_error": 5.0,
        "per_class": {name: (40.0 if i == 1 else None) for i, name in enumerate(CLASS_NAMES)},
    }
    table = quality_table(score_predictions([("fog", pred, lab)], 3), reference)
    for name in (ALL, "fog"):
        row = table.set_index("name").loc[name]
        assert (row["source_miou"], row["source_boundary_agreement"]) == (80.0, 70.0)
        assert row["source_interior_agreement"] == 95.0
        assert row["miou_ratio"] == pytest.approx(row["miou"] / 80.0, abs=0.01)
    classes = table_rows(table, "class")
    assert classes.loc[CLASS_NAMES[1], "source_miou"] == 40.0
    assert math.isnan(classes.loc[CLASS_NAMES[2], "source_miou"])


# --------------------------------------------------------------------------------------------
# Feeding generated images to a segmenter.


class PaletteOracle:
    """A perfect segmenter of images drawn in the label palette: decodes each pixel's colour."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(images.shape[2:]))
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        rgb = images * std + mean
        palette = torch.from_numpy(PALETTE.astype(np.float32))
        dist = ((rgb[:, :, None] - palette.T[None, :, :, None, None]) ** 2).sum(1)
        return -dist


def palette_samples(rng: np.random.Generator, n: int, side: int = 32) -> list[Sample]:
    out = []
    for i in range(n):
        label = blocks(rng, side, side)
        label[:, :2] = 5  # no void: the oracle cannot draw black void as its own class
        out.append(Sample(f"{i:06d}", colorize(label), label, CONDITIONS[i % 3]))
    return out


def test_a_perfect_segmenter_scores_100_through_the_feeding():
    rng = np.random.default_rng(4)
    samples = palette_samples(rng, 5)
    oracle = PaletteOracle()
    settings = QualitySettings(panels=2, boundary_kernel=5, tf32=False)
    result = score_samples(oracle, iter(samples), 5, settings, None, torch.device("cpu"))
    table = quality_table(result.groups)
    assert (table[table["scope"] != "class"]["miou"] == 100.0).all()
    assert oracle.sizes == [(32, 32)] * 5  # whole images, as they are
    assert [t.name for t in result.panels] == ["000000", "000004"]
    assert result.panel_conditions == ["standard", "fog"]


def test_generated_images_are_fed_whole_at_the_training_size():
    s = feed_settings(32, 32, None)
    assert (s.mode, s.scale) == ("whole", (32, 32))
    assert feed_settings(512, 512, [1024, 1024]).scale == (1024, 1024)
    rng = np.random.default_rng(5)
    oracle = PaletteOracle()
    settings = QualitySettings(panels=0, boundary_kernel=5, tf32=False)
    result = score_samples(oracle, iter(palette_samples(rng, 2)), 2, settings, [64, 64], "cpu")
    assert oracle.sizes == [(64, 64)] * 2  # the keep-ratio resize into generated_resize
    assert result.groups[ALL].confusion.sum() == 2 * 32 * 32  # scored at the label size


def test_only_a_source_only_checkpoint_scores():
    class Meta:
        experiment = "flexseg"
        params = {"experiment": {"data": "combined"}, "training": {"generated_resize": None}}

    with pytest.raises(DataError, match="combined"):
        checked_source_only(Meta(), "x/model.pt")
    Meta.params = {"experiment": {"data": "source"}, "training": {"generated_resize": [64, 64]}}
    assert checked_source_only(Meta(), "x/model.pt") == [64, 64]


# --------------------------------------------------------------------------------------------
# Config: the stage's slice and the run it uses.


def test_the_slice_holds_only_what_the_stage_uses():
    config = load_config()
    base = stage_params(config, "quality")
    assert base == {"panels": 4, "boundary_kernel": 5, "tf32": False}
    changes = (("stride", 8), ("window", 64), ("mode", "whole"), ("panels", 9), ("device", "cpu"))
    for key, value in changes:
        changed = load_config(overrides={"evaluation": {key: value}})
        assert stage_params(changed, "quality") == base, key
    kernel = load_config(overrides={"evaluation": {"boundary_kernel": 3}})
    assert stage_params(kernel, "quality")["boundary_kernel"] == 3
    tf32 = load_config(overrides={"evaluation": {"tf32": True}})
    assert stage_params(tf32, "quality")["tf32"] is True  # it predicts as the evaluation does
    assert quality_run(config) == ("source_only", "tiny", 0)
    other = load_config(overrides={"quality": {"seed": 2}, "run": {"seeds": [1, 2]}})
    assert quality_run(other) == ("source_only", "tiny", 2)
    assert quality_run(load_config(overrides={"quality": {"checkpoint": "m.pt"}})) is None


@pytest.mark.parametrize(
    "override, key",
    [
        ({"experiment": "flexseg"}, "quality.experiment"),
        ({"experiment": "nonesuch"}, "quality.experiment"),
        ({"model": "nonesuch"}, "quality.model"),
        ({"panel": 3}, "panel"),
    ],
)
def test_bad_quality_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(overrides={"quality": override})


@pytest.mark.parametrize(
    "override, message",
    [
        ({"held_out": "nonesuch"}, "held_out 'nonesuch' is not in evaluation.datasets"),
        ({"held_out": "cityscapes", "evaluation": {"datasets": ["acdc"]}}, "held_out 'cityscapes'"),
    ],
)
def test_a_held_out_set_outside_the_evaluation_is_an_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=override)


# --------------------------------------------------------------------------------------------
# The commands on a tiny generated set with a tiny checkpoint.


def write_generated_set(root, rng, n=6, side=32):
    rows = []
    for i in range(n):
        name = f"{i:06d}"
        label = blocks(rng, side, side)
        write_image(root / "images" / f"{name}.png", colorize(label))
        write_label(root / "labels" / f"{name}_labelTrainIds.png", label)
        rows.append({"name": name, "image": f"images/{name}.png", "condition": CONDITIONS[i % 3]})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["name", "image", "condition"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def test_score_and_report_commands_end_to_end(tmp_path):
    from train_fixtures import TINY_MODEL, train_params

    from flexseg.checkpoint import load_model, save_model
    from flexseg.data.readers import list_samples, load_sample
    from flexseg.inference import predict_image
    from flexseg.models import build_model

    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    params = train_params("source_only")
    save_model(ckpt, build_model(TINY_MODEL), TINY_MODEL, "source_only", 0, params, "test", 2)
    manifest = write_generated_set(tmp_path / "gen", np.random.default_rng(6))
    slice_ = json.dumps({"panels": 2, "boundary_kernel": 5, "tf32": False})
    out = tmp_path / "quality"
    args = ["--params", slice_, "--manifest", str(manifest), "--checkpoint", str(ckpt)]
    files = ["--scores", str(out / "scores.json"), "--panels", str(out / "panels.npz")]
    assert main(["score", *args, *files, "--threads", "1", "--device", "cpu"]) == 0
    record = json.loads((out / "scores.json").read_text())
    assert (record["experiment"], record["model"], record["seed"]) == (
        "source_only",
        "tiny_test",
        0,
    )
    assert record["num_images"] == 6 and set(record["groups"]) == {ALL, *CONDITIONS}

    # The command's overall mIoU is the one of the model's own predictions, fed whole.
    model, _ = load_model(ckpt)
    refs = list_samples({"name": "g", "format": "generated", "root": str(manifest.parent)})
    items = []
    for ref in refs:
        rgb, label = load_sample(ref)
        pred = predict_image(model, rgb, label.shape, feed_settings(32, 32, None)).labels
        items.append((ref.condition, pred, label))
    expected = quality_table(score_predictions(items, 5))

    reference = {
        "experiment": "source_only",
        "model": "tiny_test",
        "seed": 0,
        "dataset": "source_val",
        "miou": 50.0,
        "boundary_error": 40.0,
        "interior_error": 20.0,
        "per_class": {},
        "settings": {"boundary_kernel": 5},
    }
    (tmp_path / "ref.json").write_text(json.dumps(reference))
    report = [
        "report", "--scores", str(out / "scores.json"), "--panels", str(out / "panels.npz"),
        "--reference", str(tmp_path / "ref.json"),
        "--out-csv", str(tmp_path / "quality.csv"), "--figure", str(tmp_path / "quality.png"),
    ]  # fmt: skip
    assert main(report) == 0
    with open(tmp_path / "quality.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows[:4]] == [ALL, "standard", "fog", "night"]
    assert len(rows) == 4 + NUM_CLASSES
    assert float(rows[0]["miou"]) == pytest.approx(expected.iloc[0]["miou"], abs=0.01)
    assert float(rows[0]["source_miou"]) == 50.0
    assert float(rows[0]["miou_ratio"]) == pytest.approx(float(rows[0]["miou"]) / 50, abs=0.01)
    assert (tmp_path / "quality.png").stat().st_size > 0

    reference["settings"]["boundary_kernel"] = 3
    (tmp_path / "ref.json").write_text(json.dumps(reference))
    assert main(report) == 1  # a reference with another Eq. 1 kernel is refused
    reference["settings"]["boundary_kernel"], reference["seed"] = 5, 1
    (tmp_path / "ref.json").write_text(json.dumps(reference))
    assert main(report) == 1  # so is another run's
