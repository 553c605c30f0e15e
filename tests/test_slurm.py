"""The SLURM profile against a real SLURM: a slice of the demo DAG submitted through
snakemake-executor-plugin-slurm to a single-node cluster started for the test, then checked in
SLURM's own job accounting (`sacct`, which is also what the plugin polls).

Opt-in (`pytest -m slurm`; `.ci/run` runs it as a step of its own, a few minutes): it needs root
and Debian's slurm-wlm, slurmdbd, munge and mariadb-server, and skips, saying why, where they are
missing or a daemon does not start (tests/slurm_cluster.py).
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from slurm_cluster import ACCOUNT, LocalSlurm, SlurmUnavailable, missing_prerequisites
from test_pipeline import read_table, write_config
from test_workflow import LOCAL_RULES, REPO, job_counts

pytestmark = pytest.mark.slurm

PROFILE = REPO / "workflow" / "profiles" / "slurm"
# What the one test node holds: 2 CPUs and 4000 MB (slurm_cluster.CPUS, MEMORY_MB).
TEST_MEM_MB = 500
SLICE_RULES = {"render_demo", "class_stats", "generate_shard", "train", "evaluate", "tables"}


def profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def partitions(prof: dict) -> tuple[str, str]:
    """The profile's CPU partition (its default) and GPU partition (that of the GPU rules)."""
    gpu = {r["slurm_partition"] for r in prof["set-resources"].values() if "slurm_partition" in r}
    assert len(gpu) == 1, f"the GPU rules name more than one partition: {gpu}"
    return prof["default-resources"]["slurm_partition"], gpu.pop()


def node_overlay(prof: dict) -> dict:
    """The profile's resources scaled to the test node, and the test cluster's account.

    Passed as a second --profile it replaces these top-level keys; partitions, GPU requests,
    runtimes, the executor and everything else come from the profile itself. The first status
    check comes after 2 s instead of the plugin's 40 s."""

    def scaled(resources: dict) -> dict:
        out = dict(resources)
        if "mem_mb" in out:
            out["mem_mb"] = TEST_MEM_MB
        if "cpus_per_task" in out:
            out["cpus_per_task"] = 1
        return out

    return {
        "default-resources": {**scaled(prof["default-resources"]), "slurm_account": ACCOUNT},
        "set-resources": {rule: scaled(r) for rule, r in prof["set-resources"].items()},
        "set-threads": dict.fromkeys(prof.get("set-threads", {}), 1),
        "slurm-init-seconds-before-status-checks": 2,
    }


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = missing_prerequisites()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("snakemake_executor_plugin_slurm")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"), partitions(profile()))
    try:
        try:
            cluster.start()
        except SlurmUnavailable as err:
            pytest.skip(f"SLURM does not start here: {err}")
        yield cluster
    finally:
        cluster.stop()


def slice_config(path: Path) -> Path:
    """The tiny demo with one run (FLEX-Seg), one generation shard and one evaluation."""
    write_config(
        path,
        {
            "run": {"experiments": ["flexseg"]},
            "evaluation": {"datasets": ["acdc"]},
            "held_out": None,  # no held-out evaluation in the slice
            "tables": {"compare_panels": []},
        },
    )
    cfg = yaml.safe_load(path.read_text())
    cfg["generation"]["jobs"]["shards"] = 1
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(cluster: LocalSlurm, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), *args,
    ]  # fmt: skip
    env = {**cluster.env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}\n"
            f"daemons:\n{cluster.daemon_logs()}"
        )
    return proc


def rule_of(comment: str) -> str:
    """The plugin's job comment: rule_<rule> or rule_<rule>_wildcards_<values>."""
    assert comment.startswith("rule_"), comment
    return comment[len("rule_") :].split("_wildcards_")[0]


def test_a_slice_of_the_demo_runs_under_slurm(slurm, tmp_path):
    prof = profile()
    cpu_partition, gpu_partition = partitions(prof)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "config.yaml").write_text(yaml.safe_dump(node_overlay(prof)))
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = slice_config(workdir / "slice.yaml")
    # The cluster's PATH holds no project Python: the rules' `python` is the one running
    # Snakemake only through the workflow's PATH, which the jobs inherit (sbatch --export=ALL).
    args = [
        "--profile", str(PROFILE), "--profile", str(overlay),
        "results/table.csv", "--configfile", str(config),
    ]  # fmt: skip

    plan = job_counts(snakemake(slurm, workdir, "-n", *args).stdout)
    assert SLICE_RULES <= set(plan), plan
    assert plan["generate_shard"] == plan["train"] == plan["evaluate"] == 1, plan
    proc = snakemake(slurm, workdir, *args)

    rows = read_table(workdir / "results" / "table.csv")
    assert [r["experiment"] for r in rows] == ["flexseg"], rows
    assert 0 <= float(rows[0]["ACDC"]) <= 100, rows
    run_id = re.search(r"SLURM run ID: (\S+)", proc.stdout + proc.stderr).group(1)
    jobs = slurm.sacct(
        run_id, ["JobIDRaw", "Comment", "Partition", "Account", "State", "AllocTRES", "SubmitLine"]
    )
    # The small jobs (localrules) run on the submitting machine, every other one in SLURM.
    in_slurm = {rule: n for rule, n in plan.items() if rule not in LOCAL_RULES}
    assert "tables" in plan and "tables" not in in_slurm
    assert collections.Counter(rule_of(j["Comment"]) for j in jobs) == in_slurm, jobs
    gpu_rules = {rule for rule, r in prof["set-resources"].items() if r.get("slurm_partition")}
    assert {"generate_shard", "train", "evaluate"} <= gpu_rules
    for job in jobs:
        rule = rule_of(job["Comment"])
        assert job["State"] == "COMPLETED", job
        assert job["Account"] == ACCOUNT, job
        submitted = job["SubmitLine"].split()
        tres = job["AllocTRES"].split(",")
        if rule in gpu_rules:
            assert job["Partition"] == gpu_partition, job
            assert "--gpus=1" in submitted and "gres/gpu=1" in tres, job
        else:
            assert job["Partition"] == cpu_partition, job
            assert not any(w.startswith("--gpus") for w in submitted), job
            assert not any(t.startswith("gres/gpu") for t in tres), job
