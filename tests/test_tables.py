"""Results tables from made-up per-run metrics, and the published numbers of the paper."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest

from flexseg.config import RECIPE_KEYS
from flexseg.io import DataError
from flexseg.labels import CLASS_NAMES
from flexseg.tables import (
    ablation_experiments,
    main,
    parse_experiments,
    read_metrics,
    read_published,
    read_results,
    run_recipes,
)

EXPERIMENTS = {
    "source_only": {
        "label": "Source only",
        "data": "source",
        "gap": False,
        "ube": False,
        "has": False,
    },
    "dginstyle": {
        "label": "+ DGInStyle",
        "data": "combined",
        "gap": False,
        "ube": False,
        "has": False,
    },
    "flexseg": {"label": "++ FLEX-Seg", "data": "combined", "gap": True, "ube": True, "has": True},
    "gap_only": {"label": "GAP", "data": "combined", "gap": True, "ube": False, "has": False},
    "ube_only": {"label": "UBE", "data": "combined", "gap": False, "ube": True, "has": False},
    "gap_ube": {"label": "GAP + UBE", "data": "combined", "gap": True, "ube": True, "has": False},
    "hrda_dg": {
        "label": "HRDA dg recipe",
        "data": "source",
        "gap": False,
        "ube": False,
        "has": False,
        "training": {"online_rcs": True},
        "evaluation": {"mode": "whole"},
    },
    "boundary_weighted": {
        "label": "Eq. 2",
        "data": "combined",
        "gap": False,
        "ube": False,
        "has": False,
        "boundary_weight": True,
    },
}
# the tables' slices hold the experiments' flags, not their recipe overrides
FLAGS = {n: {k: v for k, v in e.items() if k not in RECIPE_KEYS} for n, e in EXPERIMENTS.items()}
MAIN = ["source_only", "dginstyle", "flexseg"]
TARGETS = {
    "acdc": "ACDC",
    "dark_zurich": "DZ",
    "cityscapes": "CS",
    "bdd100k": "BDD",
    "mapillary": "MV",
}


def write_metrics(folder, experiment, model, seed, dataset, miou, rng):
    path = folder / experiment / model / f"seed{seed}" / dataset / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "experiment": experiment,
        "model": model,
        "seed": seed,
        "dataset": dataset,
        "miou": miou,
        "per_class": {n: float(rng.uniform(0, 100)) for n in CLASS_NAMES},
        "per_condition": (
            {c: float(rng.uniform(0, 100)) for c in ("fog", "night", "rain", "snow")}
            if dataset == "acdc"
            else {}
        ),
        "boundary_error": float(rng.uniform(20, 60)),
        "interior_error": float(rng.uniform(5, 20)),
        "num_images": 4,
    }
    record["per_class"]["train"] = None
    path.write_text(json.dumps(record))
    return path


def make_runs(tmp_path, experiments, models, seeds, datasets, skip=()):
    rng = np.random.default_rng(0)
    scores, paths = {}, []
    for e in experiments:
        for m in models:
            for s in seeds:
                for d in datasets:
                    if (e, m, s, d) in skip:
                        continue
                    value = float(rng.uniform(10, 70))
                    scores[(e, m, s, d)] = value
                    paths.append(write_metrics(tmp_path / "eval", e, m, s, d, value, rng))
    return scores, paths


def reference_row(scores, e, m, seeds, members):
    """Per seed the mean of ``members`` (only seeds that have all), then mean and sample std."""
    per_seed = []
    for s in seeds:
        vals = [scores.get((e, m, s, d)) for d in members]
        if all(v is not None for v in vals):
            per_seed.append(sum(vals) / len(vals))
    if not per_seed:
        return math.nan, math.nan
    std = statistics.stdev(per_seed) if len(per_seed) > 1 else math.nan
    return sum(per_seed) / len(per_seed), std


def tables_command(command, params, paths, **files):
    """``python -m flexseg.tables <command>`` writing ``files`` (option -> path)."""
    options = [f"--{k}={v}" for k, v in files.items()]
    return main([command, "--params", json.dumps(params), "--metrics", *map(str, paths), *options])


def run_tables(tmp_path, paths, main_experiments=MAIN, compare=False, held_out=None):
    """The table commands the workflow runs for such a config, writing its file names."""
    out = tmp_path / "results"
    params = {"tables": {"main_experiments": list(main_experiments)}, "experiments": FLAGS}
    assert tables_command(
        "main", params, paths, table=out / "table.csv", markdown=out / "table.md",
        long=out / "tables/long.csv", figure=out / "figures/boundary_interior.png",
    ) == 0  # fmt: skip
    names = [read_metrics(p).experiment for p in paths]
    if ablation_experiments(names, main_experiments, parse_experiments(EXPERIMENTS)):
        files = {"table": out / "tables/ablation.csv", "markdown": out / "tables/ablation.md"}
        assert tables_command("ablation", params, paths, **files) == 0
    if held_out is not None:
        gap = {"held_out": held_out, "experiments": FLAGS}
        assert tables_command("domain-gap", gap, paths, table=out / "tables/domain_gap.csv") == 0
    if compare:
        table = out / "tables/paper_comparison.csv"
        assert tables_command("paper-comparison", params, paths, table=table) == 0
    return out


def test_table1_layout_means_and_stds(tmp_path):
    seeds = [0, 1, 2]
    models = ["mitb5", "r101"]
    datasets = [*TARGETS, "source_val"]
    scores, paths = make_runs(tmp_path, MAIN, models, seeds, datasets)
    out = run_tables(tmp_path, paths, held_out="source_val")
    table = pd.read_csv(out / "table.csv")
    cols = ["ACDC", "DZ", "Avg2", "CS", "BDD", "MV", "Avg5"]
    expected = ["model", "experiment", "method", "seeds"]
    for c in cols:
        expected += [c, f"{c}_std"]
    assert list(table.columns) == expected
    # Rows: per model (the paper's backbone blocks) the main experiments in their order.
    assert list(zip(table["model"], table["experiment"], strict=True)) == [
        (m, e) for m in models for e in MAIN
    ]
    assert list(table["method"][:3]) == ["Source only", "+ DGInStyle", "++ FLEX-Seg"]
    assert (table["seeds"] == 3).all()
    members = {
        "ACDC": ["acdc"],
        "DZ": ["dark_zurich"],
        "CS": ["cityscapes"],
        "BDD": ["bdd100k"],
        "MV": ["mapillary"],
        "Avg2": ["acdc", "dark_zurich"],
        "Avg5": list(TARGETS),
    }
    for _, row in table.iterrows():
        for col in cols:
            mean, std = reference_row(scores, row["experiment"], row["model"], seeds, members[col])
            assert row[col] == pytest.approx(mean, abs=1e-9), col
            assert row[f"{col}_std"] == pytest.approx(std, abs=1e-9), col
    md = (out / "table.md").read_text()
    assert "| Model | Method | Seeds | ACDC | DZ | Avg2 | CS | BDD | MV | Avg5 |" in md
    first = table.iloc[0]
    assert f"{first['ACDC']:.2f} ± {first['ACDC_std']:.2f}" in md

    long = pd.read_csv(out / "tables" / "long.csv")
    assert len(long) == len(paths)
    assert {"miou_fog", "miou_night", "miou_rain", "miou_snow", "iou_traffic_light"} <= set(long)
    assert long[long["dataset"] != "acdc"]["miou_fog"].isna().all()
    assert long["iou_train"].isna().all()

    gap = pd.read_csv(out / "tables" / "domain_gap.csv")
    assert len(gap) == len(MAIN) * len(models) * len(seeds)
    r = gap.iloc[0]
    src = scores[(r["experiment"], r["model"], r["seed"], "source_val")]
    tgt = np.mean([scores[(r["experiment"], r["model"], r["seed"], d)] for d in TARGETS])
    assert r["held_out"] == pytest.approx(src) and r["target_mean"] == pytest.approx(tgt)
    assert r["gap"] == pytest.approx(src - tgt)
    assert (out / "figures" / "boundary_interior.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_datasets_and_single_seed_give_empty_cells(tmp_path):
    skip = {("flexseg", "m", 0, "dark_zurich")}
    datasets = ["acdc", "dark_zurich", "cityscapes"]
    scores, paths = make_runs(tmp_path, MAIN, ["m"], [0], datasets, skip=skip)
    out = run_tables(tmp_path, paths)
    table = pd.read_csv(out / "table.csv").set_index("experiment")
    assert table["ACDC_std"].isna().all()  # one seed: no spread
    assert table[["BDD", "MV", "Avg5"]].isna().all().all()  # never evaluated
    assert math.isnan(table.loc["flexseg", "DZ"]) and math.isnan(table.loc["flexseg", "Avg2"])
    assert table.loc["dginstyle", "Avg2"] == pytest.approx(
        (scores[("dginstyle", "m", 0, "acdc")] + scores[("dginstyle", "m", 0, "dark_zurich")]) / 2
    )
    assert "| – |" in (out / "table.md").read_text()


def test_seed_missing_a_dataset_is_left_out_of_that_average(tmp_path):
    skip = {("dginstyle", "m", 1, "acdc")}
    scores, paths = make_runs(tmp_path, MAIN, ["m"], [0, 1, 2], list(TARGETS), skip=skip)
    out = run_tables(tmp_path, paths)
    row = pd.read_csv(out / "table.csv").set_index("experiment").loc["dginstyle"]
    for col, members in (
        ("Avg2", ["acdc", "dark_zurich"]),
        ("ACDC", ["acdc"]),
        ("DZ", ["dark_zurich"]),
    ):
        mean, std = reference_row(scores, "dginstyle", "m", [0, 1, 2], members)
        assert row[col] == pytest.approx(mean) and row[f"{col}_std"] == pytest.approx(std)


def test_ablation_table(tmp_path):
    exps = [*MAIN, "gap_only", "ube_only", "gap_ube"]
    scores, paths = make_runs(tmp_path, exps, ["daformer_mitb5"], [0, 1], list(TARGETS))
    # A second backbone with the main experiments only, as in the paper (no ablation rows).
    _, more = make_runs(tmp_path, MAIN, ["hrda_mitb5"], [0, 1], list(TARGETS))
    out = run_tables(tmp_path, paths + more, compare=True)
    assert len(pd.read_csv(out / "table.csv")) == 6
    abl = pd.read_csv(out / "tables" / "ablation.csv")
    assert set(abl["model"]) == {"daformer_mitb5"}
    # Table 2's order: baseline, GAP, UBE, GAP + UBE, all three; no source-only row.
    assert list(abl["experiment"]) == ["dginstyle", "gap_only", "ube_only", "gap_ube", "flexseg"]
    assert list(abl["GAP"]) == [False, True, False, True, True]
    assert list(abl["UBE"]) == [False, False, True, True, True]
    assert list(abl["HAS"]) == [False, False, False, False, True]
    assert [c for c in abl.columns if c.startswith("Avg") and not c.endswith("_std")] == [
        "Avg2",
        "Avg3",
        "Avg5",
    ]
    for _, row in abl.iterrows():
        mean, std = reference_row(
            scores,
            row["experiment"],
            "daformer_mitb5",
            [0, 1],
            ["cityscapes", "bdd100k", "mapillary"],
        )
        assert row["Avg3"] == pytest.approx(mean) and row["Avg3_std"] == pytest.approx(std)
    md = (out / "tables" / "ablation.md").read_text()
    assert "| GAP | UBE | HAS |" in md and "✓" in md

    comp = pd.read_csv(out / "tables" / "paper_comparison.csv")
    t1 = comp[(comp["table"] == "Table 1") & (comp["experiment"] == "flexseg")]
    hrda = t1[t1["model"] == "hrda_mitb5"].set_index("column")
    assert hrda.loc["ACDC", "published"] == pytest.approx(48.51)
    t1 = t1[t1["model"] == "daformer_mitb5"].set_index("column")
    assert t1.loc["ACDC", "published"] == pytest.approx(46.56)
    assert t1.loc["DZ", "published"] == pytest.approx(29.51)
    mean, _ = reference_row(scores, "flexseg", "daformer_mitb5", [0, 1], ["acdc"])
    assert t1.loc["ACDC", "measured"] == pytest.approx(mean)
    assert t1.loc["ACDC", "difference"] == pytest.approx(mean - 46.56)
    t2 = comp[(comp["table"] == "Table 2") & (comp["experiment"] == "gap_ube")].set_index("column")
    assert t2.loc["Avg3", "published"] == pytest.approx(56.07)


def test_boundary_weight_row_follows_the_baseline_in_table2(tmp_path):
    exps = [*MAIN, "boundary_weighted", "gap_only"]
    _, paths = make_runs(tmp_path, exps, ["daformer_mitb5"], [0], list(TARGETS))
    out = run_tables(tmp_path, paths, compare=True)
    abl = pd.read_csv(out / "tables" / "ablation.csv")
    assert list(abl["experiment"]) == ["dginstyle", "boundary_weighted", "gap_only", "flexseg"]
    assert list(abl["BOUNDARY_WEIGHT"]) == [False, True, False, False]
    assert "| GAP | UBE | HAS | Eq. 2 |" in (out / "tables" / "ablation.md").read_text()
    comp = pd.read_csv(out / "tables" / "paper_comparison.csv")
    row = comp[(comp["table"] == "Table 2") & (comp["experiment"] == "boundary_weighted")]
    assert len(row) == 3 and row["published"].isna().all()  # not in the paper's Table 2


def test_comparison_takes_each_published_row_from_its_own_recipe(tmp_path):
    """The published DAFormer / HRDA MiT-B5 rows are HRDA dg experiment 50's: they are compared
    with the hrda_dg runs (not a main experiment here), source_only gets no published number,
    and every row names the measured and the published recipe."""
    models = ["daformer_mitb5", "hrda_mitb5"]
    scores, paths = make_runs(tmp_path, [*MAIN, "hrda_dg"], models, [0, 1], list(TARGETS))
    recipe = {"data": "whole source, online RCS", "shade": True, "feature_distance": True}
    recipe.update(ce_reduction="all", test="whole")
    for path in paths:
        record = json.loads(path.read_text())
        if record["experiment"] == "hrda_dg":
            record["recipe"] = recipe
            path.write_text(json.dumps(record))
    out = run_tables(tmp_path, paths, compare=True)
    assert "hrda_dg" not in set(pd.read_csv(out / "table.csv")["experiment"])
    comp = pd.read_csv(out / "tables" / "paper_comparison.csv")
    t1 = comp[comp["table"] == "Table 1"]
    dg = t1[(t1["experiment"] == "hrda_dg") & (t1["model"] == "daformer_mitb5")]
    dg = dg.set_index("column")
    assert dg.loc["CS", "published"] == pytest.approx(52.65)
    mean, _ = reference_row(scores, "hrda_dg", "daformer_mitb5", [0, 1], ["cityscapes"])
    assert dg.loc["CS", "measured"] == pytest.approx(mean)
    assert dg.loc["CS", "recipe"] == (
        "whole source, online RCS; SHADE on; FD on; CE over all px; whole test"
    )
    assert "exp. 50" in dg.loc["CS", "published_recipe"]
    hrda = t1[(t1["experiment"] == "hrda_dg") & (t1["model"] == "hrda_mitb5")].set_index("column")
    assert hrda.loc["MV", "published"] == pytest.approx(61.16)
    assert t1[t1["experiment"] == "source_only"]["published"].isna().all()
    # runs without a recorded recipe say so
    assert set(t1[t1["experiment"] == "dginstyle"]["recipe"]) == {"not recorded"}
    assert t1["published_recipe"].fillna("").str.len().gt(0).sum() == 7 * 6


def test_a_run_whose_files_disagree_on_the_recipe_is_named(tmp_path, capsys):
    _, paths = make_runs(tmp_path, ["flexseg"], ["m"], [0], ["acdc", "cityscapes"])
    record = json.loads(paths[0].read_text())
    record["recipe"] = {"data": "RCS subset + generated", "test": "slide"}
    paths[0].write_text(json.dumps(record))
    with pytest.raises(DataError, match="records the recipe"):
        run_recipes([read_metrics(p) for p in paths])
    params = {"tables": {"main_experiments": ["flexseg"]}, "experiments": FLAGS}
    table = tmp_path / "paper_comparison.csv"
    assert tables_command("paper-comparison", params, paths, table=table) == 1
    assert "records the recipe" in capsys.readouterr().err and not table.exists()


def test_run_recipe_reads_what_the_model_file_recorded():
    from flexseg.evaluate import run_recipe

    training = {
        "online_rcs": True,
        "shade": {"enabled": True},
        "feature_distance": {"enabled": True},
        "ce_reduction": "all",
        "boundary_weight": {"alpha": 5.0},
    }
    params = {"experiment": {"data": "combined", "boundary_weight": True}, "training": training}
    hrda = {"architecture": "hrda", "hrda": {"detail_crop": 384}}
    recipe = run_recipe(params, hrda, "slide")
    assert recipe == {
        "data": "whole source, online RCS + generated",
        "online_rcs": True,
        "shade": True,
        "feature_distance": True,
        "ce_reduction": "all",
        "boundary_weight": 5.0,
        "detail_crop": 384,
        "test": "slide",
    }
    old = run_recipe({"experiment": {"data": "combined"}, "training": {}}, {}, "slide")
    assert old == {"data": "RCS subset + generated", "online_rcs": False, "test": "slide"}


def test_comparison_leaves_unmatched_models_empty(tmp_path):
    _, paths = make_runs(tmp_path, MAIN, ["tiny"], [0], list(TARGETS))
    out = run_tables(tmp_path, paths, compare=True)
    comp = pd.read_csv(out / "tables" / "paper_comparison.csv")
    assert len(comp) == 3 * 7 and comp["published"].isna().all()
    assert comp["measured"].notna().all()


def test_unreadable_or_duplicate_metrics_name_the_file(tmp_path, capsys):
    _, paths = make_runs(tmp_path, ["flexseg"], ["m"], [0], ["acdc"])
    bad = tmp_path / "broken" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(DataError, match="broken/metrics.json"):
        read_metrics(bad)
    params = {"tables": {"main_experiments": MAIN}, "experiments": FLAGS}
    out = tmp_path / "r"
    code = tables_command(
        "main", params, [paths[0], bad], table=out / "t.csv", markdown=out / "t.md",
        long=out / "l.csv", figure=out / "f.png",
    )  # fmt: skip
    assert code == 1 and "broken/metrics.json" in capsys.readouterr().err
    missing = tmp_path / "nowhere.json"
    with pytest.raises(DataError, match="nowhere.json"):
        read_metrics(missing)
    copy = tmp_path / "copy.json"
    copy.write_text(paths[0].read_text())
    with pytest.raises(DataError, match="copy.json"):
        read_results([paths[0], copy], parse_experiments(EXPERIMENTS))
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"experiment": "flexseg", "model": "m", "seed": 0}))
    with pytest.raises(DataError, match="partial.json.*missing keys"):
        read_metrics(partial)


def test_cli_help_runs():
    for module_main in (main,):
        with pytest.raises(SystemExit) as exc:
            module_main(["--help"])
        assert exc.value.code == 0
    from flexseg import evaluate

    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--help"])
    assert exc.value.code == 0


# --------------------------------------------------------------------------------------------
# The published numbers (Tables 1 and 2 of the paper).


def test_published_table1_holds_every_row_and_number():
    t1 = read_published("table1.csv")
    assert len(t1) == 17
    cols = ["ACDC", "DZ", "Avg2", "CS", "BDD", "MV", "Avg5"]
    # Numbers printed per row ("–" in the paper = not reported).
    counts = t1[cols].notna().sum(axis=1).tolist()
    assert counts == [3, 7, 3, 3, 3, 7, 4, 4, 7, 7, 7, 7, 7, 7, 7, 7, 7]
    key = t1.set_index(["method_key", "model_key"])
    # Values quoted in the paper's text.
    assert key.loc[("flexseg", "daformer_mitb5"), "ACDC"] == 46.56
    assert key.loc[("flexseg", "hrda_mitb5"), "ACDC"] == 48.51
    assert key.loc[("flexseg", "daformer_mitb5"), "DZ"] == 29.51
    assert key.loc[("flexseg", "hrda_mitb5"), "DZ"] == 28.16
    assert key.loc[("famix", "r50_clip"), "ACDC"] == 32.74
    assert key.loc[("scsd", "r50_clip"), "ACDC"] == 35.66
    # The "DAFormer" / "HRDA" MiT-B5 rows come from HRDA dg experiment 50: keyed to hrda_dg.
    assert key.loc[("hrda_dg", "daformer_mitb5"), "CS"] == 52.65
    assert key.loc[("hrda_dg", "hrda_mitb5"), "MV"] == 61.16
    assert "exp. 50" in key.loc[("hrda_dg", "hrda_mitb5"), "recipe"]
    assert "384" in key.loc[("hrda_dg", "hrda_mitb5"), "recipe"]
    assert "exp. 61" in key.loc[("dginstyle", "hrda_mitb5"), "recipe"]
    assert "exp. 60" in key.loc[("dginstyle", "daformer_mitb5"), "recipe"]
    assert t1["recipe"].notna().all()
    assert key.loc[("drpc", "r101"), "CS"] == 42.53
    # Gains quoted in the text: +2.52 / +2.44 on ACDC, +3.93 / +2.63 on DZ over DGInStyle.
    for model, col, gain in (
        ("daformer_mitb5", "ACDC", 2.52),
        ("hrda_mitb5", "ACDC", 2.44),
        ("daformer_mitb5", "DZ", 3.93),
        ("hrda_mitb5", "DZ", 2.63),
    ):
        diff = key.loc[("flexseg", model), col] - key.loc[("dginstyle", model), col]
        assert diff == pytest.approx(gain, abs=1e-9)
    # The printed averages agree with the printed columns (up to rounding): catches typos.
    for _, r in t1.iterrows():
        if not math.isnan(r["Avg2"]):
            assert (r["ACDC"] + r["DZ"]) / 2 == pytest.approx(r["Avg2"], abs=0.0051)
        if not math.isnan(r["Avg5"]):
            five = [r[c] for c in ("ACDC", "DZ", "CS", "BDD", "MV")]
            assert sum(five) / 5 == pytest.approx(r["Avg5"], abs=0.0051)
    assert len(key.index.unique()) == len(key)


def test_published_table2_matches_the_text_and_table1():
    t2 = read_published("table2.csv").set_index("method_key")
    assert list(t2.index) == ["dginstyle", "gap_only", "ube_only", "gap_ube", "flexseg"]
    assert t2.loc["dginstyle", "Avg2"] == 34.81
    assert t2.loc["gap_ube", "Avg2"] == 36.15 and t2.loc["gap_ube", "Avg3"] == 56.07
    assert t2.loc["flexseg", "Avg2"] == 38.04 and t2.loc["flexseg", "Avg5"] == 48.58
    # Gains quoted in the text.
    assert t2.loc["gap_only", "Avg2"] - t2.loc["dginstyle", "Avg2"] == pytest.approx(1.52)
    assert t2.loc["ube_only", "Avg2"] - t2.loc["dginstyle", "Avg2"] == pytest.approx(0.24)
    assert t2.loc["flexseg", "Avg2"] - t2.loc["dginstyle", "Avg2"] == pytest.approx(3.23)
    assert t2.loc["flexseg", "Avg3"] - t2.loc["gap_ube", "Avg3"] == pytest.approx(-0.46)
    assert t2.loc["flexseg", "Avg2"] - t2.loc["gap_ube", "Avg2"] == pytest.approx(1.89)
    assert t2[["Avg2", "Avg3", "Avg5"]].notna().all().all() and len(t2) == 5
    # Its first and last rows are Table 1's DAFormer MiT-B5 rows.
    t1 = read_published("table1.csv").set_index(["method_key", "model_key"])
    for exp in ("dginstyle", "flexseg"):
        row = t1.loc[(exp, "daformer_mitb5")]
        assert t2.loc[exp, "Avg2"] == row["Avg2"] and t2.loc[exp, "Avg5"] == row["Avg5"]
        assert (row["CS"] + row["BDD"] + row["MV"]) / 3 == pytest.approx(
            t2.loc[exp, "Avg3"], abs=0.0051
        )


def test_a_table_without_its_runs_is_an_error_naming_what_is_missing(tmp_path, capsys):
    """The workflow asks for Table 2 and the domain gap from the config; given metrics without
    ablation runs or without the held-out set, the commands stop and say so."""
    _, paths = make_runs(tmp_path, MAIN, ["m"], [0], ["acdc"])
    params = {"tables": {"main_experiments": MAIN}, "experiments": FLAGS}
    files = {"table": tmp_path / "a.csv", "markdown": tmp_path / "a.md"}
    assert tables_command("ablation", params, paths, **files) == 1
    assert "no ablation runs" in capsys.readouterr().err
    gap = {"held_out": "source_val", "experiments": FLAGS}
    assert tables_command("domain-gap", gap, paths, table=tmp_path / "g.csv") == 1
    assert "held-out dataset 'source_val'" in capsys.readouterr().err
    assert not any(tmp_path.glob("*.csv"))
