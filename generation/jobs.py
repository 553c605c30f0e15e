"""The generation job table: which source label crop, condition and prompt each image gets.

DGInStyle draws (class, file) pairs by RCS over all of GTA, crops 512 x 512 around the class
(dginstyle_generation.md §2.4) and prompts with the class list plus a weather word (§1.6);
FLEX-Seg generates 10,000 images over standard, fog, rain, snow and night conditions (paper,
"Implementation Details"). The public code has no job-list generator (§5), so these decisions
are ours:

- Jobs are drawn with replacement: a class by P(c) = softmax((1 - f_c) / T) over the source
  statistics (``flexseg.data.rcs.class_probabilities``), then an image uniformly among those with
  more than ``rcs.min_pixels`` of it; a class that no image holds that much of falls back to the
  images that hold any of it (logged), so every class with pixels stays drawable.
- The crop is ``flexseg.data.rcs.select_crop`` on the full-resolution train-id label.
- Conditions are apportioned exactly to the configured shares (largest remainders, ties to the
  earlier of standard, fog, rain, snow, night), then shuffled over the jobs, so a small run has the
  intended mix rather than a random one (``generation.prompt.scheme`` paper). With the
  ``dginstyle`` scheme each job draws DGInStyle's fair coin and weather word instead
  (``flexseg.prompts.dginstyle_choices``), from the same seeded generator after the class and
  image draws; ``jobs.conditions`` is then unused.
- Job ``k``'s seed is drawn from ``numpy.random.SeedSequence([jobs.seed, k])``; its crop uses a
  child of that sequence. The class/image draws and the shuffle use one generator seeded with
  ``jobs.seed``. The same settings give the same CSV, byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from flexseg.config import ConfigError, add_params_arguments, build, params_from_args
from flexseg.data.rcs import ClassStats, class_probabilities, read_class_stats, select_crop
from flexseg.data.readers import load_label
from flexseg.io import DataError, write_text
from flexseg.labels import CLASS_NAMES, CONDITIONS, NUM_CLASSES
from flexseg.prompts import (
    check_template,
    class_list,
    dginstyle_choices,
    paper_choice,
    render_prompt,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One row of ``results/generation/jobs.csv`` (docs/CONTRACTS.md)."""

    job_id: int
    name: str
    image: str
    label: str
    label_map: str
    rcs_class: int
    x0: int
    y0: int
    x1: int
    y1: int
    condition: str
    prompt: str
    seed: int


COLUMNS = tuple(f.name for f in fields(Job))
_INT_COLUMNS = {f.name for f in fields(Job) if f.type == "int"}


def apportion(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """``total`` split over ``shares`` (normalized) by largest remainders (``CONDITIONS`` order)."""
    unknown = set(shares) - set(CONDITIONS)
    if unknown:
        raise ConfigError(f"generation.jobs.conditions: unknown conditions {sorted(unknown)}")
    order = [c for c in CONDITIONS if c in shares]
    weights = np.array([float(shares[c]) for c in order])
    if (weights < 0).any() or not weights.sum() > 0:
        raise ConfigError(
            f"generation.jobs.conditions must be non-negative with a positive sum: {dict(shares)}"
        )
    quotas = total * weights / weights.sum()
    counts = np.floor(quotas).astype(int)
    # Stable sort: equal remainders go to the earlier condition.
    by_remainder = np.argsort(-(quotas - counts), kind="stable")
    counts[by_remainder[: total - counts.sum()]] += 1
    return {c: int(n) for c, n in zip(order, counts, strict=True) if n > 0}


def job_seed_sequence(seed: int, job_id: int) -> np.random.SeedSequence:
    """The entropy of job ``job_id``: its seed and (through a child) its crop."""
    return np.random.SeedSequence([seed, job_id])


def _candidates(stats: ClassStats, min_pixels: int) -> list[np.ndarray]:
    members = []
    for c in range(NUM_CLASSES):
        above = np.flatnonzero(stats.pixels[:, c] > min_pixels)
        if len(above) == 0 and stats.totals[c] > 0:
            log.info(
                "no source image has more than %d px of %s; drawing among the %d that hold any",
                min_pixels,
                CLASS_NAMES[c],
                int((stats.pixels[:, c] > 0).sum()),
            )
            above = np.flatnonzero(stats.pixels[:, c] > 0)
        members.append(above)
    return members


@dataclass(frozen=True)
class JobTableSettings:
    """``generation.jobs`` without ``shards`` (how the table is split does not change it)."""

    num_images: int
    seed: int
    crop_size: int
    min_class_fraction: float
    crop_tries: int
    conditions: dict[str, float]


@dataclass(frozen=True)
class RcsDraw:
    temperature: float
    min_pixels: int


@dataclass(frozen=True)
class PromptSettings:
    scheme: str
    template: str
    condition_words: dict[str, str]


@dataclass(frozen=True)
class JobSettings:
    """The ``generation_jobs`` stage slice."""

    rcs: RcsDraw
    jobs: JobTableSettings
    prompt: PromptSettings


def make_jobs(stats: ClassStats, settings: JobSettings) -> list[Job]:
    """The job table for the statistics ``stats``."""
    s = settings.jobs
    total, seed, template = s.num_images, s.seed, settings.prompt.template
    counts = apportion(total, s.conditions)
    try:
        check_template(template)
    except ValueError as err:
        raise ConfigError(f"generation.prompt.template: {err}") from err

    rng = np.random.default_rng(seed)
    probs = class_probabilities(stats.totals, settings.rcs.temperature)
    members = _candidates(stats, settings.rcs.min_pixels)
    classes = rng.choice(NUM_CLASSES, size=total, p=probs)
    images = np.array([members[c][rng.integers(len(members[c]))] for c in classes], dtype=np.int64)
    words = settings.prompt.condition_words
    if settings.prompt.scheme == "dginstyle":
        choices = dginstyle_choices(total, rng, words)
    else:
        conditions = rng.permutation(np.array([c for c, n in counts.items() for _ in range(n)]))
        choices = [paper_choice(str(c), words) for c in conditions]

    rows: dict[int, Job] = {}
    rejected = 0
    # Jobs are grouped by image so each label is read once; every job's crop uses its own
    # generator, so the grouping does not change the result.
    for index in np.unique(images):
        ref = stats.refs[index]
        label = load_label(ref)
        if label.shape != tuple(stats.sizes[index]):
            raise DataError(
                f"label {ref.label} is {label.shape[1]}x{label.shape[0]} but the class "
                f"statistics recorded {stats.sizes[index][1]}x{stats.sizes[index][0]}; "
                "recompute the statistics"
            )
        for job_id in np.flatnonzero(images == index):
            sequence = job_seed_sequence(seed, int(job_id))
            cls = int(classes[job_id])
            box = select_crop(
                label,
                cls,
                s.crop_size,
                s.min_class_fraction,
                s.crop_tries,
                np.random.default_rng(sequence.spawn(1)[0]),
            )
            rejected += not box.accepted
            choice = choices[job_id]
            rows[int(job_id)] = Job(
                job_id=int(job_id),
                name=ref.name,
                image=str(ref.image),
                label=str(ref.label),
                label_map=ref.label_map,
                rcs_class=cls,
                x0=box.x0,
                y0=box.y0,
                x1=box.x1,
                y1=box.y1,
                condition=choice.condition,
                prompt=render_prompt(
                    class_list(label[box.y0 : box.y1, box.x0 : box.x1]), choice, template
                ),
                seed=int(sequence.generate_state(1, np.uint32)[0]),
            )
    if rejected:
        log.info(
            "%d of %d crops hold at most %.3g of their class after %d tries (the last try is kept)",
            rejected,
            total,
            s.min_class_fraction,
            s.crop_tries,
        )
    return [rows[k] for k in range(total)]


def format_jobs(jobs: Sequence[Job]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for job in jobs:
        writer.writerow(astuple(job))
    return buf.getvalue()


def write_jobs(path: str | Path, jobs: Sequence[Job]) -> None:
    write_text(path, format_jobs(jobs))


def read_jobs(path: str | Path) -> list[Job]:
    """Read a job table; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"job table not found: {path}")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise DataError(
                    f"{path}: columns are {','.join(reader.fieldnames or [])}; "
                    f"expected {','.join(COLUMNS)}"
                )
            jobs = []
            for line, row in enumerate(reader, start=2):
                try:
                    values = {k: int(v) if k in _INT_COLUMNS else v for k, v in row.items()}
                except ValueError as err:
                    raise DataError(f"{path}, line {line}: {err}") from err
                jobs.append(Job(**values))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"unreadable job table {path}: {err}") from err
    if not jobs:
        raise DataError(f"{path}: the job table has no rows")
    return jobs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generation.jobs",
        description="Draw the generation jobs: RCS class, label crop, condition, prompt, seed.",
    )
    add_params_arguments(parser)
    parser.add_argument(
        "--stats", required=True, type=Path, help="class statistics JSON (rcs stats)"
    )
    parser.add_argument("--out", required=True, type=Path, help="job table CSV to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = build(JobSettings, params_from_args(args, "generation_jobs"))
        jobs = make_jobs(read_class_stats(args.stats), settings)
        write_jobs(args.out, jobs)
    except (DataError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    per_condition = {c: sum(j.condition == c for j in jobs) for c in CONDITIONS}
    per_class = np.bincount([j.rcs_class for j in jobs], minlength=NUM_CLASSES)
    print(
        f"{len(jobs)} generation jobs over {len({j.name for j in jobs})} source images "
        f"-> {args.out}"
    )
    print("  conditions: " + ", ".join(f"{c} {n}" for c, n in per_condition.items() if n))
    print(
        "  classes: "
        + ", ".join(f"{CLASS_NAMES[c]} {per_class[c]}" for c in np.flatnonzero(per_class))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
