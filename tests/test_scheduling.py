"""How many heavy jobs run at once: `--cores 8` on a small machine, and the cpu_load limit.

Snakemake counts a job's `threads` against `--cores`, never against the machine's cores, so the
README's `snakemake --cores 8 all` would start eight one-thread torch jobs on a 2-core machine.
The workflow adds one resource, `cpu_load` (workflow/rules/common.smk): each heavy job takes one
unit (`execution()`), and the machine has as many units as cores unless `--resources` says
otherwise. Stand-in jobs record when they ran; nothing here measures speed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from test_gpu_slots import STAND_IN, env_for_jobs, max_overlap
from test_workflow import REPO, SNAKEMAKE

JOBS = 6

TOY = """\
configfile: "{repo}/config/config.yaml"


include: "{repo}/workflow/rules/common.smk"


rule all:
    input:
        expand("runs/job{{i}}", i=range({jobs})),


rule heavy:
    output:
        "runs/job{{i}}",
    threads: 1{resources}
    shell:
        "python {stand_in} {{output}} {need} 0.4"
"""


def run_toy(tmp_path: Path, resources: str, need: int, *args: str) -> list[tuple[float, float]]:
    """Six one-thread jobs under `--cores 8`; each waits until `need` jobs have started."""
    stand_in = tmp_path / "stand_in.py"
    stand_in.write_text(STAND_IN)
    snakefile = tmp_path / "Snakefile"
    toy = TOY.format(repo=REPO, stand_in=stand_in, need=need, resources=resources, jobs=JOBS)
    snakefile.write_text(toy)
    (tmp_path / "runs").mkdir()
    cmd = [
        *SNAKEMAKE, "--snakefile", str(snakefile), "--directory", str(tmp_path),
        "--cores", "8", "--config", "gpus=0", *args,
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env_for_jobs(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads((tmp_path / "runs" / f"job{i}").read_text()) for i in range(JOBS)]
    assert all(r["saw"] >= need for r in records), records  # each saw `need` jobs running
    return [(r["start"], r["end"]) for r in records]


def test_cores_alone_start_as_many_one_thread_jobs_as_cores_says(tmp_path):
    # No cpu_load: all six start together, however many cores the machine has.
    assert max_overlap(run_toy(tmp_path, "", need=JOBS)) == JOBS


@pytest.mark.parametrize("given", [None, 3])
def test_heavy_jobs_run_one_per_core_whatever_cores_says(tmp_path, given):
    """execution()'s unit: as many at once as the machine has cores (`--resources cpu_load=N`,
    as a cluster profile sets it, replaces that count)."""
    limit = min(JOBS, given or os.cpu_count() or 1)
    args = ["--resources", f"cpu_load={given}"] if given else []
    resources = '\n    resources:\n        **execution("train"),'
    intervals = run_toy(tmp_path, resources, limit, *args)
    assert max_overlap(intervals) == limit
