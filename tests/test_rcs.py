"""Rare-class sampling: statistics, probabilities (T = 0.01), the subset and crop selection."""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from flexseg.data import rcs
from flexseg.data.lists import read_data_list
from flexseg.data.readers import SampleRef
from flexseg.io import DataError, write_image, write_label

torch.set_num_threads(1)

CS_TO_TRAIN = {7: 0, 8: 1, 11: 2, 26: 13, 33: 18}


def write_gta(root: Path, raws: list[np.ndarray]) -> None:
    for i, raw in enumerate(raws):
        h, w = raw.shape
        write_image(root / "images" / f"{i:05d}.png", np.full((h, w, 3), i, np.uint8))
        write_label(root / "labels" / f"{i:05d}.png", raw)


def random_raws(n: int, seed: int = 0, shape=(12, 20)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = [*CS_TO_TRAIN, 0, 4]
    return [
        rng.choice(ids, size=shape, p=[0.4, 0.2, 0.2, 0.05, 0.05, 0.05, 0.05]).astype(np.uint8)
        for _ in range(n)
    ]


def make_stats(pixels: list[list[int]]) -> rcs.ClassStats:
    """Made-up statistics: ``pixels[i]`` lists image i's counts of classes 0, 1, 2, ..."""
    table = np.zeros((len(pixels), 19), np.int64)
    for i, row in enumerate(pixels):
        table[i, : len(row)] = row
    refs = tuple(
        SampleRef(f"{i:03d}", Path(f"i/{i}.png"), Path(f"l/{i}.png"), "train_ids")
        for i in range(len(pixels))
    )
    return rcs.ClassStats(
        dataset="made-up",
        refs=refs,
        pixels=table,
        ignore=np.zeros(len(pixels), np.int64),
        sizes=np.tile([10, 10], (len(pixels), 1)),
        unmapped={},
    )


# ---------------------------------------------------------------------------------------------
# Probabilities


def reference_probabilities(totals: list[int], t: float) -> list[float]:
    total = sum(totals)
    present = [c for c, n in enumerate(totals) if n > 0]
    weights = {c: math.exp((1 - totals[c] / total) / t) for c in present}
    norm = sum(weights.values())
    return [weights[c] / norm if c in weights else 0.0 for c in range(len(totals))]


@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0])
def test_class_probabilities_match_the_formula(temperature):
    rng = np.random.default_rng(1)
    totals = rng.integers(0, 5000, size=19)
    totals[[3, 16]] = 0
    totals[0] = 300_000
    probs = rcs.class_probabilities(totals, temperature)
    np.testing.assert_allclose(
        probs, reference_probabilities(totals.tolist(), temperature), rtol=1e-9, atol=1e-300
    )
    assert probs[3] == 0 and probs[16] == 0
    assert math.isclose(probs.sum(), 1.0)


def test_t001_favours_rare_classes():
    totals = [700, 200, 60, 30, 10]
    probs = rcs.class_probabilities(totals, 0.01)
    assert list(np.argsort(-probs)) == [4, 3, 2, 1, 0]
    # f = 0.7 vs 0.01: a weight ratio of exp(-69), as the softmax says.
    assert math.isclose(probs[0] / probs[4], math.exp(-(0.7 - 0.01) / 0.01), rel_tol=1e-9)


def test_class_probabilities_reject_bad_input():
    with pytest.raises(ValueError, match="all zero"):
        rcs.class_probabilities([0, 0], 0.01)
    with pytest.raises(ValueError, match="negative"):
        rcs.class_probabilities([5, -1], 0.01)
    with pytest.raises(ValueError, match="temperature"):
        rcs.class_probabilities([5, 1], 0.0)


# ---------------------------------------------------------------------------------------------
# Subset


def test_subset_rules():
    rng = np.random.default_rng(3)
    stats = make_stats(rng.integers(0, 400, size=(40, 6)).tolist())
    picks = rcs.rare_class_subset(stats, size=25, min_pixels=150, temperature=0.01, seed=7)
    assert len(picks) == 25
    assert len({p.index for p in picks}) == 25
    for p in picks:
        assert stats.pixels[p.index, p.rcs_class] > 150
    again = rcs.rare_class_subset(stats, size=25, min_pixels=150, temperature=0.01, seed=7)
    assert again == picks
    other = rcs.rare_class_subset(stats, size=25, min_pixels=150, temperature=0.01, seed=8)
    assert other != picks


def test_subset_larger_than_the_eligible_images_is_an_error():
    stats = make_stats([[500, 0], [0, 500], [10, 10], [100, 0]])
    with pytest.raises(DataError, match="subset_size is 3, but only 2 images"):
        rcs.rare_class_subset(stats, size=3, min_pixels=100, temperature=0.01, seed=0)
    picks = rcs.rare_class_subset(stats, size=2, min_pixels=100, temperature=0.01, seed=0)
    assert sorted(p.index for p in picks) == [0, 1]


def test_class_without_candidates_is_dropped_with_a_warning(caplog):
    stats = make_stats([[500, 0, 20], [400, 300, 30]])
    with caplog.at_level(logging.WARNING, logger="flexseg.data.rcs"):
        picks = rcs.rare_class_subset(stats, size=2, min_pixels=100, temperature=0.01, seed=0)
    assert "building" in caplog.text
    assert all(p.rcs_class in (0, 1) for p in picks)


def rejection_reference(
    pixels: list[list[int]], size: int, min_pixels: int, t: float, rnd: random.Random
) -> list[tuple[int, int]]:
    """SegModel's loop: draw a class by P, a candidate uniformly, reject repeats."""
    totals = [sum(row[c] for row in pixels) for c in range(len(pixels[0]))]
    probs = reference_probabilities(totals, t)
    cands = [[i for i, row in enumerate(pixels) if row[c] > min_pixels] for c in range(len(totals))]
    classes = [c for c in range(len(totals)) if cands[c] and probs[c] > 0]
    weights = [probs[c] for c in classes]
    chosen: list[tuple[int, int]] = []
    while len(chosen) < size:
        c = rnd.choices(classes, weights)[0]
        i = rnd.choice(cands[c])
        if i not in [k for k, _ in chosen]:
            chosen.append((i, c))
    return chosen


def test_subset_draws_have_the_reject_loop_distribution():
    # Class 0 is in all six images, class 1 in the last two; at T = 10 both are about equally
    # likely, so a second pick of class 1 is rejected half the time once one of its images is
    # taken: the class sequences then differ by about 0.065 from a sampler that ignores that.
    pixels = [[9, 0], [9, 0], [9, 0], [9, 0], [9, 9], [9, 9]]
    stats = make_stats(pixels)
    trials = 3000
    ours: dict[tuple, int] = {}
    ref: dict[tuple, int] = {}
    rnd = random.Random(0)
    for seed in range(trials):
        got = rcs.rare_class_subset(stats, size=2, min_pixels=5, temperature=10.0, seed=seed)
        assert len({p.index for p in got}) == 2
        key = tuple(p.rcs_class for p in got)
        ours[key] = ours.get(key, 0) + 1
        key = tuple(c for _, c in rejection_reference(pixels, 2, 5, 10.0, rnd))
        ref[key] = ref.get(key, 0) + 1
    assert set(ours) == set(ref) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for key in ref:
        assert abs(ours[key] - ref[key]) / trials < 0.035, (key, ours, ref)


# ---------------------------------------------------------------------------------------------
# Crops


def crop_count(label, cls, box) -> int:
    n = 0
    for y in range(box.y0, min(box.y1, label.shape[0])):
        for x in range(box.x0, min(box.x1, label.shape[1])):
            n += int(label[y, x] == cls)
    return n


def test_crop_holds_its_class_and_stays_inside():
    rng = np.random.default_rng(0)
    label = rng.choice([0, 1, 2, 255], size=(40, 64), p=[0.7, 0.2, 0.09, 0.01]).astype(np.uint8)
    for seed in range(20):
        box = rcs.select_crop(label, 2, 16, 0.02, 10, np.random.default_rng(seed))
        assert 0 <= box.x0 and box.x1 <= 64 and 0 <= box.y0 and box.y1 <= 40
        assert (box.x1 - box.x0, box.y1 - box.y0) == (16, 16)
        assert box.class_pixels == crop_count(label, 2, box) > 0
        assert box.accepted == (box.class_pixels > 0.02 * 256)


def test_crop_keeps_the_last_try_when_none_passes():
    label = np.zeros((30, 30), np.uint8)
    label[0, 0] = 5
    box = rcs.select_crop(label, 5, 8, 0.5, 3, np.random.default_rng(0))
    assert not box.accepted and box.class_pixels == 1
    assert (box.x0, box.y0, box.x1, box.y1) == (0, 0, 8, 8)


def test_crop_can_centre_on_the_last_pixel():
    # Two class pixels at opposite corners: both must be drawn as centres (DGInStyle's draw left
    # out the last one).
    label = np.zeros((40, 40), np.uint8)
    label[0, 0] = label[39, 39] = 7
    corners = set()
    for seed in range(30):
        box = rcs.select_crop(label, 7, 10, 0.9, 1, np.random.default_rng(seed))
        corners.add((box.x0, box.y0))
    assert corners == {(0, 0), (30, 30)}


def test_crop_single_pixel_absent_class_and_small_image():
    label = np.zeros((6, 9), np.uint8)
    label[5, 8] = 3
    box = rcs.select_crop(label, 3, 16, 0.0, 10, np.random.default_rng(0))
    assert (box.x0, box.y0, box.x1, box.y1) == (0, 0, 16, 16)
    assert box.class_pixels == 1 and box.accepted
    absent = rcs.select_crop(label, 12, 4, 0.01, 10, np.random.default_rng(0))
    assert not absent.accepted and absent.class_pixels == 0
    assert 0 <= absent.x0 <= 5 and 0 <= absent.y0 <= 2


# ---------------------------------------------------------------------------------------------
# Statistics and the commands


def test_class_stats_count_every_pixel(tmp_path):
    raws = random_raws(5)
    write_gta(tmp_path / "gta", raws)
    entry = {"name": "gta", "format": "gta", "root": str(tmp_path / "gta")}
    stats = rcs.compute_class_stats(entry, workers=2)
    for i, raw in enumerate(raws):
        ref = [0] * 19
        ignore = 0
        for v in raw.reshape(-1):
            if int(v) in CS_TO_TRAIN:
                ref[CS_TO_TRAIN[int(v)]] += 1
            else:
                ignore += 1
        assert stats.pixels[i].tolist() == ref
        assert stats.ignore[i] == ignore
    assert stats.sizes.tolist() == [[12, 20]] * 5
    path = tmp_path / "stats.json"
    rcs.write_class_stats(path, stats)
    back = rcs.read_class_stats(path)
    np.testing.assert_array_equal(back.pixels, stats.pixels)
    assert back.refs == stats.refs
    assert json.loads(path.read_text())["id_maps"]["cityscapes_ids"]["26"] == 13


def test_stats_file_checks(tmp_path):
    write_gta(tmp_path / "gta", random_raws(2))
    stats = rcs.compute_class_stats({"format": "gta", "root": str(tmp_path / "gta")}, workers=1)
    path = tmp_path / "stats.json"
    rcs.write_class_stats(path, stats)
    data = json.loads(path.read_text())
    data["totals"][0] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="totals do not equal"):
        rcs.read_class_stats(path)
    data["totals"][0] -= 1
    data["id_maps"]["cityscapes_ids"]["26"] = 14
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="id maps differ"):
        rcs.read_class_stats(path)
    path.write_text("{")
    with pytest.raises(DataError, match="not a class statistics file"):
        rcs.read_class_stats(path)


def test_size_mismatch_stops_the_statistics_until_excluded(tmp_path):
    root = tmp_path / "gta"
    write_gta(root, random_raws(3))
    write_image(root / "images" / "00001.png", np.zeros((13, 20, 3), np.uint8))
    entry = {"format": "gta", "root": str(root)}
    with pytest.raises(DataError, match=r"00001 \(image 20x13, label 20x12\).*exclude"):
        rcs.compute_class_stats(entry, workers=1)
    stats = rcs.compute_class_stats({**entry, "exclude": ["00001"]}, workers=1)
    assert [r.name for r in stats.refs] == ["00000", "00002"]


def test_commands_end_to_end(tmp_path, capsys):
    root = tmp_path / "gta"
    write_gta(root, random_raws(12, seed=4))
    stats_path = tmp_path / "rcs" / "class_stats.json"
    params = {"source": {"name": "gta", "format": "gta", "root": str(root)}}
    assert rcs.main(["stats", "--params", json.dumps(params), "--out", str(stats_path)]) == 0
    sub = {"rcs": {"temperature": 0.01, "min_pixels": 5, "subset_size": 8, "seed": 0}}
    out = tmp_path / "rcs" / "subset.csv"
    argv = ["subset", "--params", json.dumps(sub), "--stats", str(stats_path), "--out", str(out)]
    assert rcs.main(argv) == 0
    first = out.read_bytes()
    entries = read_data_list(out)
    assert len(entries) == 8 and len({e.name for e in entries}) == 8
    assert all(e.part == "source" and e.rcs_class in (0, 1, 2, 13, 18) for e in entries)
    stats = rcs.read_class_stats(stats_path)
    by_name = {r.name: i for i, r in enumerate(stats.refs)}
    assert all(stats.pixels[by_name[e.name], e.rcs_class] > 5 for e in entries)
    assert rcs.main(argv) == 0 and out.read_bytes() == first
    assert "RCS subset: 8 of 12 images" in capsys.readouterr().out
    sub["rcs"]["subset_size"] = 50
    assert (
        rcs.main(
            ["subset", "--params", json.dumps(sub), "--stats", str(stats_path), "--out", str(out)]
        )
        == 1
    )
    assert "subset_size is 50" in capsys.readouterr().err
    assert rcs.main(["stats", "--params", "{}", "--out", str(stats_path)]) == 1
    assert "'source' is a required property" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Online RCS (DAFormer's rare_class_sampling over the whole source)


def test_online_table_against_a_plain_reference(caplog):
    # Class 3 has pixels but no image above min_pixels: dropped, the rest renormalized.
    pixels = [[50, 9, 0, 2], [50, 0, 7, 0], [40, 8, 0, 0], [60, 0, 0, 1]]
    stats = make_stats(pixels)
    with caplog.at_level(logging.WARNING):
        table = rcs.online_table(stats, min_pixels=5, temperature=0.1)
    assert "online RCS" in caplog.text and "wall" in caplog.text  # class 3 = wall
    totals = [sum(col) for col in zip(*pixels, strict=True)]
    ref = reference_probabilities(totals, 0.1)
    ref[3] = 0.0
    norm = sum(ref)
    assert [c["class"] for c in table["classes"]] == [0, 1, 2]
    for c in table["classes"]:
        assert c["probability"] == pytest.approx(ref[c["class"]] / norm, rel=1e-12)
        expected = [f"{i:03d}" for i, row in enumerate(pixels) if row[c["class"]] > 5]
        assert c["images"] == expected
    assert table["temperature"] == 0.1 and table["min_pixels"] == 5


def write_table(tmp_path, pixels, min_pixels=5, temperature=1.0):
    stats = make_stats(pixels)
    stats_path = tmp_path / "stats.json"
    rcs.write_class_stats(stats_path, stats)
    out = tmp_path / "online.json"
    params = {"rcs": {"temperature": temperature, "min_pixels": min_pixels}}
    argv = ["online", "--params", json.dumps(params), "--stats", str(stats_path)]
    assert rcs.main([*argv, "--out", str(out)]) == 0
    return out, [r.name for r in stats.refs]


def test_online_draws_follow_p_c_then_a_uniform_candidate(tmp_path):
    pixels = [[50, 9, 0], [50, 0, 7], [40, 8, 0], [60, 0, 0]]
    path, names = write_table(tmp_path, pixels, temperature=0.5)
    # the list holds the source rows in another order, and generated rows
    order = ["gen_a", *reversed(names), "gen_b"]
    parts = ["generated", *["source"] * len(names), "generated"]
    online = rcs.OnlineRcs.read(path, order, parts)
    table = json.loads(path.read_text())
    probs = {c["class"]: c["probability"] for c in table["classes"]}
    rng = np.random.default_rng(0)
    draws = [online.draw(rng) for _ in range(20000)]
    for c, p in probs.items():
        picks = [d for d in draws if d.rcs_class == c]
        assert abs(len(picks) / len(draws) - p) < 0.015, c
        rows = {
            order.index(n) for n in next(x["images"] for x in table["classes"] if x["class"] == c)
        }
        assert {d.index for d in picks} == rows
        # uniform over the class's candidates
        counts = [sum(d.index == r for d in picks) for r in rows]
        assert max(counts) - min(counts) < 0.15 * len(picks)


def test_online_table_must_fit_the_data_list(tmp_path):
    path, names = write_table(tmp_path, [[50, 9], [50, 0]])
    with pytest.raises(DataError, match="not source rows of the data list"):
        rcs.OnlineRcs.read(path, names[:1], ["source"])
    with pytest.raises(DataError, match="not source rows"):
        rcs.OnlineRcs.read(path, names, ["source", "generated"])
    path.write_text('{"classes": []}')
    with pytest.raises(DataError, match="not an online RCS table"):
        rcs.OnlineRcs.read(path, names, ["source", "source"])
    with pytest.raises(DataError, match="not found"):
        rcs.OnlineRcs.read(tmp_path / "none.json", names, ["source", "source"])
