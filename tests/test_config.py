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
    run_data,
    run_evaluation,
    run_model,
    run_training,
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
    assert read_execution("evaluate", {}) == {
        "device": schema_at("evaluation.device")["default"],
        "threads": schema_at("evaluation.threads")["default"],
    }
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


# ---------------------------------------------------------------------------------------------
# Recipes: an experiment's and a model's overrides, and which one wins


def _with_overrides(**layers) -> dict:
    """The demo config with crop_size set at each of the named layers (values 16, 24, 40, 48)."""
    overrides: dict = {"models": {"tiny": {"training": {}}}, "experiments": {"flexseg": {}}}
    if "model" in layers:
        overrides["models"]["tiny"]["training"]["crop_size"] = layers["model"]
    if "experiment" in layers:
        overrides["experiments"]["flexseg"]["training"] = {"crop_size": layers["experiment"]}
    if "pair" in layers:
        overrides["experiments"]["flexseg"]["models"] = {
            "tiny": {"training": {"crop_size": layers["pair"]}}
        }
    return load_config(overrides=overrides)


@pytest.mark.parametrize(
    "layers, expected",
    [
        ({}, 128),
        ({"model": 24}, 24),
        ({"model": 24, "experiment": 40}, 40),
        ({"model": 24, "experiment": 40, "pair": 48}, 48),
        ({"experiment": 40, "pair": 48}, 48),
    ],
)
def test_override_precedence(layers, expected):
    """training < models.<m>.training < experiments.<e>.training < experiments.<e>.models.<m>."""
    config = _with_overrides(**layers)
    train = stage_params(config, "train", **WILDCARDS)
    assert train["training"]["crop_size"] == expected
    # other experiments keep the model's (or the shared) value
    other = stage_params(config, "train", experiment="dginstyle", model="tiny", seed=0)
    assert other["training"]["crop_size"] == layers.get("model", 128)
    assert "training" not in train["experiment"] and "models" not in train["experiment"]


def test_evaluation_and_hrda_overrides_reach_their_slices():
    hrda = {
        "architecture": "hrda",
        "encoder": {"type": "mit"},
        "head": {},
        "hrda": {"detail_crop": 64},
    }
    config = load_config(
        overrides={
            "models": {"h": hrda},
            "experiments": {
                "hrda_dg": {
                    "models": {"h": {"evaluation": {"mode": "slide"}, "hrda": {"detail_crop": 32}}}
                }
            },
        }
    )
    names = {"experiment": "hrda_dg", "seed": 0, "dataset": "acdc"}
    assert stage_params(config, "evaluate", model="tiny", **names)["evaluation"]["mode"] == "whole"
    assert stage_params(config, "evaluate", model="h", **names)["evaluation"]["mode"] == "slide"
    assert stage_params(config, "evaluate", **WILDCARDS)["evaluation"]["mode"] == "slide"
    # a run without an experiment (the quality reference of a named checkpoint): shared section
    assert stage_params(config, "evaluate", dataset="acdc")["evaluation"]["mode"] == "slide"
    train = stage_params(config, "train", experiment="hrda_dg", model="h", seed=0)
    assert train["model"]["hrda"]["detail_crop"] == 32
    plain = stage_params(config, "train", experiment="flexseg", model="h", seed=0)
    assert plain["model"]["hrda"]["detail_crop"] == 64
    assert train["training"]["online_rcs"] and not plain["training"]["online_rcs"]
    assert run_data(config, "hrda_dg", "h") == "source"
    assert run_data(config, "flexseg", "h") == "combined"
    online = load_config(overrides={"experiments": {"flexseg": {"training": {"online_rcs": True}}}})
    assert run_data(online, "flexseg", "tiny") == "combined_full"


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"experiments": {"flexseg": {"training": {"threads": 2}}}}, "flexseg.training.*threads"),
        ({"models": {"tiny": {"training": {"workers": 2}}}}, "tiny.training.*workers"),
        ({"experiments": {"flexseg": {"evaluation": {"datasets": ["acdc"]}}}}, "datasets"),
        ({"experiments": {"flexseg": {"training": {"crop_sise": 2}}}}, "crop_sise"),
        (
            {"experiments": {"flexseg": {"models": {"tiny": {"training": {"lr": "x"}}}}}},
            r"experiments.flexseg.models.tiny.training.lr",
        ),
        ({"experiments": {"flexseg": {"models": {"nonesuch": {}}}}}, "nonesuch"),
        (
            {"experiments": {"flexseg": {"models": {"tiny": {"hrda": {"detail_crop": 32}}}}}},
            "not an hrda model",
        ),
        ({"experiments": {"flexseg": {"boundary_weight": True}}}, "ube and boundary_weight"),
        (
            {"experiments": {"generated_only": {"training": {"online_rcs": True}}}},
            "online RCS draws source images",
        ),
        ({"tables": {"motivation_panels": {"experiments": ["nope"]}}}, "motivation_panels"),
    ],
)
def test_bad_overrides_are_named(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=overrides)


def test_the_paper_configs_give_each_row_its_anchor_recipe():
    config = load_config("config/paper/gta_to_five.yaml")

    def recipe(e, m):
        t, ev, model = (
            run_training(config, e, m),
            run_evaluation(config, e, m),
            run_model(config, e, m),
        )
        crop = model["hrda"]["detail_crop"] if model["architecture"] == "hrda" else None
        return (run_data(config, e, m), t["feature_distance"]["enabled"], ev["mode"], crop)

    # HRDA dg exp. 50: GTA only, online RCS, FD; DAFormer whole-image, HRDA 384 by slide
    assert recipe("hrda_dg", "daformer_mitb5") == ("source", True, "whole", None)
    assert recipe("hrda_dg", "hrda_mitb5") == ("source", True, "slide", 384)
    assert recipe("hrda_dg", "hrda_r101") == ("source", True, "slide", 384)
    assert run_training(config, "hrda_dg", "hrda_mitb5")["online_rcs"]
    assert run_training(config, "hrda_dg", "daformer_mitb5")["online_rcs"]
    # DGInStyle-SegModel exp. 60 (DAFormer: the subset), 61 (HRDA MiT-B5), 70 (R101, FD on)
    assert recipe("dginstyle", "daformer_mitb5") == ("combined", True, "slide", None)
    assert not run_training(config, "dginstyle", "daformer_mitb5")["online_rcs"]
    assert recipe("dginstyle", "hrda_mitb5") == ("combined_full", True, "slide", 512)
    assert recipe("flexseg", "hrda_mitb5") == ("combined_full", True, "slide", 512)
    assert recipe("dginstyle", "hrda_r101") == ("combined_full", True, "slide", 512)
    # source_only: dginstyle's recipe without the generated set
    assert recipe("source_only", "hrda_mitb5") == ("source", True, "slide", 512)
    assert recipe("source_only", "daformer_mitb5") == ("source", True, "slide", None)
    assert run_training(config, "source_only", "hrda_r101")["online_rcs"]
    assert run_training(config, "dginstyle", "daformer_mitb5")["ce_reduction"] == "all"
    assert run_training(config, "dginstyle", "daformer_mitb5")["rcs_recrop_tries"] == 11
    # SHADE where the anchors ran it: exp. 50 (every model) and exp. 61's code (HRDA MiT-B5)
    shade = {
        (e, m): run_training(config, e, m)["shade"]["enabled"]
        for e in ("hrda_dg", "source_only", "dginstyle", "flexseg")
        for m in ("daformer_mitb5", "hrda_mitb5", "hrda_r101")
    }
    assert {k for k, on in shade.items() if on} == {
        ("hrda_dg", "daformer_mitb5"), ("hrda_dg", "hrda_mitb5"), ("hrda_dg", "hrda_r101"),
        ("source_only", "hrda_mitb5"), ("dginstyle", "hrda_mitb5"), ("flexseg", "hrda_mitb5"),
    }  # fmt: skip
    assert run_training(config, "hrda_dg", "hrda_mitb5")["shade"]["basis_styles"] == 64
    # exp. 61 as its comment reads: the overlay turns SHADE off for HRDA MiT-B5's rows
    comment = load_config("config/paper/gta_to_five.yaml", "config/paper/hrda_without_shade.yaml")
    assert not run_training(comment, "flexseg", "hrda_mitb5")["shade"]["enabled"]
    assert run_training(comment, "hrda_dg", "hrda_mitb5")["shade"]["enabled"]
    assert not run_training(load_config(), "flexseg", "tiny")["shade"]["enabled"]
    # the demo keeps its old CE and re-crop count as config values
    demo = load_config()
    assert run_training(demo, "flexseg", "tiny")["ce_reduction"] == "valid"
    assert run_training(demo, "flexseg", "tiny")["rcs_recrop_tries"] == 10
