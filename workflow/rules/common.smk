# Helpers shared by the rules: config validation, stage params, the lists of runs and datasets.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from flexseg.config import ConfigError, execution_values, experiment_titles, params_json
from flexseg.config import quality_run, run_data, run_training, training_runs, validate
from flexseg.config import diffusion_weight_folders, encoder_weight_folders, trains_on_generated


# The jobs' `python` is the one running Snakemake (the project's .venv): its folder goes first on
# the PATH that jobs inherit (and that cluster jobs are handed), so `.venv/bin/snakemake ...`
# works without activating anything.
envvars:
    "PATH",


_job_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
os.environ["PATH"] = _job_path

try:
    validate(config, source="the Snakemake config")
except ConfigError as err:
    raise WorkflowError(str(err)) from None


# At most as many CPU-bound jobs at once as the machine has cores (whatever --cores says), so the
# demo's torch jobs do not oversubscribe a small machine; a cluster profile raises it with --resources.
workflow.global_resources.setdefault("cpu_load", os.cpu_count() or 1)


include: "gpus.smk"


wildcard_constraints:
    experiment=r"[A-Za-z0-9_\-]+",
    model=r"[A-Za-z0-9_\-]+",
    seed=r"\d+",
    dataset=r"[A-Za-z0-9_\-]+",
    shard=r"\d{3}",


DEMO = config["mode"] == "demo"
DEMO_WORLD = f"{config['demo']['root']}/world.json"
SHARDS = [f"{k:03d}" for k in range(config["generation"]["jobs"]["shards"])]
DEMO_MODEL = "results/generation/demo_model"
RELEASED = config["generation"]["released"]
RANDOM_WEIGHTS = config["random_weights"]["enabled"]
# Local weight folders the rules load from (hub ids are fetched by the jobs themselves).
DIFFUSION_WEIGHTS = diffusion_weight_folders(config)
ENCODER_WEIGHTS = encoder_weight_folders(config)


def cpu_load(wildcards):
    """One unit per CPU-bound job (a job asking for all units would starve behind 1-unit jobs)."""
    return 1


def stage(name):
    """The params function of a rule: its config slice as JSON (what Snakemake compares)."""
    return lambda wildcards: params_json(config, name, **dict(wildcards.items()))


def execution(name):
    """A stage's execution settings (threads aside), as resources: they change no output, so
    unlike params they never trigger a rerun."""
    return {k: v for k, v in execution_values(config, name).items() if k != "threads"}


def demo_world():
    """In demo mode every dataset comes from the rendered world; in real mode from disk."""
    return [DEMO_WORLD] if DEMO else []


def demo_models():
    if config["generation"]["models"]["kind"] == "demo":
        return {"prior": f"{DEMO_MODEL}/prior", "controlnet": f"{DEMO_MODEL}/controlnet"}
    return {}


def diffusion_weights():
    """generation.models' local folders: inputs of the shards (made by random_weights_diffusion
    under random_weights, else they must exist)."""
    return dict(DIFFUSION_WEIGHTS)


def encoder_weights(wildcards):
    """The model's local encoder.pretrained folder, an input of its training runs."""
    folder = ENCODER_WEIGHTS.get(wildcards.model)
    return [folder] if folder is not None else []


def runs():
    return training_runs(config)


def uses_generated():
    """Whether a run trains on the generated set (so the DAG makes one)."""
    return trains_on_generated(config)


def check_dataset_roots():
    """Real mode: every dataset the DAG reads must exist now, not hours later in a job."""
    if DEMO:
        return
    used = {config["source"], *config["evaluation"]["datasets"]}
    if config["quality"]["enabled"] and config["quality"]["reference"]:
        used.add(config["quality"]["reference"])
    for name in sorted(used):
        root = Path(config["datasets"][name]["root"])
        if not root.is_dir():
            raise WorkflowError(f"datasets.{name}.root: folder not found: {root}")


check_dataset_roots()


def check_released_root():
    """generation.released: its folders must exist now, not when the import job runs."""
    if RELEASED is None:
        return
    for sub in ("images", "labels"):
        folder = Path(RELEASED["root"]) / sub
        if not folder.is_dir():
            raise WorkflowError(f"generation.released.root: folder not found: {folder}")


check_released_root()


def run_dir(e, m, s):
    return f"results/train/{e}/{m}/seed{s}"


def train_inputs(wildcards):
    """A run's data list (flexseg.config.run_data) and, with online RCS, the RCS table."""
    e, m = wildcards.experiment, wildcards.model
    inputs = {"data": f"results/dataset/{run_data(config, e, m)}.csv"}
    if run_training(config, e, m)["online_rcs"]:
        inputs["online_rcs"] = "results/rcs/online_rcs.json"
    return inputs


def all_metrics():
    return [
        f"results/evaluate/{e}/{m}/seed{s}/{d}/metrics.json"
        for (e, m, s) in runs()
        for d in config["evaluation"]["datasets"]
    ]


def compare_figures():
    """results/figures/compare/<model>/<dataset>.png wherever every compared run exists."""
    names = config["tables"]["compare_panels"]
    seed = config["run"]["seeds"][0]
    have = set(runs())
    models = dict.fromkeys(m for _, m, _ in runs())
    return [
        f"results/figures/compare/{m}/{d}.png"
        for m in models
        for d in config["evaluation"]["datasets"]
        if names and all((e, m, seed) in have for e in names)
    ]


def motivation_figures():
    """results/figures/motivation/<model>.png (the paper's Fig. 2) wherever a generated set is
    made and every run tables.motivation_panels names exists."""
    names = config["tables"]["motivation_panels"]["experiments"]
    seed = config["run"]["seeds"][0]
    have = set(runs())
    models = dict.fromkeys(m for _, m, _ in runs())
    if not names or not uses_generated():
        return []
    return [
        f"results/figures/motivation/{m}.png"
        for m in models
        if all((e, m, seed) in have for e in names)
    ]


# The generated set's quality report (workflow/rules/quality.smk).
QUALITY_DIR = "results/generation/quality"


def quality_checkpoint():
    """quality.checkpoint, else the model.pt of the run quality names (flexseg.config.quality_run)."""
    path = config["quality"]["checkpoint"]
    return path if path is not None else f"{run_dir(*quality_run(config))}/model.pt"


def quality_run_names():
    """The quality run's experiment and model (its evaluation overrides), {} for a named file."""
    run = quality_run(config)
    return {} if run is None else {"experiment": run[0], "model": run[1]}


def quality_reference():
    """The reference's metrics.json ([] without quality.reference): the evaluation's own for the
    run (evaluated there anyway when the dataset is in evaluation.datasets), or quality_reference's
    for a checkpoint named in the config."""
    name = config["quality"]["reference"]
    if name is None:
        return []
    run = quality_run(config)
    if run is None:
        return [f"{QUALITY_DIR}/reference/metrics.json"]
    e, m, s = run
    return [f"results/evaluate/{e}/{m}/seed{s}/{name}/metrics.json"]


def quality_outputs():
    """The report whenever the DAG makes a generated set and the scoring run (or file) exists."""
    q = config["quality"]
    if not q["enabled"] or not uses_generated():
        return []
    run = quality_run(config)
    if run is not None and run not in runs():
        if q["model"] is not None or q["seed"] is not None:
            raise WorkflowError(
                f"quality.model / quality.seed name the run {run}, which run does not train"
            )
        return []
    return ["results/generation/quality.csv", "results/generation/quality.png"]


def final_outputs():
    out = ["results/table.csv", "results/table.md", "results/tables/long.csv", *compare_figures()]
    out += motivation_figures()
    if DEMO:
        out.append("results/demo/world_grid.png")
    if uses_generated():
        out.append("results/generation/samples_grid.png")
    return out + quality_outputs()
