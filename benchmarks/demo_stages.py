"""Wall time of the demo pipeline, stage by stage.

By default runs ``snakemake --cores 8 all`` on the demo default in a fresh working directory and
times it; ``--workdir DIR --no-run`` only reads the Snakemake ``benchmark:`` files of a finished
run. For each stage it prints the number of jobs, the summed job seconds and the wall-clock span
(first job start to last job end: jobs of a stage overlap), then the total, ending with
``demo_all_minutes=<value>``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def read_benchmarks(workdir: Path) -> dict[str, list[tuple[float, float]]]:
    """stage -> [(start, end)] from results/benchmarks/<stage>/**.tsv (end = the file's mtime)."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    root = workdir / "results" / "benchmarks"
    for tsv in sorted(root.rglob("*.tsv")):
        stage = tsv.relative_to(root).parts[0]
        if stage == "generation":
            stage = "generation/" + ("demo_model" if tsv.stem.startswith("demo_") else "shards")
        with tsv.open() as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows:
            continue
        seconds = float(rows[-1]["s"])
        end = tsv.stat().st_mtime
        spans[stage].append((end - seconds, end))
    return spans


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", type=Path, help="working directory (default: a fresh temp dir)"
    )
    parser.add_argument("--no-run", action="store_true", help="only read an existing run's files")
    parser.add_argument("--cores", default="8")
    parser.add_argument(
        "snakemake_args", nargs="*", help="extra snakemake arguments (e.g. --configfile X)"
    )
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flexseg-demo-"))
    total = None
    if not args.no_run:
        cmd = [
            sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--cores", args.cores, "--rerun-incomplete",
            "all", *args.snakemake_args,
        ]  # fmt: skip
        print("running:", " ".join(cmd), flush=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        total = time.perf_counter() - t0

    spans = read_benchmarks(workdir)
    if not spans:
        raise SystemExit(f"no benchmark files under {workdir / 'results' / 'benchmarks'}")
    print(f"{'stage':<24}{'jobs':>6}{'job_s':>10}{'wall_s':>10}")
    for stage, items in sorted(spans.items(), key=lambda kv: min(s for s, _ in kv[1])):
        job_s = sum(e - s for s, e in items)
        wall = max(e for _, e in items) - min(s for s, _ in items)
        print(f"{stage:<24}{len(items):>6}{job_s:>10.1f}{wall:>10.1f}")
    if total is None:
        starts = [s for items in spans.values() for s, _ in items]
        ends = [e for items in spans.values() for _, e in items]
        total = max(ends) - min(starts)
        print("(total = first benchmarked job start to last job end)")
    print(f"workdir={workdir}")
    print(f"demo_all_minutes={total / 60:.2f}")


if __name__ == "__main__":
    main()
