# Helpers shared by the rules: config validation, stage params and resources, the lists of runs,
# datasets and final outputs.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from flexseg.config import EXECUTION, ConfigError, execution_values, experiment_titles
from flexseg.config import params_json, quality_run, run_data, run_training, training_runs
from flexseg.config import validate
from flexseg.tables import ablation_experiments, parse_experiments
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


# --cores counts threads, not the machine's cores: at most one heavy job per core (execution()).
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


def stage(name):
    """The params function of a rule: its config slice as JSON (what Snakemake compares)."""
    return lambda wildcards: params_json(config, name, **dict(wildcards.items()))


def execution(name):
    """The resources of a heavy job: one cpu_load unit, whatever its threads (a job asking for
    more would starve behind one-unit jobs), and its stage's execution settings (threads aside:
    they change no output, so unlike params they never trigger a rerun)."""
    values = execution_values(config, name) if name in EXECUTION else {}
    return {"cpu_load": 1, **{k: v for k, v in values.items() if k != "threads"}}


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
    """Real mode: every dataset the DAG reads must exist now, not hours later in a job (the
    held-out set, which the quality report's reference is, is one of evaluation.datasets)."""
    if DEMO:
        return
    for name in sorted({config["source"], *config["evaluation"]["datasets"]}):
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
    """The reference's metrics.json ([] without held_out): the evaluation's own for the run, or
    quality_reference's for a checkpoint named in the config."""
    name = config["held_out"]
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


def table_outputs():
    """Table 1 always; Table 2 when the runs include ablations (combined-data experiments beyond
    tables.main_experiments); the domain gap with held_out; the comparison with compare_paper."""
    out = ["results/table.csv"]
    names = [e for e, _, _ in runs()]
    main = config["tables"]["main_experiments"]
    if ablation_experiments(names, main, parse_experiments(config["experiments"])):
        out.append("results/tables/ablation.csv")
    if config["held_out"] is not None:
        out.append("results/tables/domain_gap.csv")
    if config["tables"]["compare_paper"]:
        out.append("results/tables/paper_comparison.csv")
    return out


def final_outputs():
    out = [*table_outputs(), *compare_figures(), *motivation_figures()]
    if DEMO:
        out.append("results/demo/world_grid.png")
    if uses_generated():
        out.append("results/generation/samples_grid.png")
    return out + quality_outputs()
