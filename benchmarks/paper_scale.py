"""Time and memory of the paper-size smoke run, job by job.

Runs ``snakemake --cores N all --configfile config/paper/gta_to_five.yaml config/paper/smoke.yaml``
in a fresh folder (the paper's three models and sizes, a handful of rendered images, random
weights: config/paper/smoke.yaml) and prints, per job, its wall time (Snakemake's ``benchmark:``
file, with its CPU time), its peak resident memory and, on CUDA, its peak GPU memory (both from the job's own
``peak memory:`` log line, ``flexseg.peak_memory``; Snakemake's sampled ``max_rss`` where a job
prints none), then a summary per rule and ``paper_smoke_minutes=<value>`` (the whole command,
from start to end).

``--tiles81`` then also runs one image of the paper's full pass 2 (81 tiles at stride 8, one
step: config/paper/smoke_tiles81.yaml) as its own job in a subfolder that shares the rendered
data and the weights; it is on by default where a GPU is visible (on a CPU its 82 guided model
calls cost about as much as 8 smoke images). On a GPU host the workflow gives each GPU job a GPU of its own
(``flexseg.gpu_slots``), so the GPU figures are each job's own.

    python benchmarks/paper_scale.py [--cores 2] [--jobs-at-once 1] [--tiles81|--no-tiles81]
        [--held-out]                                              # + config/paper/smoke_held_out.yaml
    python benchmarks/paper_scale.py --workdir DIR --no-run    # the table of a finished run
    python benchmarks/paper_scale.py --dry-run                 # plan the same run (snakemake -n)

Peak memory per job on a CPU reached 13.1 GiB (HRDA MiT-B5 training with SHADE). The smoke
config gives every heavy job 2 threads, so ``--cores 2`` runs one at a time; with more cores and
less than about 14 GiB of memory per 2 cores, pass ``--jobs-at-once N`` (``--resources
cpu_load=N``: at most N CPU-bound jobs at once).
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flexseg.gpu_slots import usable_gpus  # noqa: E402
from flexseg.peak_memory import read_peak  # noqa: E402

CONFIGS = [REPO / "config" / "paper" / "gta_to_five.yaml", REPO / "config" / "paper" / "smoke.yaml"]
TILES81 = REPO / "config" / "paper" / "smoke_tiles81.yaml"
HELD_OUT = REPO / "config" / "paper" / "smoke_held_out.yaml"
MIB = 2**20


@dataclass(frozen=True)
class JobFigures:
    job: str  # the benchmark file's path under results/benchmarks, without .tsv
    seconds: float
    cpu_seconds: float | None  # Snakemake's cpu_time: far below wall x threads on a busy machine
    rss_gib: float | None  # the job's own peak (its log line), else Snakemake's sampled max_rss
    rss_source: str  # "log" or "sampled"
    gpu_gib: float | None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "NA", "-") else None
    except ValueError:
        return None


def collect(workdir: Path) -> list[JobFigures]:
    """One row per Snakemake benchmark file; its log is logs/<same path>.log."""
    root = workdir / "results" / "benchmarks"
    rows = []
    for tsv in sorted(root.rglob("*.tsv")):
        with tsv.open() as fh:
            records = list(csv.DictReader(fh, delimiter="\t"))
        if not records:
            continue
        record = records[-1]
        job = tsv.relative_to(root).with_suffix("").as_posix()
        log = workdir / "logs" / f"{job}.log"
        peak = read_peak(log.read_text(errors="replace")) if log.is_file() else None
        sampled = _float(record.get("max_rss"))
        if peak is not None:
            rss, source = peak.rss_gib, "log"
        else:
            rss, source = (None if sampled is None else sampled * MIB / 2**30), "sampled"
        rows.append(
            JobFigures(
                job=job,
                seconds=float(record["s"]),
                cpu_seconds=_float(record.get("cpu_time")),
                rss_gib=rss,
                rss_source=source,
                gpu_gib=None if peak is None else peak.gpu_gib,
            )
        )
    return rows


def stage_of(job: str) -> str:
    """The rule a benchmark file belongs to: train/<e>/<m>/seed0 -> train <m>, ..."""
    parts = job.split("/")
    if parts[0] == "train":
        return f"train {parts[2]}"
    if parts[0] == "evaluate":
        return f"evaluate {parts[2]}"
    if parts[0] == "generation" and parts[-1].startswith("shard_"):
        return "/".join(parts[:-1] + ["shard"])
    return job


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(rows: list[JobFigures]) -> None:
    print(f"{'job':<56}{'wall_s':>9}{'cpu_s':>9}{'rss_gib':>9}{'gpu_gib':>9}")
    for r in rows:
        mark = "" if r.rss_source == "log" else "*"
        cpu = "-" if r.cpu_seconds is None else f"{r.cpu_seconds:.1f}"
        print(
            f"{r.job:<56}{r.seconds:>9.1f}{cpu:>9}{_gib(r.rss_gib) + mark:>9}{_gib(r.gpu_gib):>9}"
        )
    print("(* Snakemake's sampled max_rss: the job prints no peak-memory line)")
    stages: dict[str, list[JobFigures]] = defaultdict(list)
    for r in rows:
        stages[stage_of(r.job)].append(r)
    print(f"\n{'stage':<40}{'jobs':>5}{'sum_s':>9}{'max_s':>9}{'max_rss':>9}{'max_gpu':>9}")
    for name, items in stages.items():
        rss = [r.rss_gib for r in items if r.rss_gib is not None]
        gpu = [r.gpu_gib for r in items if r.gpu_gib is not None]
        print(
            f"{name:<40}{len(items):>5}{sum(r.seconds for r in items):>9.1f}"
            f"{max(r.seconds for r in items):>9.1f}{_gib(max(rss) if rss else None):>9}"
            f"{_gib(max(gpu) if gpu else None):>9}"
        )


def snakemake(workdir: Path, targets: list[str], configs: list[Path], extra: list[str]) -> float:
    """Run one Snakemake command in ``workdir``; its wall time in seconds."""
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), *targets, *extra,  # targets first: --resources takes words
        "--configfile", *map(str, configs),
    ]  # fmt: skip
    print("running:", " ".join(cmd), flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t0


def run_tiles81(workdir: Path, extra: list[str]) -> float:
    """The 81-tile variant in workdir/tiles81, sharing the rendered world and the weights."""
    sub = workdir / "tiles81"
    sub.mkdir(exist_ok=True)
    if not (sub / "resources").exists():
        (sub / "resources").symlink_to(workdir / "resources")
    return snakemake(sub, ["results/generation/dataset/manifest.csv"], [*CONFIGS, TILES81], extra)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="working folder (default: a fresh temp dir)")
    parser.add_argument("--no-run", action="store_true", help="only read a finished run's files")
    parser.add_argument(
        "--dry-run", action="store_true", help="plan the run(s) with snakemake -n, run nothing"
    )
    parser.add_argument("--cores", default="2")
    parser.add_argument(
        "--jobs-at-once",
        type=int,
        help="at most this many CPU-bound jobs at once (default: as many as cores)",
    )
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="also evaluate every run on the held-out source image (smoke_held_out.yaml)",
    )
    tiles = parser.add_mutually_exclusive_group()
    tiles.add_argument("--tiles81", dest="tiles81", action="store_true", default=None)
    tiles.add_argument("--no-tiles81", dest="tiles81", action="store_false")
    args = parser.parse_args(argv)
    if args.dry_run and args.no_run:
        parser.error("--dry-run plans a run, --no-run reads a finished one: give one of them")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flexseg-paper-smoke-"))
    configs = [*CONFIGS, HELD_OUT] if args.held_out else CONFIGS
    gpus = len(usable_gpus("auto"))  # as the workflow finds them (the config's gpus: auto)
    extra = ["--cores", args.cores, "--rerun-incomplete"]
    if args.jobs_at_once is not None:
        extra += ["--resources", f"cpu_load={args.jobs_at_once}"]
    tiles81 = args.tiles81 if args.tiles81 is not None else gpus > 0
    if args.dry_run:
        snakemake(workdir, ["all"], configs, [*extra, "-n"])
        if tiles81:
            run_tiles81(workdir, [*extra, "-n"])
        print(f"workdir={workdir}")
        return
    total = None
    if not args.no_run:
        print(f"GPUs visible: {gpus}; 81-tile variant: {'yes' if tiles81 else 'no'}", flush=True)
        total = snakemake(workdir, ["all"], configs, extra)
    rows = collect(workdir)
    if not rows:
        raise SystemExit(f"no benchmark files under {workdir / 'results' / 'benchmarks'}")
    print_table(rows)
    if tiles81 and not args.no_run:
        seconds = run_tiles81(workdir, extra)
        print(f"\n81-tile variant (1 image, 1 step; {seconds:.0f} s in all):")
        print_table([r for r in collect(workdir / "tiles81") if "shard" in r.job])
    if total is None:
        total = sum(r.seconds for r in rows)
        print("(total = the sum of the benchmarked jobs, not the wall time of the run)")
    print(f"workdir={workdir}")
    print(f"paper_smoke_minutes={total / 60:.2f}")


if __name__ == "__main__":
    main()
