"""One shard of the generated dataset: label crop -> 20-channel one-hot -> MRLF image.

For each job of the shard (``results/generation/jobs.csv``): read the source label in train ids
(``flexseg.data.readers``), crop the job's box, build the DGInStyle condition
(``flexseg.labels.to_onehot20``), sample an image (``generation.sampler.generate``) and write

    <work-dir>/labels/<id>_labelTrainIds.png   the crop label, void = 255 (never 19)
    <work-dir>/images/<id>.png                 the generated RGB image at the crop size
    --manifest                                 one row per job, written last (the Snakemake output)

with ``<id> = <job_id:06d>_<source name>_<condition>`` (unique: the job id is).

Decisions:

- Shard k of N holds the contiguous block of jobs (ordered by job id) at positions
  floor(k * n / N) .. floor((k + 1) * n / N) - 1, so shard sizes differ by at most one and a
  shard's ids form one range.
- The crop box is ``[x0, x1) x [y0, y1)`` in source pixels; where it leaves the image it is padded
  with 255 (void), which the condition encodes as channel 19.
- Resume: a job is complete when both its files exist; the label is written first and the image
  last, each to a temporary name renamed into place (``flexseg.io``), so an image on disk implies
  a whole label. Complete jobs are skipped, everything else is (re)generated, and temporary files
  left by a killed run are removed first.
- ``settings.json`` in the work folder holds a hash of everything an image depends on: the stage
  params, the model folders (file names, sizes and modification times) or hub ids, and the
  shard's job rows. When it differs from the current one the shard's images and labels are wiped
  before generating, so changed settings never silently reuse old images.
- The manifest's paths are the output paths as given (relative to the working directory when the
  output folder is), and its ``sampler`` column holds the sampler settings as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from flexseg.config import (
    ConfigError,
    add_execution_arguments,
    add_params_arguments,
    build,
    execution_from_args,
    params_from_args,
    read_execution,
    read_stage,
)
from flexseg.io import (
    DataError,
    remove_stale_temporaries,
    remove_unlisted,
    write_csv,
    write_image,
    write_json,
    write_label,
)
from flexseg.labels import IGNORE_INDEX, NUM_CLASSES, to_onehot20
from flexseg.peak_memory import report_peak_memory
from flexseg.precision import apply_tf32

from .jobs import Job, read_jobs

SETTINGS_FILE = "settings.json"
SETTINGS_VERSION = 1
MANIFEST_COLUMNS = (
    "name",
    "image",
    "label",
    "condition",
    "prompt",
    "rcs_class",
    "source_name",
    "source_image",
    "source_label",
    "x0",
    "y0",
    "x1",
    "y1",
    "seed",
    "job_id",
    "base_model",
    "controlnet_model",
    "sampler",
)


@dataclass(frozen=True)
class ShardReport:
    generated: int
    skipped: int
    wiped: bool
    manifest: Path | None  # None when stopped early (``max_new``)


def ordered_jobs(path: str | Path) -> list[Job]:
    """The job table (``generation.jobs.read_jobs``) sorted by job id; duplicate ids are errors."""
    jobs = sorted(read_jobs(path), key=lambda j: j.job_id)
    dup = sorted(
        {a.job_id for a, b in zip(jobs[:-1], jobs[1:], strict=True) if a.job_id == b.job_id}
    )
    if dup:
        raise DataError(f"{path}: duplicate job ids {dup[:5]}")
    for job in jobs:
        if job.x1 <= job.x0 or job.y1 <= job.y0:
            raise DataError(
                f"{path}: job {job.job_id} has an empty crop box {job.x0, job.y0, job.x1, job.y1}"
            )
    return jobs


def shard_jobs(jobs: list[Job], shard: int, num_shards: int) -> list[Job]:
    """The contiguous block of ``jobs`` that shard ``shard`` of ``num_shards`` generates."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is not in 0..{num_shards - 1}")
    n = len(jobs)
    return jobs[shard * n // num_shards : (shard + 1) * n // num_shards]


def sample_id(job: Job) -> str:
    """``<job_id:06d>_<source name>_<condition>``, with characters unsafe in file names replaced."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", f"{job.name}_{job.condition}")
    return f"{job.job_id:06d}_{safe}"


def crop_label(label: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """The box ``[x0, x1) x [y0, y1)`` of ``label``, padded with 255 outside the image."""
    out = np.full((y1 - y0, x1 - x0), IGNORE_INDEX, dtype=np.uint8)
    h, w = label.shape
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy0 < sy1 and sx0 < sx1:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = label[sy0:sy1, sx0:sx1]
    return out


def load_job_label(job: Job) -> np.ndarray:
    """The job's source label in train ids, read through the dataset readers."""
    from flexseg.data.readers import SampleRef, load_label

    ref = SampleRef(
        name=job.name, image=Path(job.image), label=Path(job.label), label_map=job.label_map
    )
    label = load_label(ref)
    bad = np.unique(label[(label >= NUM_CLASSES) & (label != IGNORE_INDEX)])
    if bad.size:
        raise DataError(f"label {job.label}: values {bad.tolist()} are neither train ids nor 255")
    return label


def _folder_fingerprint(folder: Path) -> list[list[Any]]:
    return [
        [str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def settings_record(
    params: dict[str, Any], jobs: list[Job], prior: Path | None, controlnet: Path | None
) -> dict[str, Any]:
    """What the shard's images depend on, and its hash."""
    models: dict[str, Any] = {}
    for key, folder in (("prior", prior), ("controlnet", controlnet)):
        if folder is not None:
            models[key] = {"path": str(folder), "files": _folder_fingerprint(Path(folder))}
    base = params["models"]["base"]
    if params["models"]["kind"] == "pretrained" and base and Path(base).is_dir():
        models["base"] = {"path": base, "files": _folder_fingerprint(Path(base))}
    content = {
        "version": SETTINGS_VERSION,
        "params": params,
        "models": models,
        "jobs": [asdict(j) for j in jobs],
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return {"hash": digest, "params": params, "num_jobs": len(jobs)}


def _read_settings_hash(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("hash")
    except (OSError, ValueError, AttributeError):
        return None


def prepare_work_dir(work_dir: Path, manifest: Path, settings: dict[str, Any]) -> bool:
    """Create the shard's folders, wipe them (and the manifest) when the settings hash changed,
    drop temporaries. Returns whether a wipe happened."""
    images, labels = work_dir / "images", work_dir / "labels"
    settings_path = work_dir / SETTINGS_FILE
    wiped = False
    if settings_path.exists() and _read_settings_hash(settings_path) != settings["hash"]:
        for folder in (images, labels):
            remove_unlisted(folder, ())
        manifest.unlink(missing_ok=True)
        wiped = True
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for place in (work_dir, images, labels, manifest):
        remove_stale_temporaries(place)
    write_json(settings_path, settings)
    return wiped


def manifest_row(
    job: Job, work_dir: Path, model_ids: dict[str, str], sampler: dict[str, Any]
) -> dict[str, Any]:
    sid = sample_id(job)
    return {
        "name": sid,
        "image": str(work_dir / "images" / f"{sid}.png"),
        "label": str(work_dir / "labels" / f"{sid}_labelTrainIds.png"),
        "condition": job.condition,
        "prompt": job.prompt,
        "rcs_class": job.rcs_class,
        "source_name": job.name,
        "source_image": job.image,
        "source_label": job.label,
        "x0": job.x0,
        "y0": job.y0,
        "x1": job.x1,
        "y1": job.y1,
        "seed": job.seed,
        "job_id": job.job_id,
        "base_model": model_ids["base"],
        "controlnet_model": model_ids["controlnet"],
        "sampler": json.dumps(sampler, sort_keys=True),
    }


def _model_ids(
    params: dict[str, Any], prior: Path | None, controlnet: Path | None
) -> dict[str, str]:
    models = params["models"]
    if models["kind"] == "demo":
        return {"base": str(prior), "controlnet": str(controlnet)}
    sub = models["controlnet_subfolder"]
    return {
        "base": models["base"],
        "controlnet": f"{models['controlnet']}/{sub}" if sub else models["controlnet"],
    }


def run_shard(
    params: dict[str, Any],
    jobs_path: str | Path,
    shard: int,
    num_shards: int,
    manifest: str | Path,
    work_dir: str | Path,
    prior: str | Path | None = None,
    controlnet: str | Path | None = None,
    max_new: int | None = None,
    options: dict[str, Any] | None = None,
) -> ShardReport:
    """Generate the missing images of one shard into ``work_dir`` and write its ``manifest``.
    ``params``: the ``generate`` slice; ``options``: ``tile_batch`` and ``device`` (the schema's
    defaults for those not given; neither changes the images; ``threads`` is the command's).

    ``max_new`` stops after that many new images, without a manifest (an interrupted run).
    """
    from .components import load_components
    from .sampler import SamplerSettings, generate

    manifest, work_dir = Path(manifest), Path(work_dir)
    prior = Path(prior) if prior is not None else None
    controlnet = Path(controlnet) if controlnet is not None else None
    if params["models"]["kind"] == "demo" and (prior is None or controlnet is None):
        raise ConfigError("generation.models.kind is demo: pass --prior DIR --controlnet DIR")
    params = read_stage(params, "generate")
    run = read_execution("generate", options or {})
    settings = build(SamplerSettings, {**params["sampler"], "tile_batch": run["tile_batch"]})
    jobs = shard_jobs(ordered_jobs(jobs_path), shard, num_shards)
    record = settings_record(params, jobs, prior, controlnet)
    wiped = prepare_work_dir(work_dir, manifest, record)
    model_ids = _model_ids(params, prior, controlnet)
    rows = [manifest_row(job, work_dir, model_ids, params["sampler"]) for job in jobs]
    todo = [
        (job, row)
        for job, row in zip(jobs, rows, strict=True)
        if not (Path(row["image"]).is_file() and Path(row["label"]).is_file())
    ]
    skipped = len(jobs) - len(todo)
    generated = 0
    progress = tqdm(total=len(jobs), initial=skipped, desc=f"shard {shard:03d}", file=sys.stderr)
    components = None
    for job, row in todo:
        if max_new is not None and generated >= max_new:
            progress.close()
            return ShardReport(generated=generated, skipped=skipped, wiped=wiped, manifest=None)
        if components is None:
            apply_tf32(params["sampler"]["tf32"])
            components = load_components(
                params["models"],
                prior_dir=prior,
                controlnet_dir=controlnet,
                device=run["device"],
                dtype=settings.dtype,
            )
        label = crop_label(load_job_label(job), job.x0, job.y0, job.x1, job.y1)
        result = generate(components, to_onehot20(label), job.prompt, job.seed, settings)
        write_label(row["label"], label)
        write_image(row["image"], result.image)
        generated += 1
        progress.update(1)
    progress.close()
    write_csv(manifest, pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)))
    return ShardReport(generated=generated, skipped=skipped, wiped=wiped, manifest=manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m generation.shard",
        description="Generate one shard of the DGInStyle-style dataset (resumable).",
    )
    add_params_arguments(parser)
    parser.add_argument("--jobs", required=True, help="the job table (results/generation/jobs.csv)")
    parser.add_argument("--shard", required=True, type=int, help="this shard's index, from 0")
    parser.add_argument("--num-shards", required=True, type=int, help="the number of shards")
    parser.add_argument("--prior", help="demo: the prior folder (unet/ vae/ text_encoder/ ...)")
    parser.add_argument("--controlnet", help="demo: the ControlNet folder")
    parser.add_argument("--manifest", required=True, help="the shard's manifest (CSV) to write")
    parser.add_argument(
        "--work-dir",
        required=True,
        help="the folder of the shard's images/ and labels/, kept across kills (resume)",
    )
    add_execution_arguments(parser, "generate")
    args = parser.parse_args(argv)
    try:
        params = params_from_args(args, "generate")
        options = execution_from_args(args, "generate")
        import torch

        torch.set_num_threads(options["threads"])
        report = run_shard(
            params,
            args.jobs,
            args.shard,
            args.num_shards,
            args.manifest,
            args.work_dir,
            prior=args.prior,
            controlnet=args.controlnet,
            options=options,
        )
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report_peak_memory()
    print(
        f"shard {args.shard}: {report.generated} generated, {report.skipped} already complete"
        f"{' (old settings wiped)' if report.wiped else ''}; manifest {report.manifest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
