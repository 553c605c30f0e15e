"""Generation jobs and prompts: apportioning, crops, prompts, seeds, byte-for-byte determinism."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flexseg.config import ConfigError
from flexseg.data import rcs
from flexseg.io import DataError, write_image, write_label
from flexseg.prompts import PromptChoice, class_list, dginstyle_choices, make_prompt, render_prompt
from generation import jobs

torch.set_num_threads(1)

WORDS = {"fog": "foggy", "rain": "rainy", "snow": "snowy", "night": "night"}
TEMPLATE = "A city street scene with {classes}, in {condition} weather."
NAMES = {0: "road", 2: "building", 5: "pole", 6: "traffic light", 13: "car", 18: "bicycle"}
RAW = {0: 7, 2: 11, 5: 17, 6: 19, 13: 26, 18: 33}  # train id -> Cityscapes label id


# ---------------------------------------------------------------------------------------------
# Prompts


def test_class_list_in_train_id_order_void_excluded():
    crop = np.array([[13, 13, 255], [6, 0, 0], [18, 255, 0]], np.uint8)
    assert class_list(crop) == "road traffic light car bicycle"
    assert class_list(np.full((2, 2), 255, np.uint8)) == ""
    single = np.zeros((4, 4), np.uint8)
    single[3, 3] = 5
    assert class_list(single) == "road pole"


def test_make_prompt():
    assert make_prompt("road car", "standard", TEMPLATE, WORDS) == "road car"
    assert make_prompt("road car", "fog", TEMPLATE, WORDS) == (
        "A city street scene with road car, in foggy weather."
    )
    assert (
        make_prompt("sky", "night", TEMPLATE, WORDS)
        == "A city street scene with sky, in night weather."
    )
    with pytest.raises(ValueError, match="no prompt word for condition 'dust'"):
        make_prompt("road", "dust", TEMPLATE, WORDS)
    with pytest.raises(ValueError, match="at least one class"):
        make_prompt(" ", "fog", TEMPLATE, WORDS)
    with pytest.raises(ValueError, match="must use the fields"):
        make_prompt("road", "fog", "{classes} at {time}", WORDS)


def test_dginstyle_scheme_is_a_fair_coin_then_one_of_five_words():
    """DGInStyle's script: half the prompts bare, the rest uniform over snowy / rainy / sunny /
    foggy / night (about 40 % adverse, 10 % "sunny", whose condition is standard)."""
    choices = dginstyle_choices(20000, np.random.default_rng(0), WORDS)
    n = len(choices)
    bare = [c for c in choices if c.word is None]
    assert abs(len(bare) / n - 0.5) < 0.015 and {c.condition for c in bare} == {"standard"}
    by_word = {}
    for c in choices:
        if c.word is not None:
            by_word.setdefault(c.word, set()).add(c.condition)
    assert by_word == {
        "snowy": {"snow"},
        "rainy": {"rain"},
        "sunny": {"standard"},
        "foggy": {"fog"},
        "night": {"night"},
    }
    for word in by_word:
        share = sum(c.word == word for c in choices) / n
        assert abs(share - 0.1) < 0.01, word
    adverse = sum(c.condition != "standard" for c in choices) / n
    assert abs(adverse - 0.4) < 0.015
    assert render_prompt("road car", PromptChoice("standard", "sunny"), TEMPLATE) == (
        "A city street scene with road car, in sunny weather."
    )
    assert render_prompt("road car", PromptChoice("standard", None), TEMPLATE) == "road car"
    again = dginstyle_choices(50, np.random.default_rng(3), WORDS)
    assert again == dginstyle_choices(50, np.random.default_rng(3), WORDS)


# ---------------------------------------------------------------------------------------------
# Apportioning


def reference_apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    order = [c for c in ("standard", "fog", "rain", "snow", "night") if c in shares]
    norm = sum(shares.values())
    quota = {c: total * shares[c] / norm for c in order}
    counts = {c: int(quota[c] // 1) for c in order}
    left = total - sum(counts.values())
    # The units left over go to the largest remainders, the earlier condition first on ties.
    ranked = sorted(order, key=lambda c: (-(quota[c] - counts[c]), order.index(c)))
    for c in ranked[:left]:
        counts[c] += 1
    return {c: n for c, n in counts.items() if n}


@pytest.mark.parametrize(
    ("total", "shares"),
    [
        (96, {"standard": 0.5, "fog": 0.125, "rain": 0.125, "snow": 0.125, "night": 0.125}),
        (10, {"standard": 1, "fog": 1, "rain": 1}),
        (7, {"standard": 3, "fog": 1, "rain": 1, "snow": 1, "night": 1}),
        (10000, {"standard": 3, "fog": 1, "rain": 1, "snow": 1, "night": 1}),
        (5, {"standard": 0, "night": 2}),
        (3, {"fog": 0.2, "rain": 0.2, "snow": 0.2, "night": 0.2, "standard": 0.2}),
    ],
)
def test_apportion_matches_largest_remainders(total, shares):
    got = jobs.apportion(total, shares)
    assert got == reference_apportion(total, shares)
    assert sum(got.values()) == total


def test_apportion_rejects_bad_shares():
    with pytest.raises(ConfigError, match="positive sum"):
        jobs.apportion(4, {"fog": 0, "rain": 0})
    with pytest.raises(ConfigError, match="unknown conditions"):
        jobs.apportion(4, {"dust": 1})


# ---------------------------------------------------------------------------------------------
# The job table


def write_source(root: Path, n: int = 6) -> list[np.ndarray]:
    """Labels with large road/building, a few cars and poles, and rare bicycles/traffic lights."""
    rng = np.random.default_rng(5)
    trains = []
    for i in range(n):
        lab = np.zeros((40, 64), np.uint8)
        lab[:15] = 2
        x = int(rng.integers(0, 50))
        lab[20:30, x : x + 12] = 13
        lab[5:25, (x + 20) % 60] = 5
        if i % 2:
            lab[32:36, 3 + i : 8 + i] = 18
        if i == 3:
            lab[2:4, 60:62] = 6
        lab[38:, :] = 255
        trains.append(lab)
        raw = np.vectorize(lambda v: RAW.get(int(v), 0))(lab).astype(np.uint8)
        write_image(root / "images" / f"{i:05d}.png", np.full((40, 64, 3), 9 * i, np.uint8))
        write_label(root / "labels" / f"{i:05d}.png", raw)
    return trains


def params(**jobs_overrides) -> dict:
    p = {
        "rcs": {"temperature": 0.01, "min_pixels": 10},
        "jobs": {
            "num_images": 30,
            "seed": 0,
            "crop_size": 16,
            "min_class_fraction": 0.05,
            "crop_tries": 10,
            "conditions": {
                "standard": 0.5,
                "fog": 0.125,
                "rain": 0.125,
                "snow": 0.125,
                "night": 0.125,
            },
        },
        "prompt": {"template": TEMPLATE, "condition_words": dict(WORDS)},
    }
    p["jobs"].update(jobs_overrides)
    return p


@pytest.fixture
def source(tmp_path):
    labels = write_source(tmp_path / "gta")
    stats = rcs.compute_class_stats(
        {"name": "gta", "format": "gta", "root": str(tmp_path / "gta")}, 1
    )
    path = tmp_path / "class_stats.json"
    rcs.write_class_stats(path, stats)
    return path, labels


def run(tmp_path: Path, stats: Path, p: dict, name: str = "jobs.csv") -> Path:
    out = tmp_path / name
    assert jobs.main(["--params", json.dumps(p), "--stats", str(stats), "--out", str(out)]) == 0
    return out


def test_job_table_is_byte_for_byte_reproducible(tmp_path, source):
    stats, _ = source
    a = run(tmp_path, stats, params(), "a.csv").read_bytes()
    b = run(tmp_path, stats, params(), "b.csv").read_bytes()
    assert a == b
    c = run(tmp_path, stats, params(seed=1), "c.csv").read_bytes()
    assert c != a


def test_every_job_follows_the_rules(tmp_path, source):
    stats_path, trains = source
    p = params(num_images=40)
    table = jobs.read_jobs(run(tmp_path, stats_path, p))
    stats = rcs.read_class_stats(stats_path)
    assert [j.job_id for j in table] == list(range(40))
    counts = {
        c: sum(j.condition == c for j in table)
        for c in ("standard", "fog", "rain", "snow", "night")
    }
    assert counts == {"standard": 20, "fog": 5, "rain": 5, "snow": 5, "night": 5}
    seeds = [j.seed for j in table]
    assert len(set(seeds)) == 40
    for job in table:
        index = int(job.name)
        lab = trains[index]
        assert stats.pixels[index, job.rcs_class] > 10 or job.rcs_class == 6
        assert (job.x1 - job.x0, job.y1 - job.y0) == (16, 16)
        assert 0 <= job.x0 and job.x1 <= 64 and 0 <= job.y0 and job.y1 <= 40
        present = set()
        for y in range(job.y0, job.y1):
            for x in range(job.x0, job.x1):
                present.add(int(lab[y, x]))
        assert job.rcs_class in present
        names = " ".join(NAMES[c] for c in sorted(present - {255}))
        if job.condition == "standard":
            assert job.prompt == names
        else:
            assert (
                job.prompt
                == f"A city street scene with {names}, in {WORDS[job.condition]} weather."
            )
        expected_seed = int(np.random.SeedSequence([0, job.job_id]).generate_state(1, np.uint32)[0])
        assert job.seed == expected_seed
        assert job.label.endswith(f"{index:05d}.png") and job.label_map == "cityscapes_ids"


def test_dginstyle_scheme_job_table(tmp_path, source):
    """The same crops as the paper scheme (drawn first), DGInStyle's conditions and prompts."""
    stats_path, _ = source
    p = params(num_images=200)
    paper = jobs.read_jobs(run(tmp_path, stats_path, p, "paper.csv"))
    p["prompt"]["scheme"] = "dginstyle"
    first = run(tmp_path, stats_path, p, "dg.csv").read_bytes()
    assert run(tmp_path, stats_path, p, "dg2.csv").read_bytes() == first
    table = jobs.read_jobs(tmp_path / "dg.csv")
    assert [(j.name, j.x0, j.y0, j.seed) for j in table] == [
        (j.name, j.x0, j.y0, j.seed) for j in paper
    ]
    sunny = [j for j in table if j.prompt.endswith("in sunny weather.")]
    assert sunny and all(j.condition == "standard" for j in sunny)
    for j in table:
        if j.condition == "standard" and j not in sunny:
            assert "weather" not in j.prompt
        elif j.condition != "standard":
            assert j.prompt.endswith(f"in {WORDS[j.condition]} weather.")
    bare = sum("weather" not in j.prompt for j in table)
    assert 70 < bare < 130  # a fair coin over 200 jobs


def test_class_below_min_pixels_falls_back_to_any_pixels(tmp_path, source):
    stats_path, _ = source
    # Traffic light has 4 px in one image: below min_pixels 10, still drawable (and rarest).
    table = jobs.read_jobs(run(tmp_path, stats_path, params(num_images=60)))
    assert any(j.rcs_class == 6 and j.name == "00003" for j in table)


def test_config_errors(tmp_path, source, capsys):
    stats_path, _ = source
    out = tmp_path / "x.csv"
    p = params()
    p["prompt"]["template"] = "street with {classes}"
    assert (
        jobs.main(["--params", json.dumps(p), "--stats", str(stats_path), "--out", str(out)]) == 1
    )
    assert "generation.prompt.template" in capsys.readouterr().err
    p = copy.deepcopy(params())
    p["rcs"]["min_pixels"] = -1
    assert (
        jobs.main(["--params", json.dumps(p), "--stats", str(stats_path), "--out", str(out)]) == 1
    )
    assert "rcs.min_pixels: -1 is less than the minimum of 0" in capsys.readouterr().err
    assert not out.exists()


def test_read_jobs_checks_the_header(tmp_path):
    path = tmp_path / "jobs.csv"
    path.write_text("job_id,name\n0,a\n")
    with pytest.raises(DataError, match="columns are job_id,name"):
        jobs.read_jobs(path)
