"""The config: config.yaml against the schema's defaults, each stage's slice against its schema and
its typed settings, hand-written params checked with the key named."""

from __future__ import annotations

import typing

import pytest

from flexseg.config import (
    DEFAULT_CONFIG,
    EXECUTION,
    SLICES,
    ConfigError,
    build,
    execution_values,
    load_config,
    read_execution,
    read_stage,
    read_yaml,
    schema_at,
    stage_params,
    stage_schema,
)
from flexseg.data.rcs import SubsetSettings
from flexseg.data.readers import DatasetEntry
from flexseg.evaluate import EvalSettings
from flexseg.models import parse_model_config
from flexseg.tables import TablesParams
from flexseg.train import Execution, RunSpec
from generation.demo.settings import DemoSettings
from generation.jobs import JobSettings
from generation.sampler import SamplerSettings

WILDCARDS = {"experiment": "flexseg", "model": "tiny", "seed": 0, "dataset": "acdc"}


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config()


def leaves(node: dict, path: str = "") -> typing.Iterator[tuple[str, typing.Any]]:
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{path}{key}.")
        else:
            yield f"{path}{key}", value


def test_config_yaml_states_no_default():
    """config.yaml holds what has no default and the demo's departures from the defaults, so the
    two can never disagree: a value equal to its default belongs to the schema alone."""
    restated = []
    for path, value in leaves(read_yaml(DEFAULT_CONFIG)):
        try:
            node = schema_at(path)
        except KeyError:
            continue  # under a free-form mapping (a SegformerConfig field)
        if "default" in node and node["default"] == value:
            restated.append(path)
    assert restated == []
    assert "demo_generator" not in read_yaml(DEFAULT_CONFIG).get("generation", {})


def test_execution_settings_are_in_no_slice():
    for stage, paths in EXECUTION.items():
        for key in (path.rsplit(".", 1)[-1] for path in paths):
            for part in stage_schema(stage)["properties"].values():
                assert key not in part.get("properties", {}), (stage, key)
    assert read_execution("evaluate", {}) == {"device": schema_at("evaluation.device")["default"]}
    with pytest.raises(
        ConfigError, match="train options:\n  <top level>: Additional.*'tile_batch'"
    ):
        read_execution("train", {"tile_batch": 4})


@pytest.mark.parametrize("stage", sorted(SLICES))
def test_each_slice_validates_and_a_typo_is_named(config, stage):
    params = stage_params(config, stage, **WILDCARDS)
    assert read_stage(params, stage) == params
    with pytest.raises(ConfigError, match=r"<top level>: Additional properties.*'colour'"):
        read_stage({**params, "colour": 1}, stage)
    for part in (k for k, v in params.items() if isinstance(v, dict)):
        with pytest.raises(
            ConfigError,
            match=rf"{part}(: Additional properties.*'colour'|\.colour: 1 is not of type 'object')",
        ):
            read_stage({**params, part: {**params[part], "colour": 1}}, stage)


def test_typed_settings_build_from_the_default_slices(config):
    """Each stage's dataclasses take every key of its validated slice (``build`` refuses a key
    without a field, the constructor a field without a key)."""
    p = {stage: stage_params(config, stage, **WILDCARDS) for stage in SLICES}
    spec = build(RunSpec, p["train"])
    assert spec.training.transforms.crop_size == config["training"]["crop_size"]
    assert spec.experiment.label is None and spec.nproc == config["training"]["nproc"]
    assert parse_model_config(p["train"]["model"]).head.dilations == (1, 6, 12)
    assert len(DatasetEntry.read(p["evaluate"]["dataset"]).conditions) == 4  # acdc
    settings = EvalSettings.from_params(p["evaluate"]["evaluation"], p["evaluate"]["scale"], 2.0)
    assert settings.inference.window == 2 * config["evaluation"]["window"]
    assert build(DemoSettings, p["demo_generator"]["demo_generator"]).vae.steps > 0
    assert build(JobSettings, p["generation_jobs"]).jobs.conditions["standard"] > 0
    assert build(SubsetSettings, p["rcs_subset"]["rcs"]).subset_size == config["rcs"]["subset_size"]
    assert build(TablesParams, p["tables"]).experiments["flexseg"].title == "++ FLEX-Seg"
    sampler = build(SamplerSettings, {**p["generate"]["sampler"], "tile_batch": 1})
    assert sampler.steps == config["generation"]["sampler"]["steps"]
    assert build(Execution, execution_values(config, "train")).threads >= 1
    with pytest.raises(ConfigError, match="has no setting"):
        build(SubsetSettings, {**p["rcs_subset"]["rcs"], "workers": 1})
