"""End to end: the whole DAG on a tiny config, what reruns after a change, and a killed run.

These tests run real Snakemake on a miniature of the demo (a few images, a few steps), the way a
user does: `snakemake --cores 2 all`, then `-n` to see what a change would rerun.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_workflow import REPO, job_counts

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
    for key, value in (extra or {}).items():
        cfg.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(cfg))
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


def test_forcerun_evaluate_reruns_only_evaluation(finished_run):
    config = finished_run / "tiny.yaml"
    proc = run_snakemake(
        finished_run, "-n", "--cores", "2", "all", "--configfile", str(config),
        "--forcerun", "evaluate",
    )  # fmt: skip
    counts = job_counts(proc.stdout)
    assert counts.pop("evaluate") == 2 * 3
    assert counts.pop("compare_panels") == 3
    assert counts.pop("tables") == 1
    counts.pop("all", None)
    assert counts == {}, counts


def test_an_evaluation_setting_reruns_only_evaluation(finished_run):
    config = write_config(finished_run / "eval_changed.yaml", {"evaluation": {"stride": 8}})
    proc = run_snakemake(finished_run, "-n", "--cores", "2", "all", "--configfile", str(config))
    counts = job_counts(proc.stdout)
    assert counts.pop("evaluate") == 2 * 3
    assert counts.pop("compare_panels") == 3
    assert counts.pop("tables") == 1
    counts.pop("all", None)
    assert counts == {}, counts


def test_a_training_setting_reruns_training_not_generation(finished_run):
    config = write_config(finished_run / "train_changed.yaml", {"training": {"lr": 1.0e-4}})
    proc = run_snakemake(finished_run, "-n", "--cores", "2", "all", "--configfile", str(config))
    counts = job_counts(proc.stdout)
    assert counts.pop("train") == 2
    assert counts.pop("evaluate") == 2 * 3
    assert counts.pop("compare_panels") == 3
    assert counts.pop("tables") == 1
    counts.pop("all", None)
    assert counts == {}, counts


def wait_for(predicate, timeout: float, what: str) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def kill_stage(pattern: str) -> None:
    """kill -9 the stage command (not Snakemake), as a crash or preemption of that job would."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    assert out, f"no process matches {pattern}"
    for pid in out:
        os.kill(int(pid), signal.SIGKILL)


def test_killed_jobs_resume_and_the_table_matches(finished_run, tmp_path):
    config = write_config(tmp_path / "tiny.yaml")
    args = ["--cores", "2", "all", "--configfile", str(config)]
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(tmp_path), *args,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    # 1. kill -9 a generation shard once it has written its first sample.
    shard_images = tmp_path / "results" / "generation" / "shards" / "000" / "images"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_for(
        lambda: shard_images.is_dir() and any(shard_images.glob("*.png")), 900, "a shard image"
    )
    kill_stage("generation.shard .*--out-dir results/generation/shards/000")
    assert proc.wait(timeout=900) != 0
    written = {p.name: p.stat().st_mtime_ns for p in shard_images.glob("*.png")}
    assert written

    # 2. rerun; kill -9 a training job once it has checkpointed.
    ckpt = tmp_path / "results" / "train" / "flexseg" / "tiny" / "seed0" / "checkpoints" / "last.pt"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_for(ckpt.exists, 900, "a training checkpoint")
    kill_stage("flexseg.train .*results/train/flexseg/tiny/seed0")
    assert proc.wait(timeout=900) != 0
    # the resumed shard kept what it had written whole
    for name, mtime in written.items():
        assert (shard_images / name).stat().st_mtime_ns == mtime

    # 3. rerun to the end: the plain command, no flags.
    run_snakemake(tmp_path, *args)
    assert not list((tmp_path / "results").rglob("*.tmp*"))
    images = sorted(p.name for p in (tmp_path / "results/generation/dataset/images").glob("*.png"))
    assert len(images) == 4 == len(set(images))
    assert (tmp_path / "results/table.csv").read_text() == (
        finished_run / "results/table.csv"
    ).read_text()
