"""Loading, validating and slicing the pipeline's config, and building typed settings from it.

One JSON Schema (``workflow/schemas/config.schema.yaml``, split into one file per section and
joined here) defines every key with its default; unknown keys are errors. Each stage receives
only its *slice* of the config (``SLICES``), so Snakemake's params trigger reruns exactly the
stages whose settings changed. A slice holds what changes a stage's outputs and nothing else:
execution settings (threads, loader workers, device, log and checkpoint intervals, tile batch)
reach the commands as plain options (``add_execution_arguments``), from the rules' ``threads:``
and ``resources:``, and never trigger a rerun.

Every stage command reads its slice through ``read_stage``: the slice is validated against that
stage's part of the schema (so ``--params`` written by hand is checked too, naming the key) with
the schema's defaults filled in, and ``build`` turns a validated mapping into the stage's frozen
dataclasses, field by field after their type hints. Defaults live in the schema alone.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO_ROOT / "workflow" / "schemas"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"

T = TypeVar("T")


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


@functools.cache
def _schema() -> dict[str, Any]:
    """The top-level schema with every ``$ref: <file>`` to a sibling file inlined."""

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.endswith((".yaml", ".yml")):
                return inline(read_yaml(SCHEMA_DIR / ref))
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(read_yaml(SCHEMA_DIR / "config.schema.yaml"))


def schema_at(path: str = "") -> dict[str, Any]:
    """A copy of the schema of the config node at dotted ``path`` (all of it for ""); ``*`` or a
    ``{wildcard}`` stands for any key of a mapping or any item of a list."""
    node: Any = _schema()
    for key in filter(None, path.split(".")):
        if key in node.get("properties", {}):
            node = node["properties"][key]
        elif key == "*" or key.startswith("{"):
            node = node["items"] if "items" in node else node["additionalProperties"]
        else:
            raise KeyError(f"the schema has no key {path!r}")
    return copy.deepcopy(node)


def _with_defaults(validator_class: type) -> type:
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if name in instance:
                    continue
                if "default" in sub:
                    instance[name] = copy.deepcopy(sub["default"])
                elif _defaulted(sub) and name not in schema.get("required", ()):
                    instance[name] = {}  # an omitted section takes its keys' defaults
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _defaulted(schema: Mapping[str, Any]) -> bool:
    """Whether a node can be left out: it has a default, or it is a section with none required."""
    return "default" in schema or ("properties" in schema and not schema.get("required"))


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def unshared(node: Any) -> Any:
    """A copy in which no dict or list appears twice: YAML aliases share them, and filling the
    defaults into one would fill the others."""
    if isinstance(node, Mapping):
        return {k: unshared(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [unshared(v) for v in node]
    return node


def check(value: Any, schema: Mapping[str, Any], source: str, prefix: str = "") -> Any:
    """Validate ``value`` in place against ``schema``, filling defaults; ConfigError naming the
    key path (after ``prefix``) of each of the first problems."""
    errors = sorted(_Validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            key = ".".join([prefix, *map(str, err.absolute_path)] if prefix else err.absolute_path)
            lines.append(f"  {key or '<top level>'}: {err.message}")
        raise ConfigError(f"invalid {source}:\n" + "\n".join(lines))
    return value


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it; raise ConfigError on the
    first problems found, each naming its key path."""
    fresh = unshared(config)
    datasets = fresh.get("datasets")
    if isinstance(datasets, dict):
        # null removes a dataset an earlier config file defined (see the datasets schema)
        fresh["datasets"] = {k: v for k, v in datasets.items() if v is not None}
    config.clear()
    config.update(fresh)
    check(config, _schema(), source)
    _check_references(config, source)
    return config


def _check_references(config: dict[str, Any], source: str) -> None:
    """Cross-key checks that a schema cannot express: names used in one section exist in another."""
    run, abl = config["run"], config["run"]["ablations"]
    for where, names, section in (
        ("run.experiments", run["experiments"], "experiments"),
        ("run.models", run["models"], "models"),
        ("evaluation.datasets", config["evaluation"]["datasets"], "datasets"),
        ("tables.compare_panels", config["tables"]["compare_panels"], "experiments"),
        ("run.ablations.experiments", abl["experiments"], "experiments"),
        ("run.ablations.models", abl["models"], "models"),
        ("source", [config["source"]], "datasets"),
    ):
        for name in names:
            if name not in config[section]:
                raise ConfigError(
                    f"invalid {source}: {where} names {name!r}, which is not a key of {section} "
                    f"(known: {sorted(config[section])})"
                )
    held_out = config["held_out"]
    if held_out is not None and held_out not in config["evaluation"]["datasets"]:
        raise ConfigError(
            f"invalid {source}: held_out {held_out!r} is not in evaluation.datasets (every run is "
            "evaluated on the held-out source images)"
        )
    training_schema = schema_at("training")
    for name, model in config["models"].items():
        merged = deep_merge(config["training"], model["training"])
        check(merged, training_schema, source, prefix=f"models.{name}.training")
        _check_override(model["training"], "training", source, f"models.{name}.training")
    panels = config["tables"]["motivation_panels"]["experiments"]
    for name in panels:
        if name not in config["experiments"]:
            raise ConfigError(
                f"invalid {source}: tables.motivation_panels.experiments names {name!r}, which "
                f"is not a key of experiments (known: {sorted(config['experiments'])})"
            )
    for name, experiment in config["experiments"].items():
        _check_experiment(config, name, experiment, source)
    _check_quality(config, source)
    if config["random_weights"]["enabled"]:
        _check_random_weights(config, source)


def _check_override(value: Any, section: str, source: str, where: str) -> None:
    """One override layer (``where``) against ``section``'s schema, less the excluded keys; a
    copy is checked, so no default is filled into the override itself."""
    if section == "hrda":
        schema = schema_at("models.*.hrda")
    else:
        schema = Part(section, drop=OVERRIDE_EXCLUDED[section]).schema()
        schema.pop("required", None)
    check(copy.deepcopy(value), schema, source, prefix=where)


def _check_experiment(
    config: Mapping[str, Any], name: str, experiment: Mapping[str, Any], source: str
) -> None:
    """An experiment's recipe overrides, then every run it could make (one per model)."""
    where = f"experiments.{name}"
    if experiment["ube"] and experiment["boundary_weight"]:
        raise ConfigError(
            f"invalid {source}: {where}: ube and boundary_weight both weight the cross-entropy "
            "(Eq. 8, Eq. 2); turn one off"
        )
    for section in ("training", "evaluation"):
        if section in experiment:
            _check_override(experiment[section], section, source, f"{where}.{section}")
    for model, layers in experiment.get("models", {}).items():
        if model not in config["models"]:
            raise ConfigError(
                f"invalid {source}: {where}.models names {model!r}, which is not a key of "
                f"models (known: {sorted(config['models'])})"
            )
        for section, value in layers.items():
            _check_override(value, section, source, f"{where}.models.{model}.{section}")
        if "hrda" in layers and config["models"][model]["architecture"] != "hrda":
            raise ConfigError(
                f"invalid {source}: {where}.models.{model}.hrda: models.{model} is not an hrda "
                "model"
            )
    for model in config["models"]:
        training = run_training(config, name, model)
        check(training, schema_at("training"), source, prefix=f"training of {name} x {model}")
        if training["online_rcs"] and experiment["data"] == "generated":
            raise ConfigError(
                f"invalid {source}: training.online_rcs is on for {name} x {model}, but "
                f"{where}.data is generated: online RCS draws source images"
            )


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


def load_config(*paths: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read the default config, merge the given files and overrides on top, validate."""
    files = [DEFAULT_CONFIG, *[Path(p) for p in paths if Path(p) != DEFAULT_CONFIG]]
    config: dict[str, Any] = {}
    for path in files:
        config = deep_merge(config, read_yaml(path))
    if overrides:
        config = deep_merge(config, overrides)
    return validate(config, source=" + ".join(str(p) for p in files))


# ---------------------------------------------------------------------------------------------
# Runs: an experiment x a model, with the recipe overrides merged (experiments.schema.yaml)

RECIPE_KEYS = ("training", "evaluation", "models")  # an experiment's overrides, not its flags


def _layers(config: Mapping[str, Any], experiment: str | None, model: str | None, section: str):
    """The override layers of ``section`` for a run, weakest first (absent ones left out)."""
    layers = []
    if section == "training" and model is not None:
        layers.append(config["models"][model].get("training", {}))
    if experiment is not None:
        entry = config["experiments"][experiment]
        layers.append(entry.get(section, {}) if section != "hrda" else {})
        if model is not None:
            layers.append(entry.get("models", {}).get(model, {}).get(section, {}))
    return layers


def run_training(config: Mapping[str, Any], experiment: str, model: str) -> dict[str, Any]:
    """``training`` of run (experiment, model): models.<m>.training, experiments.<e>.training and
    experiments.<e>.models.<m>.training merged over it in that order (the later wins)."""
    value = dict(config["training"])
    for layer in _layers(config, experiment, model, "training"):
        value = deep_merge(value, layer)
    return value


def run_evaluation(
    config: Mapping[str, Any], experiment: str | None = None, model: str | None = None
) -> dict[str, Any]:
    """``evaluation`` of a run: experiments.<e>.evaluation, then experiments.<e>.models.<m>
    .evaluation merged over it; without a run (a named checkpoint), the shared section."""
    value = dict(config["evaluation"])
    for layer in _layers(config, experiment, model, "evaluation"):
        value = deep_merge(value, layer)
    return value


def run_model(config: Mapping[str, Any], experiment: str, model: str) -> dict[str, Any]:
    """The models entry of a run, experiments.<e>.models.<m>.hrda merged over its hrda."""
    value = copy.deepcopy(dict(config["models"][model]))
    for layer in _layers(config, experiment, model, "hrda"):
        value["hrda"] = deep_merge(value.get("hrda", {}), layer)
    return value


def run_data(config: Mapping[str, Any], experiment: str, model: str) -> str:
    """The data list a run trains on (results/dataset/<kind>.csv): the experiment's data, except
    that a combined run with online RCS reads the whole source + the generated set."""
    data = config["experiments"][experiment]["data"]
    if data == "combined" and run_training(config, experiment, model)["online_rcs"]:
        return "combined_full"
    return data


def training_runs(config: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(experiment, model, seed) of every training run: the main grid, then Table 2's ablations."""
    r, abl = config["run"], config["run"]["ablations"]
    grid = [(e, m, s) for e in r["experiments"] for m in r["models"] for s in r["seeds"]]
    extra = [(e, m, s) for e in abl["experiments"] for m in abl["models"] for s in r["seeds"]]
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


def looks_local(source: str) -> bool:
    """Whether a weights source names a local path rather than a hub id (``name`` or
    ``namespace/name``): absolute, starting with ``.`` or ``~``, nested folders, or existing."""
    return (
        source.startswith(("/", ".", "~"))
        or source.count("/") > 1
        or Path(source).expanduser().exists()
    )


def trains_on_generated(config: Mapping[str, Any]) -> bool:
    """Whether a training run reads the generated set (so the DAG makes one)."""
    return any(config["experiments"][e]["data"] != "source" for e, _, _ in training_runs(config))


def diffusion_weight_folders(config: Mapping[str, Any]) -> dict[str, str]:
    """The local folders of ``generation.models`` (``base``, ``controlnet``) when the DAG
    generates with pretrained components; hub ids are left out."""
    models = config["generation"]["models"]
    if models["kind"] != "pretrained" or not trains_on_generated(config):
        return {}
    return {key: models[key] for key in ("base", "controlnet") if looks_local(models[key])}


def encoder_weight_folders(config: Mapping[str, Any]) -> dict[str, str]:
    """Model name -> its local ``encoder.pretrained`` folder, for the models that runs train."""
    out = {}
    for name in dict.fromkeys(m for _, m, _ in training_runs(config)):
        pretrained = config["models"][name]["encoder"].get("pretrained")
        if pretrained is not None and looks_local(pretrained):
            out[name] = pretrained
    return out


def _check_random_weights(config: Mapping[str, Any], source: str) -> None:
    """random_weights writes to the configured weight folders: they must be local paths, and
    one folder holds one kind of weights."""
    where = f"invalid {source}: random_weights.enabled is true but"
    models = config["generation"]["models"]
    diffusion = set()
    if models["kind"] == "pretrained" and trains_on_generated(config):
        for key in ("base", "controlnet"):
            if not looks_local(models[key]):
                raise ConfigError(
                    f"{where} generation.models.{key} is the hub id {models[key]!r}: name a local "
                    "folder to write the random weights to"
                )
        if models["base"] == models["controlnet"]:
            raise ConfigError(f"{where} generation.models.base and .controlnet are one folder")
        diffusion = {models["base"], models["controlnet"]}
    kinds: dict[str, tuple[str, str | None]] = {}
    for name in dict.fromkeys(m for _, m, _ in training_runs(config)):
        encoder = config["models"][name]["encoder"]
        pretrained = encoder.get("pretrained")
        if pretrained is None:
            continue
        if not looks_local(pretrained):
            raise ConfigError(
                f"{where} models.{name}.encoder.pretrained is the hub id {pretrained!r}: name a "
                "local folder to write the random weights to"
            )
        kind = (encoder["type"], encoder.get("name"))
        if kinds.setdefault(pretrained, kind) != kind:
            raise ConfigError(
                f"{where} models.{name}.encoder.pretrained {pretrained!r} is also the folder of "
                f"another encoder ({kinds[pretrained]} vs {kind})"
            )
        if pretrained in diffusion:
            raise ConfigError(f"{where} {pretrained!r} is both a diffusion and an encoder folder")


# ---------------------------------------------------------------------------------------------
# Stage slices: each key of a slice is a node of the config; its schema is that node's schema.


@dataclasses.dataclass(frozen=True)
class Part:
    """The config node at dotted ``path`` (``{name}``: from the wildcards and ``source``), or with
    ``run`` set the run's merged section (``RUN_SECTIONS``: the node with the recipe overrides of
    the wildcards' experiment and model merged over it), less the ``drop`` keys (``drop_each``:
    of each entry of a mapping of entries); ``named`` adds the path's last key as ``name``."""

    path: str
    drop: tuple[str, ...] = ()
    named: bool = False
    run: str | None = None
    drop_each: tuple[str, ...] = ()

    def value(self, config: Mapping[str, Any], names: Mapping[str, Any]) -> Any:
        if self.run is not None:
            value = RUN_SECTIONS[self.run](config, names)
        else:
            value = _lookup(config, self.path.format(**names))
        if isinstance(value, Mapping):
            value = {k: copy.deepcopy(v) for k, v in value.items() if k not in self.drop}
            if self.drop_each:
                value = {
                    k: {kk: vv for kk, vv in v.items() if kk not in self.drop_each}
                    for k, v in value.items()
                }
            if self.named:
                value = {"name": self.path.format(**names).split(".")[-1], **value}
        return value

    def schema(self) -> dict[str, Any]:
        node = schema_at(self.path)
        for key in self.drop:
            node["properties"].pop(key)
        if self.drop and "required" in node:
            node["required"] = [k for k in node["required"] if k not in self.drop]
        for key in self.drop_each:
            node["additionalProperties"]["properties"].pop(key)
        if self.named:
            node["properties"]["name"] = {"type": "string", "minLength": 1}
        return node


# The sections a run merges from the recipe overrides (a run without a model or experiment in
# the wildcards, e.g. the quality reference of a named checkpoint, takes the shared section).
RUN_SECTIONS: dict[str, Any] = {
    "training": lambda config, n: run_training(config, n["experiment"], n["model"]),
    "evaluation": lambda config, n: run_evaluation(config, n.get("experiment"), n.get("model")),
    "model": lambda config, n: run_model(config, n["experiment"], n["model"]),
}


class Seed:
    """The run's seed (a wildcard) with the schema of ``run.seeds``' items."""

    def value(self, config: Mapping[str, Any], names: Mapping[str, Any]) -> int:
        return int(names["seed"])

    def schema(self) -> dict[str, Any]:
        return schema_at("run.seeds.*")


class EncoderFolders:
    """The local ``encoder.pretrained`` folders of the trained models, each with the encoder
    ``type`` and timm ``name`` written into it (``random_weights``)."""

    def value(self, config: Mapping[str, Any], names: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for model, folder in encoder_weight_folders(config).items():
            encoder = config["models"][model]["encoder"]
            out[folder] = {"type": encoder["type"], "name": encoder.get("name")}
        return out

    def schema(self) -> dict[str, Any]:
        entry = {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "name"],
            "properties": {
                "type": schema_at("models.*.encoder.type"),
                "name": {"type": ["string", "null"]},
            },
        }
        return {"type": "object", "additionalProperties": entry}


def _lookup(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise ConfigError(f"the config has no {path}")
        node = node[key]
    return node


# Entries read on their own too (``read_part``): a model (from a checkpoint), a dataset.
MODEL_ENTRY = Part("models.{model}", named=True)
DATASET_ENTRY = Part("datasets.{dataset}", named=True)
SOURCE_ENTRY = Part("datasets.{source}", named=True)

# Settings that change no output: not in any slice, they reach the commands as options.
TRAIN_EXECUTION = ("threads", "workers", "device", "log_every", "checkpoint_every")
EXECUTION: dict[str, tuple[str, ...]] = {
    "train": tuple(f"training.{key}" for key in TRAIN_EXECUTION),
    "evaluate": ("evaluation.device", "evaluation.threads"),
    "quality": ("evaluation.device", "evaluation.threads"),
    "generate": (
        "generation.sampler.tile_batch",
        "generation.sampler.device",
        "generation.sampler.threads",
    ),
}

# Keys an override (models.<m>.training, an experiment's) may not hold: execution settings (the
# rules read them from the shared section, so an override would be ignored) and the DAG's datasets.
OVERRIDE_EXCLUDED: dict[str, tuple[str, ...]] = {
    "training": (*TRAIN_EXECUTION, "nproc"),
    "evaluation": ("datasets", "scales", "device", "threads"),
}

SLICES: dict[str, dict[str, Part | Seed | EncoderFolders]] = {
    # The prior's captions use the generation prompt's template and condition words.
    "render_demo": {"demo": Part("demo"), "prompt": Part("generation.prompt", drop=("scheme",))},
    # Not rcs.workers (the rule's threads): the process count does not change the statistics.
    "class_stats": {"source": SOURCE_ENTRY},
    "rcs_subset": {"rcs": Part("rcs", drop=("workers",))},
    "rcs_online": {"rcs": Part("rcs", drop=("workers", "subset_size", "seed"))},
    # Not jobs.shards: how the table is split later does not change it.
    "generation_jobs": {
        "rcs": Part("rcs", drop=("workers", "subset_size", "seed")),
        "jobs": Part("generation.jobs", drop=("shards",)),
        "prompt": Part("generation.prompt"),
    },
    "demo_generator": {"demo_generator": Part("generation.demo_generator")},
    # Not tile_batch (tiles per call give the same images), device nor threads.
    "generate": {
        "models": Part("generation.models"),
        "sampler": Part("generation.sampler", drop=("tile_batch", "device", "threads")),
    },
    "merge_generated": {
        "expected": Part("generation.jobs.num_images"),
        "grid_samples": Part("generation.grid_samples"),
    },
    "import_released": {
        "released": Part("generation.released"),
        "grid_samples": Part("generation.grid_samples"),
    },
    "combine": {"source": SOURCE_ENTRY},
    # Not the experiment's label (a display name: the tables' slice has it). nproc is a setting:
    # it multiplies the global batch.
    "train": {
        "experiment": Part("experiments.{experiment}", drop=("label", *RECIPE_KEYS), named=True),
        "model": Part("models.{model}", drop=("training",), named=True, run="model"),
        "training": Part("training", drop=(*TRAIN_EXECUTION, "nproc"), run="training"),
        "nproc": Part("training.nproc"),
        "seed": Seed(),
    },
    "evaluate": {
        "evaluation": Part(
            "evaluation", drop=("datasets", "scales", "device", "threads"), run="evaluation"
        ),
        "scale": Part("evaluation.scales.{dataset}"),
        "dataset": DATASET_ENTRY,
    },
    # Not the evaluation's mode, window, stride or batch size: generated crops are fed whole
    # (flexseg.quality); its Eq. 1 kernel keeps the split comparable with the evaluation's, and
    # it predicts with the evaluation's TF32 setting.
    "quality": {
        "panels": Part("quality.panels"),
        "boundary_kernel": Part("evaluation.boundary_kernel"),
        "tf32": Part("evaluation.tf32"),
    },
    # Random weights in the hub layouts (generation.random_weights); the folders are outputs.
    "random_weights_diffusion": {
        "random_weights": Part("random_weights", drop=("enabled",)),
        "controlnet_subfolder": Part("generation.models.controlnet_subfolder"),
    },
    "random_weights_encoders": {
        "random_weights": Part("random_weights", drop=("enabled",)),
        "encoders": EncoderFolders(),
    },
    # Table 1, Table 2 and the comparison with the paper (which tables are written is the
    # workflow's choice, from the config: not in any slice).
    "tables": {
        "tables": Part("tables", drop=("compare_panels", "compare_paper", "motivation_panels")),
        "experiments": Part("experiments", drop_each=RECIPE_KEYS),
    },
    "domain_gap": {
        "held_out": Part("held_out"),
        "experiments": Part("experiments", drop_each=RECIPE_KEYS),
    },
}


def stage_params(config: Mapping[str, Any], stage: str, **wildcards: Any) -> dict[str, Any]:
    """The part of ``config`` that stage ``stage`` reads (wildcards select a run or dataset)."""
    if stage not in SLICES:
        raise KeyError(f"unknown stage {stage!r}")
    names = {"source": config["source"], **wildcards}
    return {key: part.value(config, names) for key, part in SLICES[stage].items()}


def _object(parts: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The schema of a mapping of exactly ``parts`` (those without a default required)."""
    required = [key for key, schema in parts.items() if not _defaulted(schema)]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": dict(parts),
    }


@functools.cache
def stage_schema(stage: str) -> dict[str, Any]:
    """The schema of a stage's slice: the schemas of its parts' config nodes (do not modify)."""
    return _object({key: part.schema() for key, part in SLICES[stage].items()})


def read_stage(params: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """A stage's slice validated against its schema, with the schema's defaults filled in."""
    return check(unshared(params), stage_schema(stage), f"{stage} params")


def read_part(value: Any, part: Part, where: str) -> Any:
    """A copy of one config node (e.g. a ``datasets`` entry) validated against ``part``'s schema,
    defaults filled; errors name the keys after ``where`` (e.g. ``datasets.gta``)."""
    return check(unshared(value), part.schema(), where, prefix=where)


def params_json(config: Mapping[str, Any], stage: str, **wildcards: Any) -> str:
    """``stage_params`` as compact, key-sorted JSON (stable text for Snakemake's params check)."""
    return json.dumps(
        stage_params(config, stage, **wildcards), sort_keys=True, separators=(",", ":")
    )


# ---------------------------------------------------------------------------------------------
# Typed settings


def build(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """The frozen dataclass ``cls`` from a validated mapping, converted after the type hints
    (nested dataclasses, tuples, ``X | None``, ``dict[str, X]``, float). A field marked
    ``flat`` is a dataclass filled from keys of the same mapping. A key with no field is an
    error: the schema and the dataclass must list the same settings."""
    hints = typing.get_type_hints(cls)
    kwargs, used = {}, set()
    for f in dataclasses.fields(cls):
        if f.metadata.get("flat"):
            sub = {g.name for g in dataclasses.fields(hints[f.name])}
            kwargs[f.name] = build(
                hints[f.name], {k: v for k, v in data.items() if k in sub}, where
            )
            used |= sub
        elif f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}".lstrip("."))
            used.add(f.name)
    unknown = sorted(set(data) - used)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: {cls.__name__} has no setting {unknown}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return None if value is None else _convert(inner[0], value, where)
    if origin is tuple:
        items = args[:1] * len(value) if args[-1:] == (Ellipsis,) else args
        return tuple(_convert(a, v, where) for a, v in zip(items, value, strict=True))
    if origin is dict and dataclasses.is_dataclass(args[1]):
        # Entries by name (experiments, datasets) get their key as ``name``.
        return {k: build(args[1], {"name": k, **v}, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        return float(value)
    return copy.deepcopy(value)


def flat() -> Any:
    """A ``build`` field whose dataclass is filled from keys of the enclosing mapping."""
    return dataclasses.field(metadata={"flat": True})


@dataclasses.dataclass(frozen=True)
class Experiment:
    """An entry of ``experiments``: what a run trains on and which FLEX-Seg parts are on."""

    name: str
    data: str
    gap: bool
    ube: bool
    has: bool
    boundary_weight: bool = False
    label: str | None = None  # not in the training slice (a display name)

    @property
    def title(self) -> str:
        """The label, or the experiment's name when it has none."""
        return self.label or self.name


def experiment_entry(config: Mapping[str, Any], name: str) -> Experiment:
    """The typed flags of ``experiments.<name>`` (its recipe overrides left out)."""
    entry = config["experiments"][name]
    return build(
        Experiment, {"name": name, **{k: v for k, v in entry.items() if k not in RECIPE_KEYS}}
    )


def experiment_titles(config: Mapping[str, Any], names: list[str]) -> list[str]:
    return [experiment_entry(config, n).title for n in names]


# ---------------------------------------------------------------------------------------------
# Command lines


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
    """The stage's validated slice from ``--params`` or ``--config``."""
    if args.params is not None:
        return read_stage(read_params(args.params), stage)
    return read_stage(stage_params(load_config(*args.config), stage, **wildcards), stage)


def add_execution_arguments(parser: Any, stage: str) -> None:
    """An option ``--key`` per execution setting of ``stage`` (``EXECUTION``); unset, it takes
    the value of ``--config`` or the schema's default."""
    for path in EXECUTION[stage]:
        key, node = path.rsplit(".", 1)[-1], schema_at(path)
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            type=int if node.get("type") == "integer" else str,
            dest=key,
            help=f"config {path} (default {node['default']}); changes no output",
        )


def read_execution(stage: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The execution settings of ``stage`` by key (``threads``, ``device``, ...), checked against
    the schema; the schema's default for those not given."""
    parts = {path.rsplit(".", 1)[-1]: schema_at(path) for path in EXECUTION[stage]}
    return check(unshared(values), _object(parts), f"{stage} options")


def execution_values(config: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The execution settings of ``stage`` in a full config, by key."""
    return {path.rsplit(".", 1)[-1]: _lookup(config, path) for path in EXECUTION[stage]}


def execution_from_args(args: Any, stage: str) -> dict[str, Any]:
    """The execution settings given as options, else from ``--config``, else the defaults."""
    keys = [path.rsplit(".", 1)[-1] for path in EXECUTION[stage]]
    values = execution_values(load_config(*args.config), stage) if args.params is None else {}
    values.update({k: getattr(args, k) for k in keys if getattr(args, k) is not None})
    return read_execution(stage, values)
