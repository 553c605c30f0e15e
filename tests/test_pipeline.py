"""End to end: the whole DAG on a tiny config, what reruns after a change, and a killed run.

These tests run real Snakemake on a miniature of the demo (a few images, a few steps), the way a
user does: `snakemake --cores 2 all`, then `-n` to see what a change would rerun.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_workflow import REPO, job_counts

from flexseg.config import deep_merge
from flexseg.io import temporary_name

pytestmark = pytest.mark.slow

TINY = {
    "demo": {
        "source": {"count": 24, "size": [96, 64]},
        "source_val": {"count": 4, "size": [96, 64]},
        "prior": {"count": 24, "size": [64, 64]},
        "targets": {
            "cityscapes": {"count": 3, "size": [96, 48]},
            "bdd100k": {"count": 3, "size": [96, 54]},
            "mapillary": {"count": 3, "size": [80, 60]},
            "acdc": {"count": 4, "size": [96, 54]},
            "dark_zurich": {"count": 3, "size": [96, 54]},
        },
        "grid_samples": 1,
    },
    "rcs": {"min_pixels": 10, "subset_size": 12, "workers": 1},
    "generation": {
        "jobs": {"num_images": 4, "shards": 2, "crop_size": 32},
        "sampler": {"steps": 3, "tile_latent": 4, "tile_stride": 2, "large_component_px": 200},
        "demo_generator": {},
        "grid_samples": 2,
    },
    "run": {"experiments": ["source_only", "flexseg"], "models": ["tiny"], "seeds": [0]},
    "training": {
        "iterations": 12,
        "batch_size": 2,
        "crop_size": 32,
        "warmup_iters": 2,
        "source_resize": [96, 64],
        "rcs_recrop_min_pixels": 5,
        "checkpoint_every": 4,
        "log_every": 2,
        "has": {"refresh_every": 4, "midpoint": 6},
    },
    "evaluation": {
        "datasets": ["acdc", "cityscapes", "source_val"],
        "window": 32,
        "stride": 16,
        "scales": {"acdc": [96, 54], "cityscapes": [96, 48], "source_val": [96, 64]},
        "panels": 1,
    },
    "tables": {"compare_panels": ["source_only", "flexseg"]},
}


def tiny_demo_generator() -> dict:
    """The demo generator at a few steps: enough to run every stage, not to learn much."""
    few = {"steps": 2, "batch_size": 2}
    return {
        "crop_size": 32,
        "log_every": 1,
        "vae": {**few, "crop_size": 32},
        "prior": few,
        "source": few,
        "controlnet": few,
    }


def write_config(path: Path, extra: dict | None = None) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    cfg["generation"]["demo_generator"] = tiny_demo_generator()
    path.write_text(yaml.safe_dump(deep_merge(cfg, extra or {})))
    return path


def run_snakemake(
    workdir: Path, *args: str, check: bool = True, **popen
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), *args,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, **popen)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("pipeline")
    config = write_config(workdir / "tiny.yaml")
    run_snakemake(workdir, "--cores", "2", "all", "--configfile", str(config))
    return workdir


def read_table(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_all_produces_the_results_table(finished_run):
    table = read_table(finished_run / "results" / "table.csv")
    assert len(table) == 2  # source_only and flexseg for the one model
    for row in table:
        for col in ("ACDC", "CS", "Avg5"):
            assert col in row
    long = read_table(finished_run / "results" / "tables" / "long.csv")
    datasets = {row["dataset"] for row in long}
    assert {"acdc", "cityscapes", "source_val"} <= datasets
    generated = finished_run / "results" / "generation" / "dataset"
    assert len(list((generated / "images").glob("*.png"))) == 4
    assert (finished_run / "results" / "demo" / "world_grid.png").stat().st_size > 0
    figures = finished_run / "results" / "figures" / "compare" / "tiny"
    assert sorted(p.name for p in figures.glob("*.png")) == [
        "acdc.png",
        "cityscapes.png",
        "source_val.png",
    ]
    quality = read_table(finished_run / "results" / "generation" / "quality.csv")
    overall = quality[0]
    assert (overall["scope"], overall["name"], overall["images"]) == ("overall", "all", "4")
    assert 0.0 <= float(overall["miou"]) <= 100.0
    # The held-out source reference is the evaluation's own metrics file of that run.
    metrics = finished_run / "results/evaluate/source_only/tiny/seed0/source_val/metrics.json"
    source = json.loads(metrics.read_text())
    assert float(overall["source_miou"]) == pytest.approx(source["miou"], abs=0.01)
    # The domain gap (held_out: the demo's source_val) sets each run's score on it beside its targets.
    gap = {r["experiment"]: r for r in read_table(finished_run / "results/tables/domain_gap.csv")}
    assert set(gap) == {"source_only", "flexseg"}
    assert float(gap["source_only"]["held_out"]) == pytest.approx(source["miou"], abs=0.01)
    assert {row["name"] for row in quality if row["scope"] == "condition"} <= {
        "standard", "fog", "rain", "snow", "night"
    }  # fmt: skip
    assert (finished_run / "results" / "generation" / "quality.png").stat().st_size > 0


def test_forcerun_evaluate_reruns_only_evaluation(finished_run):
    config = finished_run / "tiny.yaml"
    proc = run_snakemake(
        finished_run, "-n", "--cores", "2", "all", "--configfile", str(config),
        "--forcerun", "evaluate",
    )  # fmt: skip
    counts = job_counts(proc.stdout)
    assert counts.pop("evaluate") == 2 * 3
    assert counts.pop("compare_panels") == 3
    assert counts.pop("tables") == 1 and counts.pop("domain_gap") == 1
    assert counts.pop("quality_report") == 1  # joins the re-evaluated source reference
    counts.pop("all", None)
    assert counts == {}, counts


def test_the_quality_score_reruns_for_its_own_inputs_only(finished_run):
    """The Eq. 1 kernel (which it uses) reruns the scoring, and so does a new generated set; a
    checkpoint named in the config scores (and evaluates the reference) with it."""
    jobs = TINY["generation"]["jobs"]
    cases = {
        "kernel": ({"evaluation": {"boundary_kernel": 3}}, "evaluate"),
        "generated": ({"generation": {"jobs": {**jobs, "seed": 1}}}, "merge_generated"),
    }
    for name, (extra, also) in cases.items():
        config = write_config(finished_run / f"quality_{name}.yaml", extra)
        args = ["-n", "--cores", "2", "all", "--configfile", str(config)]
        counts = job_counts(run_snakemake(finished_run, *args).stdout)
        assert counts.pop("quality_score") == 1 and counts.pop("quality_report") == 1, name
        assert also in counts, (name, counts)
    checkpoint = finished_run / "elsewhere" / "model.pt"
    checkpoint.parent.mkdir(exist_ok=True)
    shutil.copy(finished_run / "results/train/source_only/tiny/seed0/model.pt", checkpoint)
    named = {"quality": {"checkpoint": str(checkpoint)}}
    config = write_config(finished_run / "quality_file.yaml", named)
    args = ["-n", "--cores", "2", "all", "--configfile", str(config)]
    counts = job_counts(run_snakemake(finished_run, *args).stdout)
    assert counts == {"quality_reference": 1, "quality_score": 1, "quality_report": 1, "all": 1}


# Every execution setting at once, each changed: if together they trigger nothing, none does.
EXECUTION_CHANGES = {
    "training": {
        "threads": 2,
        "workers": 1,
        "device": "cpu",
        "log_every": 3,
        "checkpoint_every": 6,
    },
    "rcs": {"workers": 2},
    "generation": {"sampler": {"tile_batch": 4, "device": "cpu", "threads": 2}},
    "evaluation": {"device": "cpu", "threads": 2},
}


def test_execution_settings_rerun_nothing(finished_run):
    config = write_config(finished_run / "execution_changed.yaml", EXECUTION_CHANGES)
    args = ["-n", "--cores", "2", "all", "--configfile", str(config)]
    proc = run_snakemake(finished_run, "--set-threads", "train=1", "evaluate=2", *args)
    assert job_counts(proc.stdout) == {}, proc.stdout
    # ... and they reach the commands, a profile's set-threads too (1 here instead of 2)
    proc = run_snakemake(
        finished_run,
        "-p",
        "--forcerun",
        "train",
        "generate_shard",
        "--set-threads",
        "train=1",
        *args,
    )
    assert "--threads 1 --workers 1 --device cpu --log-every 3 --checkpoint-every 6" in proc.stdout
    # evaluation, quality scoring and the shards take their own threads (2 here, default 1)
    for command in ("flexseg.evaluate", "flexseg.quality score", "generation.shard"):
        lines = [line for line in proc.stdout.splitlines() if f"python -m {command} " in line]
        assert lines and all("--threads 2 " in line for line in lines), (command, lines)


QUALITY = {"quality_score": 1, "quality_report": 1}  # a new checkpoint or generated set


@pytest.mark.parametrize(
    "change, planned",
    [
        # the generated set is fed whole, not through the sliding window: not scored again, only
        # the report that joins the re-evaluated source reference reruns
        ({"evaluation": {"stride": 8}},
         {"evaluate": 2 * 3, "compare_panels": 3, "tables": 1, "domain_gap": 1,
          "quality_report": 1}),
        ({"training": {"lr": 1.0e-4}},
         {"train": 2, "evaluate": 2 * 3, "compare_panels": 3, "tables": 1, "domain_gap": 1,
          **QUALITY}),
        # a display name: the tables and the figures that print it, no training, no evaluation
        ({"experiments": {"flexseg": {"label": "FLEX"}}},
         {"tables": 1, "domain_gap": 1, "compare_panels": 3}),
        # the generated images: their shards, their score and everything that trains on them
        ({"generation": {"sampler": {"steps": 2}}},
         {"generate_shard": 2, "merge_generated": 1, "dataset_combined": 1, "train": 1,
          "evaluate": 3, "compare_panels": 3, "tables": 1, "domain_gap": 1, **QUALITY}),
    ],
)  # fmt: skip
def test_a_setting_reruns_its_stage_and_what_follows(finished_run, change, planned):
    config = write_config(finished_run / "changed.yaml", change)
    proc = run_snakemake(finished_run, "-n", "--cores", "2", "all", "--configfile", str(config))
    counts = job_counts(proc.stdout)
    counts.pop("all", None)
    assert counts == planned, proc.stdout


def plant_temporary(final: Path) -> Path:
    """What a writer killed inside ``atomic_path`` leaves beside ``final``."""
    prefix, suffix = temporary_name(final)
    tmp = final.parent / f"{prefix}k1lled00{suffix}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(b"half a file")
    return tmp


FINAL_TABLES = ("results/table.csv", "results/table.md", "results/tables", "results/figures")


def copy_of(finished_run: Path, dest: Path, *remove: str) -> Path:
    """A copy of the finished run (its Snakemake records included, file times kept) with
    ``remove`` deleted, and the tables and figures with them. Snakemake reruns a job whose
    output is missing only when a file downstream is missing too, so ``remove`` lists a job's
    outputs with what they feed."""
    shutil.copytree(finished_run, dest, symlinks=True, dirs_exist_ok=True)
    for path in (*remove, *FINAL_TABLES):
        target = dest / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return dest


def test_interrupted_jobs_resume_and_the_table_matches(finished_run, tmp_path, monkeypatch):
    """A shard stopped after one image and a training run stopped after its first checkpoint,
    each with a half-written temporary beside it (built directly, no signals): the plain
    command resumes both and ends with the table of the uninterrupted run."""
    from flexseg.config import execution_values, load_config, stage_params
    from flexseg.train import RunFiles, train
    from generation.shard import run_shard

    shard_dir = Path("results/generation/shards/000")
    run = Path("results/train/flexseg/tiny/seed0")
    copy_of(
        finished_run, tmp_path, str(shard_dir), "results/generation/dataset",
        "results/dataset/combined.csv", str(run), "results/evaluate/flexseg",
    )  # fmt: skip
    config_path = write_config(tmp_path / "tiny.yaml")
    config_file = ["--configfile", str(config_path)]  # last: it takes every following word
    config = load_config(config_path)
    monkeypatch.chdir(tmp_path)  # the config's paths are relative to the working folder

    # 1. shard 0 stopped after its first image, a temporary of its second image left behind.
    model = Path("results/generation/demo_model")
    report = run_shard(
        stage_params(config, "generate"),
        "results/generation/jobs.csv",
        0,
        config["generation"]["jobs"]["shards"],
        shard_dir / "manifest.csv",  # the rule's paths (generation.smk)
        shard_dir,
        prior=model / "prior",
        controlnet=model / "controlnet",
        max_new=1,
        options=execution_values(config, "generate"),
    )
    assert report.generated == 1 and report.manifest is None
    (first_image,) = (shard_dir / "images").glob("*.png")
    kept = first_image.stat().st_mtime_ns
    stale = [plant_temporary(shard_dir / "images" / "000001.png")]

    # 2. the rest of the generated set, then the FLEX-Seg run stopped at its first checkpoint
    # (iteration 4 of 12), with temporaries of the next checkpoint and of the loss log.
    run_snakemake(tmp_path, "--cores", "2", "results/dataset/combined.csv", *config_file)
    assert first_image.stat().st_mtime_ns == kept
    shard_log = Path("logs/generation/shard_000.log").read_text()
    assert " 1 already complete" in shard_log, shard_log
    params = stage_params(config, "train", experiment="flexseg", model="tiny", seed=0)
    options = execution_values(config, "train")  # what the rule passes
    files = RunFiles(  # the rule's paths (train.smk)
        run / "model.pt", run / "loss_log.csv", run / "config.json", run / "checkpoints"
    )
    result = train(params, "results/dataset/combined.csv", files, options, stop_after=4)
    assert result.iterations_done == 4 and not result.completed
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "model.pt").exists()
    stale += [
        plant_temporary(run / "checkpoints" / "last.pt"),
        plant_temporary(run / "loss_log.csv"),
    ]

    # 3. the plain command, no flags: both resume, nothing half-written is left.
    run_snakemake(tmp_path, "--cores", "2", "all", *config_file)
    train_log = Path("logs/train/flexseg/tiny/seed0.log").read_text()
    assert "resuming from" in train_log and "at iteration 4" in train_log, train_log
    for tmp in stale:
        assert not tmp.exists(), tmp
    assert not list(Path("results").rglob("*.tmp*"))
    images = sorted(p.name for p in Path("results/generation/dataset/images").glob("*.png"))
    assert len(images) == 4 == len(set(images))
    assert Path("results/table.csv").read_text() == (finished_run / "results/table.csv").read_text()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` in the process tree (from /proc; children before parents)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while we looked
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(children.get(child, []))
    return out[::-1]


def kill_tree(proc: subprocess.Popen) -> None:
    """Power loss for the Snakemake process this test started and everything below it: the tree
    is frozen first (so nothing new starts), then killed. Nothing outside that tree is touched."""
    pids = [*descendants(proc.pid), proc.pid]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    for pid in [*descendants(proc.pid), *pids]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)


def test_a_run_killed_with_its_jobs_recovers(finished_run, tmp_path):
    """kill -9 of Snakemake and its jobs while a training job runs (the FLEX-Seg run, redone
    from a copy of the finished run): the README's recovery (``--unlock``, then the plain
    command) ends with the same table."""
    copy_of(finished_run, tmp_path, "results/train/flexseg", "results/evaluate/flexseg")
    config_path = write_config(tmp_path / "tiny.yaml")
    args = ["all", "--cores", "2", "--configfile", str(config_path)]
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(tmp_path), *args,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = tmp_path / "results/train/flexseg/tiny/seed0"
    # its first checkpoint, or its model if the poll missed the checkpoint's short life
    written = (run / "checkpoints/last.pt", run / "model.pt")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        t0 = time.monotonic()
        while (
            not any(p.exists() for p in written)
            and proc.poll() is None
            and time.monotonic() - t0 < 900
        ):
            time.sleep(0.05)
        # the training job has checkpointed; Snakemake still has its evaluations to run
        assert proc.poll() is None, "the run ended before the kill"
        assert any(p.exists() for p in written), "no checkpoint within 900 s"
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == -signal.SIGKILL
    run_snakemake(tmp_path, "--unlock", *args)
    run_snakemake(tmp_path, *args)
    assert not list((tmp_path / "results").rglob("*.tmp*"))
    assert (tmp_path / "results/table.csv").read_text() == (
        finished_run / "results/table.csv"
    ).read_text()
