"""The results tables: per-run scores, the paper's Table 1 and Table 2 layouts, the domain gap,
and the comparison with the published numbers.

Inputs are the ``metrics.json`` files of ``flexseg.evaluate`` (one per run and dataset). Dataset
names map to the paper's columns: acdc -> ACDC, dark_zurich -> DZ, cityscapes -> CS,
bdd100k -> BDD, mapillary -> MV. Averages: Avg2 = mean(ACDC, DZ) (adverse conditions),
Avg3 = mean(CS, BDD, MV) (standard conditions), Avg5 = mean of the five.

Decisions the paper leaves open:
- Averages are computed per seed first and then summarized over seeds, so an average's spread
  is the spread of the seeds' averages. A seed enters an average only if it has every dataset of
  that average; a column's mean uses the seeds that have it.
- The spread is the sample standard deviation over seeds (``ddof=1``), the usual one for a
  handful of repeated runs; with one seed it is undefined and the ``_std`` cell is left empty.
  The paper reports the mean of three seeds without a spread.
- Table 2 of the paper reports the DAFormer MiT-B5 ablation (its first and last rows equal the
  MiT-B5 DAFormer "+ DGInStyle" and "++ FLEX-Seg" rows of Table 1); ``published/table2.csv``
  records it under model key ``daformer_mitb5``.
- Measured rows are matched to the published ones by experiment name (``method_key``) and model
  name (``model_key``, e.g. daformer_mitb5, hrda_mitb5, hrda_r101): name the models of a run
  after the published keys to get a comparison; unmatched rows get empty published cells.
- A published row is compared with the run of its own recipe: the "DAFormer" and "HRDA" MiT-B5
  rows (HRDA dg experiment 50) have method_key ``hrda_dg``, so the comparison takes that
  experiment's runs for them, whether or not it is a main experiment; ``source_only``, the
  controlled baseline (dginstyle's settings without generated data), has no published row there.
  The ResNet-101 "HRDA" row's recipe is not published; it stays matched with ``source_only``.
  Every comparison row names both recipes: ``recipe`` the measured run's (``recipe_text`` of
  the ``recipe`` its metrics.json records, ``flexseg.evaluate.run_recipe``), ``published_recipe``
  the one behind the published number (``published/table1.csv``).
- Table 2 also lists the motivation experiment (Eq. 2, the ``boundary_weight`` flag, column
  ``BOUNDARY``) right after the baseline, when it was run.

One command per table, each writing the files it is given (``python -m flexseg.tables main |
ablation | domain-gap | paper-comparison --params P --metrics ... --table ...``): ``main``
writes Table 1 (CSV and Markdown), the long table and the boundary / interior figure;
``ablation`` Table 2 (CSV and Markdown; an error when the metrics hold no combined-data
experiment beyond the main ones); ``domain-gap`` each run's mIoU on the held-out source dataset
(the config's ``held_out``) beside its target mean; ``paper-comparison`` the measured tables next
to the published ones. Which of them a run makes is the workflow's choice, from the config.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from flexseg.config import (
    RECIPE_KEYS,
    ConfigError,
    Experiment,
    Part,
    add_params_arguments,
    build,
    params_from_args,
    read_part,
    read_stage,
)
from flexseg.io import DataError, write_csv, write_text
from flexseg.labels import CLASS_NAMES

DATASET_COLUMNS: dict[str, str] = {
    "acdc": "ACDC",
    "dark_zurich": "DZ",
    "cityscapes": "CS",
    "bdd100k": "BDD",
    "mapillary": "MV",
}
AVERAGES: dict[str, tuple[str, ...]] = {
    "Avg2": ("ACDC", "DZ"),
    "Avg3": ("CS", "BDD", "MV"),
    "Avg5": ("ACDC", "DZ", "CS", "BDD", "MV"),
}
TABLE1_COLUMNS = ("ACDC", "DZ", "Avg2", "CS", "BDD", "MV", "Avg5")
TABLE2_COLUMNS = ("Avg2", "Avg3", "Avg5")
REQUIRED_KEYS = ("experiment", "model", "seed", "dataset", "miou")


@dataclass
class RunMetrics:
    """One metrics.json: the scores of one run (experiment, model, seed) on one dataset."""

    path: str
    experiment: str
    model: str
    seed: int
    dataset: str
    miou: float
    per_class: dict[str, float]
    per_condition: dict[str, float]
    boundary_error: float
    interior_error: float
    num_images: int
    recipe: dict[str, Any] | None = None


@dataclass(frozen=True)
class TableSettings:
    main_experiments: list[str]


@dataclass(frozen=True)
class TablesParams:
    """The ``tables`` stage slice."""

    tables: TableSettings
    experiments: dict[str, Experiment]


@dataclass(frozen=True)
class DomainGapParams:
    """The ``domain_gap`` stage slice."""

    held_out: str | None
    experiments: dict[str, Experiment]


def _number(value: Any, key: str, path: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"{path}: {key} must be a number or null, got {value!r}")
    return float(value)


def read_metrics(path: str | Path) -> RunMetrics:
    """Read one metrics.json; raise DataError naming the file if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"metrics file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"unreadable metrics file {path}: {err}") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DataError(f"{path}: missing keys {missing}")
    p = str(path)
    seed = data["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"{path}: seed must be an integer, got {seed!r}")
    per_class = data.get("per_class") or {}
    per_condition = data.get("per_condition") or {}
    recipe = data.get("recipe")
    if not isinstance(per_class, dict) or not isinstance(per_condition, dict):
        raise DataError(f"{path}: per_class and per_condition must be JSON objects")
    if recipe is not None and not isinstance(recipe, dict):
        raise DataError(f"{path}: recipe must be a JSON object, got {recipe!r}")
    return RunMetrics(
        path=p,
        experiment=str(data["experiment"]),
        model=str(data["model"]),
        seed=seed,
        dataset=str(data["dataset"]),
        miou=_number(data["miou"], "miou", p),
        per_class={str(k): _number(v, f"per_class.{k}", p) for k, v in per_class.items()},
        per_condition={
            str(k): _number(v, f"per_condition.{k}", p) for k, v in per_condition.items()
        },
        boundary_error=_number(data.get("boundary_error"), "boundary_error", p),
        interior_error=_number(data.get("interior_error"), "interior_error", p),
        num_images=int(data.get("num_images", 0)),
        recipe=recipe,
    )


def parse_experiments(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, Experiment]:
    """The config's ``experiments`` (checked against the schema; recipe overrides left out) by
    name."""
    checked = read_part(entries, Part("experiments"), "experiments")
    return {
        name: build(
            Experiment, {"name": name, **{k: v for k, v in e.items() if k not in RECIPE_KEYS}}
        )
        for name, e in checked.items()
    }


def recipe_text(recipe: Mapping[str, Any] | None) -> str:
    """One line naming a run's recipe (``flexseg.evaluate.run_recipe``): its data, SHADE, the
    feature distance, the CE's N, the HRDA detail crop and the test mode."""
    if not recipe:
        return "not recorded"
    parts = [str(recipe.get("data", "?"))]
    for key, name in (("shade", "SHADE"), ("feature_distance", "FD")):
        if key in recipe:
            parts.append(f"{name} {'on' if recipe[key] else 'off'}")
    if recipe.get("boundary_weight"):
        parts.append(f"Eq. 2 alpha {recipe['boundary_weight']:g}")
    if "ce_reduction" in recipe:
        parts.append(f"CE over {recipe['ce_reduction']} px")
    if recipe.get("detail_crop") is not None:
        parts.append(f"detail crop {recipe['detail_crop']}")
    if "test" in recipe:
        parts.append(f"{recipe['test']} test")
    return "; ".join(parts)


def class_column(name: str) -> str:
    return "iou_" + name.replace(" ", "_")


def long_table(runs: Sequence[RunMetrics], experiments: Mapping[str, Experiment]) -> pd.DataFrame:
    """One row per (experiment, model, seed, dataset): mIoU, per-class IoU, per-condition mIoU."""
    seen: dict[tuple[str, str, int, str], str] = {}
    conditions = sorted({c for r in runs for c in r.per_condition})
    rows = []
    for r in runs:
        key = (r.experiment, r.model, r.seed, r.dataset)
        if key in seen:
            raise DataError(f"{r.path} and {seen[key]} both hold the scores of {key}")
        seen[key] = r.path
        if r.experiment not in experiments:
            raise ConfigError(
                f"{r.path}: experiment {r.experiment!r} is not in the config's experiments "
                f"(known: {sorted(experiments)})"
            )
        row: dict[str, Any] = {
            "experiment": r.experiment,
            "method": experiments[r.experiment].title,
            "model": r.model,
            "seed": r.seed,
            "dataset": r.dataset,
            "column": DATASET_COLUMNS.get(r.dataset, ""),
            "miou": r.miou,
            "boundary_error": r.boundary_error,
            "interior_error": r.interior_error,
            "num_images": r.num_images,
        }
        for cond in conditions:
            row[f"miou_{cond}"] = r.per_condition.get(cond, math.nan)
        for name in CLASS_NAMES:
            row[class_column(name)] = r.per_class.get(name, math.nan)
        rows.append(row)
    columns = [
        "experiment",
        "method",
        "model",
        "seed",
        "dataset",
        "column",
        "miou",
        "boundary_error",
        "interior_error",
        "num_images",
        *[f"miou_{c}" for c in conditions],
        *[class_column(n) for n in CLASS_NAMES],
    ]
    return pd.DataFrame(rows, columns=columns)


def per_seed_scores(long: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, model, seed): the five dataset columns and Avg2 / Avg3 / Avg5.

    An average is NaN for a seed that lacks one of its datasets.
    """
    cols = [*DATASET_COLUMNS.values(), *AVERAGES]
    keys = ["experiment", "model", "seed"]
    if long.empty:
        return pd.DataFrame(columns=[*keys, *cols])
    targets = long[long["column"] != ""]
    wide = targets.pivot(index=keys, columns="column", values="miou")
    runs = long[keys].drop_duplicates().set_index(keys).index
    wide = wide.reindex(index=runs, columns=list(DATASET_COLUMNS.values()))
    for avg, members in AVERAGES.items():
        # skipna=False: a missing member makes the seed's average missing, not a partial mean.
        wide[avg] = wide[list(members)].mean(axis=1, skipna=False)
    return wide.reset_index()[[*keys, *cols]]


@dataclass
class Summary:
    """Mean and sample std over seeds of each column, per (experiment, model)."""

    mean: float
    std: float
    n: int


def summarize(values: pd.Series) -> Summary:
    v = values.dropna().astype(float)
    n = len(v)
    if n == 0:
        return Summary(math.nan, math.nan, 0)
    return Summary(float(v.mean()), float(v.std(ddof=1)) if n > 1 else math.nan, n)


def _model_order(runs: Sequence[RunMetrics]) -> list[str]:
    return list(dict.fromkeys(r.model for r in runs))


def summary_table(
    per_seed: pd.DataFrame,
    rows: Sequence[tuple[str, str]],
    columns: Sequence[str],
    experiments: Mapping[str, Experiment],
) -> pd.DataFrame:
    """Rows (model, experiment) in order: method label, seed count, mean and std per column."""
    out = []
    for model, exp in rows:
        sel = per_seed[(per_seed["model"] == model) & (per_seed["experiment"] == exp)]
        if sel.empty:
            continue
        e = experiments[exp]
        row: dict[str, Any] = {"model": model, "experiment": exp, "method": e.title}
        row["seeds"] = int(sel["seed"].nunique())
        for col in columns:
            s = summarize(sel[col])
            row[col] = s.mean
            row[f"{col}_std"] = s.std
        out.append(row)
    header = ["model", "experiment", "method", "seeds"]
    for col in columns:
        header += [col, f"{col}_std"]
    return pd.DataFrame(out, columns=header)


def main_table(
    per_seed: pd.DataFrame,
    models: Sequence[str],
    main_experiments: Sequence[str],
    experiments: Mapping[str, Experiment],
) -> pd.DataFrame:
    """Table 1: per model (the paper's backbone blocks) the main experiments in their order."""
    for exp in main_experiments:
        if exp not in experiments:
            raise ConfigError(
                f"tables.main_experiments names {exp!r}, which is not a key of experiments"
            )
    rows = [(m, e) for m in models for e in main_experiments]
    return summary_table(per_seed, rows, TABLE1_COLUMNS, experiments)


def _flag_order(e: Experiment) -> tuple[int, str]:
    # Table 2's row order: baseline, Eq. 2's boundary weight, GAP, UBE, GAP + UBE, all three;
    # other combinations after.
    order = {
        (False, False, False, False): 0,
        (False, False, False, True): 1,
        (True, False, False, False): 2,
        (False, True, False, False): 3,
        (True, True, False, False): 4,
        (True, True, True, False): 5,
    }
    return order.get((e.gap, e.ube, e.has, e.boundary_weight), 6), e.name


def ablation_experiments(
    present: Sequence[str], main_experiments: Sequence[str], experiments: Mapping[str, Experiment]
) -> list[str]:
    """Combined-data experiments in Table 2's order, or [] when none beyond the main ones ran."""
    combined = [e for e in dict.fromkeys(present) if experiments[e].data == "combined"]
    if not [e for e in combined if e not in main_experiments]:
        return []
    return sorted(combined, key=lambda e: _flag_order(experiments[e]))


def ablation_table(
    per_seed: pd.DataFrame,
    models: Sequence[str],
    names: Sequence[str],
    main_experiments: Sequence[str],
    experiments: Mapping[str, Experiment],
) -> pd.DataFrame:
    """Table 2: the combined-data experiments with their GAP / UBE / HAS flags, for each model
    that ran at least one of them beyond the main experiments (the paper ablates one backbone)."""
    extra = [e for e in names if e not in main_experiments]
    ablated = [
        m for m in models if per_seed[per_seed["model"] == m]["experiment"].isin(extra).any()
    ]
    table = summary_table(
        per_seed, [(m, e) for m in ablated for e in names], TABLE2_COLUMNS, experiments
    )
    for pos, flag in enumerate(ABLATION_FLAGS):
        table.insert(
            3 + pos, flag.upper(), [getattr(experiments[e], flag) for e in table["experiment"]]
        )
    return table


ABLATION_FLAGS = ("gap", "ube", "has", "boundary_weight")
ABLATION_HEADERS = {"GAP": "GAP", "UBE": "UBE", "HAS": "HAS", "BOUNDARY_WEIGHT": "Eq. 2"}


def domain_gap_table(long: pd.DataFrame, held_out: str) -> pd.DataFrame:
    """Per run: the mIoU on the held-out source dataset ``held_out``, the mean over the evaluated
    targets, and their gap."""
    keys = ["experiment", "method", "model", "seed"]
    out = []
    for key, group in long.groupby(keys, sort=False):
        src = group[group["dataset"] == held_out]["miou"]
        if src.empty:
            continue
        tgt = group[group["column"] != ""]["miou"].dropna()
        target_mean = float(tgt.mean()) if len(tgt) else math.nan
        row = dict(zip(keys, key, strict=True))
        row.update(
            held_out=float(src.iloc[0]),
            target_mean=target_mean,
            targets=len(tgt),
            gap=float(src.iloc[0]) - target_mean,
        )
        out.append(row)
    return pd.DataFrame(out, columns=[*keys, "held_out", "target_mean", "targets", "gap"])


def read_published(name: str) -> pd.DataFrame:
    """One of the published tables shipped with the package (``table1.csv`` or ``table2.csv``)."""
    ref = resources.files("flexseg").joinpath("published", name)
    try:
        with resources.as_file(ref) as path:
            return pd.read_csv(path, keep_default_na=True)
    except (OSError, pd.errors.ParserError) as err:
        raise DataError(f"unreadable published table flexseg/published/{name}: {err}") from err


def comparison_experiments(present: Sequence[str], main_experiments: Sequence[str]) -> list[str]:
    """Table 1's experiments for the comparison: the main ones, then every other evaluated one
    that a published Table 1 row names as its recipe (``hrda_dg``)."""
    keys = set(read_published("table1.csv")["method_key"])
    extra = [e for e in dict.fromkeys(present) if e not in main_experiments and e in keys]
    return [*main_experiments, *extra]


def run_recipes(runs: Sequence[RunMetrics]) -> dict[tuple[str, str], str]:
    """``recipe_text`` per (experiment, model); the seeds' and datasets' records must agree."""
    out: dict[tuple[str, str], str] = {}
    for r in runs:
        key, text = (r.experiment, r.model), recipe_text(r.recipe)
        if out.setdefault(key, text) != text:
            raise DataError(
                f"{r.path}: records the recipe {text!r}, another file of {key} {out[key]!r}"
            )
    return out


def paper_comparison(
    table1: pd.DataFrame, ablation: pd.DataFrame | None, recipes: Mapping[tuple[str, str], str]
) -> pd.DataFrame:
    """Measured vs published, one row per (table, model, experiment, column), each naming the
    measured run's recipe and the published number's."""
    rows = []
    for table_name, measured, columns in (
        ("Table 1", table1, TABLE1_COLUMNS),
        ("Table 2", ablation, TABLE2_COLUMNS),
    ):
        if measured is None or measured.empty:
            continue
        published = read_published("table1.csv" if table_name == "Table 1" else "table2.csv")
        for _, m in measured.iterrows():
            match = published[
                (published["method_key"] == m["experiment"])
                & (published["model_key"] == m["model"])
            ]
            if len(match) > 1:
                raise DataError(
                    f"flexseg/published: several {table_name} rows for method "
                    f"{m['experiment']!r} and model {m['model']!r}"
                )
            published_recipe = str(match.iloc[0]["recipe"]) if len(match) else ""
            for col in columns:
                pub = float(match.iloc[0][col]) if len(match) else math.nan
                rows.append(
                    {
                        "table": table_name,
                        "model": m["model"],
                        "experiment": m["experiment"],
                        "method": m["method"],
                        "recipe": recipes.get((m["experiment"], m["model"]), "not recorded"),
                        "column": col,
                        "measured": m[col],
                        "measured_std": m[f"{col}_std"],
                        "seeds": m["seeds"],
                        "published": pub,
                        "difference": m[col] - pub,
                        "published_recipe": published_recipe,
                    }
                )
    header = ["table", "model", "experiment", "method", "recipe", "column", "measured"]
    tail = ["measured_std", "seeds", "published", "difference", "published_recipe"]
    return pd.DataFrame(rows, columns=[*header, *tail])


def _cell(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def markdown(table: pd.DataFrame, columns: Sequence[str], flags: bool = False) -> str:
    """A Markdown rendering: mean ± std per cell (just the mean for one seed, – when missing)."""
    head = ["Model", "Method", "Seeds"]
    if flags:
        head += list(ABLATION_HEADERS.values())
    head += list(columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for _, r in table.iterrows():
        cells = [str(r["model"]), str(r["method"]), str(r["seeds"])]
        if flags:
            cells += ["✓" if r[f] else "-" for f in ABLATION_HEADERS]
        cells += [_cell(r[c], r[f"{c}_std"]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Results:
    """The metrics files read into the long table, the per-seed scores and the model order."""

    long: pd.DataFrame
    per_seed: pd.DataFrame
    models: list[str]
    runs: list[RunMetrics]


def read_results(
    metrics_paths: Sequence[str | Path], experiments: Mapping[str, Experiment]
) -> Results:
    if not metrics_paths:
        raise ValueError("no metrics files given")
    runs = [read_metrics(p) for p in metrics_paths]
    long = long_table(runs, experiments)
    return Results(long, per_seed_scores(long), _model_order(runs), runs)


def ablation_for(
    results: Results, settings: TableSettings, experiments: Mapping[str, Experiment]
) -> pd.DataFrame | None:
    """Table 2 of the results, or None when they hold no ablation runs."""
    names = ablation_experiments(
        list(results.long["experiment"]), settings.main_experiments, experiments
    )
    if not names:
        return None
    return ablation_table(
        results.per_seed, results.models, names, settings.main_experiments, experiments
    )


def write_main(
    results: Results,
    settings: TableSettings,
    experiments: Mapping[str, Experiment],
    table: str | Path,
    markdown_path: str | Path,
    long_path: str | Path,
    figure: str | Path,
) -> None:
    """Table 1 (CSV and Markdown), the long table and the boundary / interior figure."""
    from flexseg.figures import boundary_interior_figure

    write_csv(long_path, results.long)
    main = main_table(results.per_seed, results.models, settings.main_experiments, experiments)
    write_csv(table, main)
    write_text(markdown_path, markdown(main, TABLE1_COLUMNS))
    boundary_interior_figure(results.long, settings.main_experiments, figure)


def write_ablation(
    results: Results,
    settings: TableSettings,
    experiments: Mapping[str, Experiment],
    table: str | Path,
    markdown_path: str | Path,
) -> None:
    ablation = ablation_for(results, settings, experiments)
    if ablation is None:
        raise DataError(
            "no ablation runs among the metrics files (combined-data experiments other than "
            f"tables.main_experiments {settings.main_experiments})"
        )
    write_csv(table, ablation)
    write_text(markdown_path, markdown(ablation, TABLE2_COLUMNS, flags=True))


def write_paper_comparison(
    results: Results,
    settings: TableSettings,
    experiments: Mapping[str, Experiment],
    table: str | Path,
) -> None:
    """The measured Table 1 (the main experiments and every other one a published row names as
    its recipe) and Table 2 next to the published numbers, each row naming both recipes."""
    names = comparison_experiments(list(results.long["experiment"]), settings.main_experiments)
    table1 = main_table(results.per_seed, results.models, names, experiments)
    ablation = ablation_for(results, settings, experiments)
    write_csv(table, paper_comparison(table1, ablation, run_recipes(results.runs)))


def write_domain_gap(results: Results, held_out: str | None, table: str | Path) -> None:
    if held_out is None:
        raise ConfigError("held_out is null: there is no held-out source dataset to compare with")
    if not (results.long["dataset"] == held_out).any():
        raise DataError(f"no metrics of the held-out dataset {held_out!r} among the metrics files")
    write_csv(table, domain_gap_table(results.long, held_out))


def parse_params(params: Mapping[str, Any]) -> tuple[TableSettings, dict[str, Experiment]]:
    """Settings and experiments of a ``tables`` stage slice (``flexseg.config.stage_params``)."""
    p = build(TablesParams, read_stage(params, "tables"))
    return p.tables, p.experiments


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flexseg.tables",
        description="Build one results table (Table 1 with the long table and the "
        "boundary/interior figure, Table 2, the domain gap, the comparison with the paper) from "
        "per-run metrics.json files.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    outputs = {
        "main": ("table", "markdown", "long", "figure"),
        "ablation": ("table", "markdown"),
        "domain-gap": ("table",),
        "paper-comparison": ("table",),
    }
    for name, files in outputs.items():
        sub = commands.add_parser(name)
        add_params_arguments(sub)
        sub.add_argument("--metrics", nargs="+", required=True, help="metrics.json files")
        for key in files:
            sub.add_argument(f"--{key}", required=True, help=f"the {key} file to write")
    args = parser.parse_args(argv)
    try:
        if args.command == "domain-gap":
            params = build(DomainGapParams, params_from_args(args, "domain_gap"))
            results = read_results(args.metrics, params.experiments)
            write_domain_gap(results, params.held_out, args.table)
        else:
            settings, experiments = parse_params(params_from_args(args, "tables"))
            results = read_results(args.metrics, experiments)
            if args.command == "main":
                files = (args.table, args.markdown, args.long, args.figure)
                write_main(results, settings, experiments, *files)
            elif args.command == "ablation":
                write_ablation(results, settings, experiments, args.table, args.markdown)
            else:
                write_paper_comparison(results, settings, experiments, args.table)
    except (DataError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
