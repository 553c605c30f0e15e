# Helpers shared by the rules: config validation, stage params, the lists of runs and datasets.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from flexseg.config import ConfigError, params_json, validate

try:
    validate(config, source="the Snakemake config")
except ConfigError as err:
    raise WorkflowError(str(err)) from None


wildcard_constraints:
    experiment=r"[A-Za-z0-9_\-]+",
    model=r"[A-Za-z0-9_\-]+",
    seed=r"\d+",
    dataset=r"[A-Za-z0-9_\-]+",
    shard=r"\d{3}",


PY = "python -m"
DEMO = config["mode"] == "demo"
DEMO_WORLD = f"{config['demo']['root']}/world.json"
SHARDS = [f"{k:03d}" for k in range(config["generation"]["jobs"]["shards"])]
DEMO_MODEL = "results/generation/demo_model"


def stage(name):
    """The params function of a rule: its config slice as JSON (what Snakemake compares)."""
    return lambda wildcards: params_json(config, name, **dict(wildcards.items()))


def demo_world():
    """In demo mode every dataset comes from the rendered world; in real mode from disk."""
    return [DEMO_WORLD] if DEMO else []


def demo_models():
    if config["generation"]["models"]["kind"] == "demo":
        return {"prior": f"{DEMO_MODEL}/prior", "controlnet": f"{DEMO_MODEL}/controlnet"}
    return {}


def runs():
    """(experiment, model, seed) of every training run."""
    r = config["run"]
    return [(e, m, s) for e in r["experiments"] for m in r["models"] for s in r["seeds"]]


def run_dir(e, m, s):
    return f"results/train/{e}/{m}/seed{s}"


def data_list(wildcards):
    kind = config["experiments"][wildcards.experiment]["data"]
    return f"results/dataset/{kind}.csv"


def all_metrics():
    return [
        f"results/evaluate/{e}/{m}/seed{s}/{d}/metrics.json"
        for (e, m, s) in runs()
        for d in config["evaluation"]["datasets"]
    ]


def final_outputs():
    out = ["results/table.csv", "results/table.md", "results/tables/long.csv"]
    if DEMO:
        out.append("results/demo/world_grid.png")
    if any(config["experiments"][e]["data"] != "source" for e in config["run"]["experiments"]):
        out.append("results/generation/samples_grid.png")
    return out
