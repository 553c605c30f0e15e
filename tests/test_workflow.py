"""The workflow as a user drives it: dry runs, lint, config errors, the paper's plan."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), *args]
    if cwd is not None:
        cmd += ["--directory", str(cwd)]
    proc = subprocess.run(cmd, cwd=cwd or REPO, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run."""
    counts: dict[str, int] = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            if line.strip().startswith("total"):
                break
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m:
                counts[m.group(1)] = int(m.group(2))
    return counts


def test_demo_dry_run_plans_every_stage(tmp_path):
    proc = snakemake("-n", "--cores", "8", "all", cwd=tmp_path)
    counts = job_counts(proc.stdout)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    runs = (
        len(config["run"]["experiments"])
        * len(config["run"]["models"])
        * len(config["run"]["seeds"])
    )
    assert counts["render_demo"] == 1
    assert counts["generate_shard"] == config["generation"]["jobs"]["shards"]
    assert counts["train"] == runs
    assert counts["evaluate"] == runs * len(config["evaluation"]["datasets"])
    for rule in ("class_stats", "rcs_subset", "generation_jobs", "merge_generated", "tables"):
        assert counts[rule] == 1, rule
    assert counts["quality_score"] == counts["quality_report"] == 1
    assert "quality_reference" not in counts  # the reference is the evaluation's source_val


def test_demo_plans_the_recipe_rows_when_listed(tmp_path):
    """hrda_dg (online RCS over the whole source) and boundary_weighted (Eq. 2) run in the demo
    when run.experiments lists them, with Fig. 2 for the demo model."""
    listed = tmp_path / "listed.yaml"
    names = ["source_only", "dginstyle", "flexseg", "hrda_dg", "boundary_weighted"]
    listed.write_text(yaml.safe_dump({"run": {"experiments": names, "seeds": [0]}}))
    proc = snakemake("-n", "--cores", "1", "all", "--configfile", str(listed), cwd=tmp_path)
    counts = job_counts(proc.stdout)
    assert counts["train"] == 5 and counts["rcs_online"] == 1
    assert counts["motivation_panels"] == 1 and "dataset_combined_full" not in counts
    assert "results/figures/motivation/tiny.png" in proc.stdout
    block = next(b for b in proc.stdout.split("\n\n") if "train/hrda_dg/tiny" in b)
    assert "results/dataset/source.csv" in block and "results/rcs/online_rcs.json" in block


def test_jobs_run_without_an_activated_environment(tmp_path):
    # `.venv/bin/snakemake ...` with a PATH that holds no project Python: the jobs' `python` must
    # still be the one running Snakemake. One small job (the demo world, shrunk) shows it.
    small = {
        "demo": {
            "source": {"count": 2, "size": [64, 48]},
            "source_val": {"count": 1, "size": [64, 48]},
            "prior": {"count": 1, "size": [32, 32]},
            "targets": {
                name: {"count": 4 if name == "acdc" else 1, "size": [64, 32]}
                for name in ("cityscapes", "bdd100k", "mapillary", "acdc", "dark_zurich")
            },
        }
    }
    overlay = tmp_path / "small.yaml"
    overlay.write_text(yaml.safe_dump(small))
    cmd = [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--cores",
        "1",
        "results/demo/world_grid.png",
        "--configfile",
        str(REPO / "config" / "config.yaml"),
        str(overlay),
    ]
    env = {**os.environ, "PATH": os.pathsep.join(["/usr/bin", "/bin"])}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = tmp_path / "logs" / "demo" / "render.log"
    detail = f"{proc.stderr[-2000:]}\n{log.read_text() if log.exists() else ''}"
    assert proc.returncode == 0, detail
    assert (tmp_path / "results" / "demo" / "world_grid.png").stat().st_size > 0


def test_the_default_profile_is_in_effect(tmp_path):
    # Snakemake looks for profiles/default beside the Snakefile (not workflow/profiles/default
    # when the Snakefile is at the top): `profiles` links there, so rerun-incomplete is on.
    proc = snakemake("-n", "--cores", "1", "all", cwd=tmp_path)
    assert "workflow specific profile" in proc.stdout + proc.stderr
    assert (REPO / "profiles" / "default").resolve() == REPO / "workflow/profiles/default"


def test_lint_is_clean():
    proc = snakemake("--lint", check=False)
    assert "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "override, key",
    [
        ({"training": {"iteratons": 5}}, "iteratons"),
        ({"evaluation": {"stride": "wide"}}, "evaluation.stride"),
        ({"run": {"experiments": ["flexseg", "nonesuch"]}}, "nonesuch"),
        ({"quality": {"seed": 7}}, "quality.seed"),
    ],
)
def test_bad_config_stops_with_the_key_named(tmp_path, override, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    proc = snakemake(
        "-n", "--cores", "1", "all", "--configfile", str(bad), cwd=tmp_path, check=False
    )
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr


def fake_real_tree(root: Path) -> None:
    for name in ("gta", "cityscapes", "bdd100k", "mapillary", "acdc", "dark_zurich"):
        (root / "data" / name).mkdir(parents=True)


def test_paper_config_plans_the_full_experiment(tmp_path):
    fake_real_tree(tmp_path)
    proc = snakemake(
        "-n",
        "--cores",
        "8",
        "all",
        "--configfile",
        str(REPO / "config/paper/gta_to_five.yaml"),
        cwd=tmp_path,
    )
    counts = job_counts(proc.stdout)
    assert "render_demo" not in counts
    assert "demo_generator_prior" not in counts
    assert counts["generate_shard"] == 50  # 10,000 images in 50 shards
    # 4 methods (hrda_dg, the recipe of the published baselines, first) x 3 seeds x 3 backbones,
    # plus 4 ablations (Table 2 and the Eq. 2 motivation experiment) x 3 seeds on DAFormer MiT-B5
    assert counts["train"] == 36 + 12
    assert counts["evaluate"] == (36 + 12) * 5
    assert counts["quality_score"] == counts["quality_report"] == 1  # no held-out source split
    assert "quality_reference" not in counts
    # online RCS (hrda_dg; HRDA's dginstyle / flexseg as DGInStyle-SegModel exp. 61) reads the
    # whole source through the online table; Fig. 2 is drawn for DAFormer MiT-B5
    assert counts["rcs_online"] == counts["dataset_combined_full"] == 1
    assert counts["motivation_panels"] == 1
    out = proc.stdout
    for run in (
        "results/train/hrda_dg/hrda_mitb5/seed0/model.pt",
        "results/train/boundary_weighted/daformer_mitb5/seed2/model.pt",
        "results/figures/motivation/daformer_mitb5.png",
    ):
        assert run in out, run
    train = [b for b in out.split("\n\n") if "rule train:" in b]
    online = [b for b in train if "results/rcs/online_rcs.json" in b]
    assert (
        len(online) == 3 * 3 + 3 * 2 * 3
    )  # hrda_dg x 3 models; 3 HRDA-based methods x 2 HRDA models
    assert all("--online-rcs results/rcs/online_rcs.json" in b for b in online)
    jobs = yaml.safe_load((REPO / "config/paper/gta_to_five.yaml").read_text())["generation"][
        "jobs"
    ]
    assert jobs["num_images"] == 10000


def test_one_backbone_override(tmp_path):
    fake_real_tree(tmp_path)
    proc = snakemake(
        "-n",
        "--cores",
        "8",
        "all",
        "--configfile",
        str(REPO / "config/paper/gta_to_five.yaml"),
        str(REPO / "config/paper/hrda_r101.yaml"),
        cwd=tmp_path,
    )
    counts = job_counts(proc.stdout)
    assert counts["train"] == 12
    assert counts["evaluate"] == 60


def test_missing_dataset_root_is_named(tmp_path):
    fake_real_tree(tmp_path)
    (tmp_path / "data" / "bdd100k").rmdir()
    proc = snakemake(
        "-n",
        "--cores",
        "1",
        "all",
        "--configfile",
        str(REPO / "config/paper/gta_to_five.yaml"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    assert "datasets.bdd100k.root" in proc.stdout + proc.stderr


def test_slurm_profile_dry_run(tmp_path):
    fake_real_tree(tmp_path)
    proc = snakemake(
        "-n",
        "all",
        "--profile",
        str(REPO / "workflow/profiles/slurm"),
        "--configfile",
        str(REPO / "config/paper/gta_to_five.yaml"),
        cwd=tmp_path,
    )
    counts = job_counts(proc.stdout)
    assert counts["generate_shard"] == 50


def planned_resources(output: str) -> dict[str, dict[str, str]]:
    """The `resources:` line of the first planned job of each rule in a dry run."""
    found: dict[str, dict[str, str]] = {}
    rule = None
    for line in output.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:") and rule not in found:
            pairs = line.split("resources:", 1)[1].split(", ")
            found[rule] = dict(pair.strip().split("=", 1) for pair in pairs)
    return found


def test_the_slurm_profile_keeps_the_rules_gpu_counts(tmp_path):
    """The profile sends every rule with a GPU to the GPU partition and every other rule to the
    CPU partition; the GPU count is the rule's (train: one per DDP process), which the SLURM
    plugin submits as --gpus=N (tests/test_slurm.py checks the sbatch line)."""
    fake_real_tree(tmp_path)
    (tmp_path / "scorer.pt").write_bytes(b"")  # a named checkpoint adds quality_reference
    ddp = tmp_path / "ddp.yaml"
    ddp.write_text("training: {nproc: 2}\nheld_out: cityscapes\nquality: {checkpoint: scorer.pt}\n")
    proc = snakemake(
        "-n", "all", "--profile", str(REPO / "workflow/profiles/slurm"),
        "--configfile", str(REPO / "config/paper/gta_to_five.yaml"), str(ddp),
        cwd=tmp_path,
    )  # fmt: skip
    res = planned_resources(proc.stdout)
    assert res["train"]["gpu"] == "2" and res["evaluate"]["gpu"] == "1"
    assert {"generate_shard", "quality_score", "quality_reference", "tables"} <= set(res)
    for rule, r in res.items():
        partition = "gpu" if int(r.get("gpu", 0)) > 0 else "cpu"
        assert r["slurm_partition"] == partition, (rule, r)


def test_the_demo_generator_takes_no_gpu_and_runs_on_the_cpu_partition(tmp_path):
    """The demo generator trains on the CPU (generation/demo has no device setting): its jobs
    hold no GPU slot, and the SLURM profile sends them to the CPU partition."""
    proc = snakemake(
        "-n", "all", "--profile", str(REPO / "workflow/profiles/slurm"), cwd=tmp_path
    )  # fmt: skip
    res = planned_resources(proc.stdout)
    demo = {"demo_generator_prior", "demo_generator_source", "demo_generator_controlnet"}
    assert demo <= set(res) and res["generate_shard"]["gpu"] == "1"
    for rule in demo:
        assert "gpu" not in res[rule] and res[rule]["slurm_partition"] == "cpu", (rule, res[rule])


def test_the_tables_are_the_ones_the_config_asks_for(tmp_path):
    """Table 1 always; Table 2 for ablation runs, the domain gap for held_out, the comparison
    for tables.compare_paper: decided from the config, one rule each."""
    tables = {"tables", "ablation_table", "domain_gap", "paper_comparison"}
    demo = job_counts(snakemake("-n", "--cores", "8", "all", cwd=tmp_path).stdout)
    assert {rule for rule in demo if rule in tables} == {"tables", "domain_gap"}
    overlay = tmp_path / "tables.yaml"
    overlay.write_text(
        "held_out: null\ntables: {compare_paper: true}\n"
        "run: {ablations: {experiments: [gap_only], models: [tiny]}}\n"
    )
    args = ["-n", "-p", "--cores", "8", "all", "--configfile", str(overlay)]
    proc = snakemake(*args, cwd=tmp_path)
    counts = job_counts(proc.stdout)
    assert {rule for rule in counts if rule in tables} == tables - {"domain_gap"}
    assert counts["train"] == 3 * 3 + 3  # the ablation's three seeds
    # without a held-out set the quality report has no source reference
    (report,) = [line for line in proc.stdout.splitlines() if "flexseg.quality report" in line]
    assert "--reference" not in report


# The small jobs: they run where Snakemake runs (`localrule: True`), not as cluster jobs.
LOCAL_RULES = {
    "rcs_subset", "generation_jobs", "merge_generated", "dataset_source", "dataset_generated",
    "dataset_combined", "dataset_combined_full", "rcs_online", "compare_panels", "tables", "ablation_table", "domain_gap",
    "paper_comparison", "quality_report",
}  # fmt: skip
# The heavy ones: one cpu_load unit each (execution(), common.smk), a cluster job each.
HEAVY_RULES = {
    "render_demo", "class_stats", "demo_generator_prior", "demo_generator_source",
    "demo_generator_controlnet", "generate_shard", "train", "evaluate", "quality_score",
    "quality_reference", "motivation_panels", "random_weights_diffusion", "random_weights_encoders",
}  # fmt: skip


def rule_texts() -> dict[str, str]:
    """Each rule of workflow/rules/*.smk by name, with its directives' text."""
    texts = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        parts = re.split(r"^ *rule (\w+):\n", path.read_text(), flags=re.MULTILINE)
        texts.update(zip(parts[1::2], parts[2::2], strict=True))
    return texts


def test_small_jobs_are_local_and_heavy_ones_take_a_core():
    texts = rule_texts()
    assert {name for name, text in texts.items() if "localrule: True" in text} == LOCAL_RULES
    assert {name for name, text in texts.items() if "**execution(" in text} == HEAVY_RULES
    assert set(texts) == LOCAL_RULES | HEAVY_RULES | {"import_released"}  # I/O: a cluster job
