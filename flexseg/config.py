"""Loading, validating and slicing the pipeline's config.

One JSON Schema (``workflow/schemas/config.schema.yaml``, split into one file per section and
joined here) defines every key with its default; unknown keys are errors. Each stage receives
only its *slice* of the config (``stage_params``), so Snakemake's params trigger reruns exactly
the stages whose settings changed. The same slicing serves the command-line entry points, which
accept either ``--params`` (a slice as JSON text or a file) or ``--config`` (the full config).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO_ROOT / "workflow" / "schemas"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


class ConfigError(ValueError):
    """An invalid config; the message names the key and the file."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``; dicts merge recursively, other values replace."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def load_schema(schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    """The top-level schema with every ``$ref: <file>`` to a sibling file inlined."""
    top = read_yaml(schema_dir / "config.schema.yaml")

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.endswith((".yaml", ".yml")):
                return inline(read_yaml(schema_dir / ref))
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(top)


def _with_defaults(validator_class: type) -> type:
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it; raise ConfigError on the
    first problems found, each naming its key path."""
    schema = load_schema()
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"  {key}: {err.message}")
        raise ConfigError(f"invalid {source}:\n" + "\n".join(lines))
    _check_references(config, source)
    return config


def _check_references(config: dict[str, Any], source: str) -> None:
    """Cross-key checks that a schema cannot express: names used in one section exist in another."""
    run = config["run"]
    for name in run["experiments"]:
        if name not in config["experiments"]:
            raise ConfigError(
                f"invalid {source}: run.experiments names {name!r}, which is not a key of "
                f"experiments (known: {sorted(config['experiments'])})"
            )
    for name in run["models"]:
        if name not in config["models"]:
            raise ConfigError(
                f"invalid {source}: run.models names {name!r}, which is not a key of models "
                f"(known: {sorted(config['models'])})"
            )
    for name in config["evaluation"]["datasets"]:
        if name not in config["datasets"]:
            raise ConfigError(
                f"invalid {source}: evaluation.datasets names {name!r}, which is not a key of "
                f"datasets (known: {sorted(config['datasets'])})"
            )
    for name in config["tables"].get("compare_panels", []):
        if name not in config["experiments"]:
            raise ConfigError(
                f"invalid {source}: tables.compare_panels names {name!r}, which is not a key of "
                f"experiments (known: {sorted(config['experiments'])})"
            )
    for name in config["run"].get("ablations", {}).get("experiments", []):
        if name not in config["experiments"]:
            raise ConfigError(f"invalid {source}: run.ablations.experiments names unknown {name!r}")
    for name in config["run"].get("ablations", {}).get("models", []):
        if name not in config["models"]:
            raise ConfigError(f"invalid {source}: run.ablations.models names unknown {name!r}")
    training_schema = load_schema()["properties"]["training"]
    for name, model in config["models"].items():
        merged = deep_merge(config["training"], model.get("training", {}))
        errors = list(jsonschema.Draft202012Validator(training_schema).iter_errors(merged))
        if errors:
            key = ".".join(str(p) for p in errors[0].absolute_path) or "<section>"
            raise ConfigError(
                f"invalid {source}: models.{name}.training.{key}: {errors[0].message}"
            )
    if config["source"] not in config["datasets"]:
        raise ConfigError(f"invalid {source}: source {config['source']!r} is not a key of datasets")
    _check_quality(config, source)


def _check_quality(config: dict[str, Any], source: str) -> None:
    q = config["quality"]
    experiment = config["experiments"].get(q["experiment"])
    if experiment is None:
        raise ConfigError(
            f"invalid {source}: quality.experiment names {q['experiment']!r}, which is not a key "
            f"of experiments (known: {sorted(config['experiments'])})"
        )
    if experiment["data"] != "source":
        raise ConfigError(
            f"invalid {source}: quality.experiment {q['experiment']!r} trains on "
            f"{experiment['data']!r} data; the generated set is scored by a source-only run"
        )
    if q["model"] is not None and q["model"] not in config["models"]:
        raise ConfigError(f"invalid {source}: quality.model names unknown {q['model']!r}")
    ref = q["reference"]
    if ref is not None and ref not in config["datasets"]:
        raise ConfigError(f"invalid {source}: quality.reference names unknown dataset {ref!r}")
    if ref is not None and ref not in config["evaluation"]["scales"]:
        raise ConfigError(
            f"invalid {source}: quality.reference {ref!r} has no evaluation.scales entry"
        )


def load_config(*paths: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read the default config, merge the given files and overrides on top, validate."""
    files = [DEFAULT_CONFIG, *[Path(p) for p in paths if Path(p) != DEFAULT_CONFIG]]
    config: dict[str, Any] = {}
    for path in files:
        config = deep_merge(config, read_yaml(path))
    if overrides:
        config = deep_merge(config, overrides)
    return validate(config, source=" + ".join(str(p) for p in files))


def training_runs(config: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(experiment, model, seed) of every training run: the main grid, then Table 2's ablations."""
    r = config["run"]
    grid = [(e, m, s) for e in r["experiments"] for m in r["models"] for s in r["seeds"]]
    abl = r.get("ablations", {})
    extra = [
        (e, m, s)
        for e in abl.get("experiments", [])
        for m in abl.get("models", [])
        for s in r["seeds"]
    ]
    return grid + [run for run in extra if run not in grid]


def quality_run(config: Mapping[str, Any]) -> tuple[str, str, int] | None:
    """The run whose model.pt scores the generated set (``quality``: its experiment, model or
    the first of run.models, seed or the first of run.seeds); None when quality.checkpoint
    names a model file instead."""
    q = config["quality"]
    if q["checkpoint"] is not None:
        return None
    model = q["model"] if q["model"] is not None else config["run"]["models"][0]
    seed = q["seed"] if q["seed"] is not None else config["run"]["seeds"][0]
    return q["experiment"], model, int(seed)


# ---------------------------------------------------------------------------------------------
# Stage slices. Each returns plain JSON-able data; nothing outside the slice reaches the stage.


def dataset_entry(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {"name": name, **config["datasets"][name]}


def stage_params(config: Mapping[str, Any], stage: str, **wildcards: Any) -> dict[str, Any]:
    """The part of ``config`` that stage ``stage`` reads (wildcards select a run or dataset)."""
    c = config
    if stage == "render_demo":
        # The prior's captions use the generation prompt's template and condition words.
        return {"demo": c["demo"], "prompt": c["generation"]["prompt"]}
    if stage == "class_stats":
        # Not rcs.workers (passed as the rule's threads): the process count does not change the stats.
        return {"source": dataset_entry(c, c["source"])}
    if stage == "rcs_subset":
        # Not rcs.workers: the process count does not change the subset.
        keys = ("temperature", "min_pixels", "subset_size", "seed")
        return {"rcs": {k: c["rcs"][k] for k in keys}}
    if stage == "generation_jobs":
        # Not jobs.shards: how the table is split later does not change it.
        jobs = {k: v for k, v in c["generation"]["jobs"].items() if k != "shards"}
        rcs = {k: c["rcs"][k] for k in ("temperature", "min_pixels")}
        return {"rcs": rcs, "jobs": jobs, "prompt": c["generation"]["prompt"]}
    if stage == "demo_generator":
        return {"demo_generator": c["generation"]["demo_generator"], "demo": c["demo"]}
    if stage == "generate":
        return {
            "models": c["generation"]["models"],
            "sampler": c["generation"]["sampler"],
            "source": dataset_entry(c, c["source"]),
            "prompt": c["generation"]["prompt"],
        }
    if stage == "import_released":
        return {
            "released": c["generation"]["released"],
            "grid_samples": c["generation"]["grid_samples"],
        }
    if stage == "merge_generated":
        return {
            "expected": c["generation"]["jobs"]["num_images"],
            "grid_samples": c["generation"]["grid_samples"],
        }
    if stage == "combine":
        return {"source": dataset_entry(c, c["source"])}
    if stage == "train":
        exp = wildcards["experiment"]
        model = wildcards["model"]
        model_cfg = {k: v for k, v in c["models"][model].items() if k != "training"}
        return {
            "experiment": {"name": exp, **c["experiments"][exp]},
            "model": {"name": model, **model_cfg},
            "training": deep_merge(c["training"], c["models"][model].get("training", {})),
            "seed": int(wildcards["seed"]),
        }
    if stage == "evaluate":
        name = wildcards["dataset"]
        evaluation = {k: v for k, v in c["evaluation"].items() if k not in ("datasets", "scales")}
        if name not in c["evaluation"]["scales"]:
            raise ConfigError(f"evaluation.scales has no entry for dataset {name!r}")
        evaluation["scale"] = c["evaluation"]["scales"][name]
        return {"evaluation": evaluation, "dataset": dataset_entry(c, name)}
    if stage == "quality":
        # Not the evaluation's mode, window, stride or batch size: generated crops are fed whole
        # (flexseg.quality); its Eq. 1 kernel keeps the split comparable with the evaluation's.
        evaluation = c["evaluation"]
        return {
            "panels": c["quality"]["panels"],
            "boundary_kernel": evaluation["boundary_kernel"],
            "device": evaluation["device"],
        }
    if stage == "tables":
        tables = {k: v for k, v in c["tables"].items() if k != "compare_panels"}
        return {"tables": tables, "experiments": c["experiments"]}
    if stage == "compare_panels":
        names = c["tables"]["compare_panels"]
        return {"titles": [c["experiments"][e].get("label", e) for e in names]}
    raise KeyError(f"unknown stage {stage!r}")


def params_json(config: Mapping[str, Any], stage: str, **wildcards: Any) -> str:
    """``stage_params`` as compact, key-sorted JSON (stable text for Snakemake's params check)."""
    return json.dumps(
        stage_params(config, stage, **wildcards), sort_keys=True, separators=(",", ":")
    )


def read_params(text_or_path: str) -> dict[str, Any]:
    """A stage slice from inline JSON text or from a JSON/YAML file."""
    stripped = text_or_path.strip()
    if stripped.startswith("{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--params is not valid JSON: {err}") from err
    path = Path(text_or_path)
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"params file not found: {path}")
        return json.loads(path.read_text())
    return read_yaml(path)


def add_params_arguments(parser: Any) -> None:
    """The two ways a stage command receives its settings (one is required)."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--params",
        help="this stage's slice of the config: JSON text or a .json/.yaml file "
        "(what the Snakemake rule passes)",
    )
    group.add_argument(
        "--config",
        nargs="+",
        metavar="YAML",
        help="full config file(s), merged over config/config.yaml and validated; "
        "the stage's slice is taken from it",
    )


def params_from_args(args: Any, stage: str, **wildcards: Any) -> dict[str, Any]:
    if args.params is not None:
        return read_params(args.params)
    return stage_params(load_config(*args.config), stage, **wildcards)
