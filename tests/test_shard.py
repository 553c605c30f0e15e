"""Sharded generation with resume, and the merge, on tiny random components."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from flexseg.data.readers import list_samples
from flexseg.io import DataError, read_image, read_label, write_label
from generation.jobs import Job, write_jobs
from generation.merge import MERGED_COLUMNS, grid_rows, run_merge
from generation.shard import (
    SETTINGS_FILE,
    crop_label,
    main,
    ordered_jobs,
    run_shard,
    sample_id,
    shard_jobs,
)

pytest_plugins = ["diffusion_fixtures"]  # tiny_model_dirs

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent


def sampler_params(steps: int = 2) -> dict:
    return {
        "steps": steps,
        "guidance_scale": 7.5,
        "upscale": 2,
        "tile_latent": 4,
        "tile_stride": 2,
        "large_component_px": 100,
        "controlnet_scale": 1.0,
        "dtype": "float32",
        "tf32": False,
    }


def make_params(steps: int = 2) -> dict:
    return {
        "models": {
            "kind": "demo",
            "base": "unused",
            "controlnet": "unused",
            "controlnet_subfolder": None,
        },
        "sampler": sampler_params(steps),
    }


@pytest.fixture()
def source(tmp_path: Path) -> dict:
    """Two train-id source labels (with void) and a job table of 5 jobs, one box past the edge."""
    rng = np.random.default_rng(0)
    labels = []
    for k in range(2):
        label = np.kron(rng.integers(0, 19, (5, 6)), np.ones((8, 8), np.int64)).astype(np.uint8)
        label[:4, :] = 255
        path = tmp_path / "src" / f"{k:05d}_labelTrainIds.png"
        write_label(path, label)
        labels.append((path, label))
    boxes = [(0, 0), (16, 8), (24, 16), (8, 0), (30, 20)]  # the last runs past 48 x 40
    jobs = [
        Job(
            job_id=i,
            name=f"{i % 2:05d}",
            image=str(tmp_path / "src" / f"{i % 2:05d}.png"),
            label=str(labels[i % 2][0]),
            label_map="train_ids",
            rcs_class=int(i + 3),
            x0=x0,
            y0=y0,
            x1=x0 + 32,
            y1=y0 + 32,
            condition=["standard", "fog", "night", "rain", "snow"][i],
            prompt=f"prompt {i}",
            seed=100 + i,
        )
        for i, (x0, y0) in enumerate(boxes)
    ]
    jobs_path = tmp_path / "jobs.csv"
    write_jobs(jobs_path, list(reversed(jobs)))  # order on disk must not matter
    return {"jobs": jobs, "jobs_path": jobs_path, "labels": [lab for _, lab in labels]}


def run(source, tiny_model_dirs, out_dir, shard=0, num_shards=1, steps=2, max_new=None):
    return run_shard(
        make_params(steps),
        source["jobs_path"],
        shard,
        num_shards,
        Path(out_dir) / "manifest.csv",
        out_dir,
        prior=tiny_model_dirs.prior,
        controlnet=tiny_model_dirs.controlnet,
        max_new=max_new,
        options={"tile_batch": 9, "device": "cpu"},
    )


# ---------------------------------------------------------------------------------------------
# Pieces


def test_crop_label_pads_outside_with_void():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 19, (7, 9)).astype(np.uint8)
    for x0, y0, x1, y1 in [(0, 0, 4, 4), (6, 5, 12, 10), (-2, -3, 3, 2), (-1, -1, 10, 8)]:
        got = crop_label(label, x0, y0, x1, y1)
        assert got.shape == (y1 - y0, x1 - x0)
        for y in range(y0, y1):
            for x in range(x0, x1):
                inside = 0 <= y < 7 and 0 <= x < 9
                assert got[y - y0, x - x0] == (label[y, x] if inside else 255)


def test_sample_ids_and_shard_blocks(source):
    job = source["jobs"][1]
    assert sample_id(job) == "000001_00001_fog"
    odd = Job(**{**job.__dict__, "job_id": 12, "name": "a b/c"})
    assert sample_id(odd) == "000012_a-b-c_fog"
    jobs = ordered_jobs(source["jobs_path"])
    assert [j.job_id for j in jobs] == [0, 1, 2, 3, 4]
    parts = [shard_jobs(jobs, k, 3) for k in range(3)]
    assert [j.job_id for part in parts for j in part] == [0, 1, 2, 3, 4]
    assert sorted(len(p) for p in parts) == [1, 2, 2]
    with pytest.raises(ValueError, match="shard 3 is not in 0..2"):
        shard_jobs(jobs, 3, 3)


def test_duplicate_job_ids_are_refused(source, tmp_path):
    path = tmp_path / "dup.csv"
    write_jobs(path, [source["jobs"][0], source["jobs"][0]])
    with pytest.raises(DataError, match="duplicate job ids"):
        ordered_jobs(path)


# ---------------------------------------------------------------------------------------------
# A whole shard


def test_shard_writes_labels_with_void_images_and_manifest(source, tiny_model_dirs, tmp_path):
    out = tmp_path / "shards" / "001"
    report = run(source, tiny_model_dirs, out, shard=1, num_shards=2)
    assert (report.generated, report.skipped) == (3, 0)
    manifest = pd.read_csv(report.manifest, keep_default_na=False)
    assert list(manifest["job_id"]) == [2, 3, 4]
    assert list(manifest["name"]) == [
        "000002_00000_night",
        "000003_00001_rain",
        "000004_00000_snow",
    ]
    assert sorted(os.listdir(out / "images")) == [f"{n}.png" for n in manifest["name"]]
    for row in manifest.itertuples():
        job = source["jobs"][row.job_id]
        assert row.image == str(out / "images" / f"{row.name}.png")
        assert row.label == str(out / "labels" / f"{row.name}_labelTrainIds.png")
        label = read_label(row.label)
        expected = crop_label(source["labels"][row.job_id % 2], job.x0, job.y0, job.x1, job.y1)
        np.testing.assert_array_equal(label, expected)
        assert 255 in label and not ((label >= 19) & (label != 255)).any()
        assert read_image(row.image).shape == (32, 32, 3)
        assert (row.prompt, row.condition, row.seed) == (job.prompt, job.condition, job.seed)
        assert (row.x0, row.y0, row.x1, row.y1, row.rcs_class) == (
            job.x0,
            job.y0,
            job.x1,
            job.y1,
            job.rcs_class,
        )
        assert json.loads(row.sampler)["steps"] == 2
        assert row.base_model == str(tiny_model_dirs.prior)
    # The box of job 4 runs past the source's bottom-right corner: padded with void.
    assert (read_label(manifest["label"][2])[20:, :] == 255).all()


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_interrupted_shard_resumes_without_redoing_or_leaving_partial_files(
    source, tiny_model_dirs, tmp_path
):
    out = tmp_path / "shard"
    first = run(source, tiny_model_dirs, out, max_new=2)
    assert (first.generated, first.manifest) == (2, None)
    assert not (out / "manifest.csv").exists()
    done = _mtimes(out / "images")
    assert sorted(done) == ["000000_00000_standard.png", "000001_00001_fog.png"]
    # A kill between the label and the image of job 2, and a temporary file of a killed write.
    label_only = out / "labels" / "000002_00000_night_labelTrainIds.png"
    write_label(label_only, np.zeros((32, 32), np.uint8))
    (out / "images" / ".000003_00001_rain.x1y2z3w4.tmp.png").write_bytes(b"\x89PNG half")

    second = run(source, tiny_model_dirs, out)
    assert (second.generated, second.skipped, second.wiped) == (3, 2, False)
    after = _mtimes(out / "images")
    assert all(after[name] == t for name, t in done.items())  # complete jobs not regenerated
    assert not [p for p in out.rglob(".*") if ".tmp" in p.name]
    assert len(after) == 5 and len(_mtimes(out / "labels")) == 5
    np.testing.assert_array_equal(
        read_label(label_only), crop_label(source["labels"][0], 24, 16, 56, 48)
    )
    manifest = pd.read_csv(second.manifest)
    assert manifest["name"].is_unique and len(manifest) == 5

    third = run(source, tiny_model_dirs, out)
    assert (third.generated, third.skipped) == (0, 5)
    assert _mtimes(out / "images") == after


def test_changed_settings_wipe_the_shard(source, tiny_model_dirs, tmp_path):
    out = tmp_path / "shard"
    run(source, tiny_model_dirs, out, shard=0, num_shards=2)
    before = _mtimes(out / "images")
    image = read_image(out / "images" / "000000_00000_standard.png")
    (out / "images" / "stale.png").write_bytes(b"old")
    recorded = json.loads((out / SETTINGS_FILE).read_text())
    changed = run(source, tiny_model_dirs, out, shard=0, num_shards=2, steps=3)
    assert changed.wiped and changed.generated == 2 and changed.skipped == 0
    assert json.loads((out / SETTINGS_FILE).read_text())["hash"] != recorded["hash"]
    assert not (out / "images" / "stale.png").exists()
    after = _mtimes(out / "images")
    assert set(after) == set(before) and all(after[n] != before[n] for n in before)
    assert not np.array_equal(read_image(out / "images" / "000000_00000_standard.png"), image)


def test_shard_command_line(source, tiny_model_dirs, tmp_path, capsys):
    out = tmp_path / "shards" / "000"
    code = main(
        [
            "--params",
            json.dumps(make_params()),
            "--jobs",
            str(source["jobs_path"]),
            "--shard",
            "000",
            "--num-shards",
            "5",
            "--prior",
            str(tiny_model_dirs.prior),
            "--controlnet",
            str(tiny_model_dirs.controlnet),
            "--manifest",
            str(tmp_path / "shard_000.csv"),
            "--work-dir",
            str(out),
        ]
    )
    assert code == 0 and "1 generated" in capsys.readouterr().out
    (row,) = pd.read_csv(tmp_path / "shard_000.csv").itertuples()  # the manifest given
    assert row.image == str(out / "images" / f"{row.name}.png") and Path(row.image).is_file()
    assert not (out / "manifest.csv").exists()
    # Demo models without their folders: a clear error, no traceback.
    code = main(
        ["--params", json.dumps(make_params()), "--jobs", str(source["jobs_path"])]
        + ["--shard", "0", "--num-shards", "1", "--manifest", str(tmp_path / "x.csv")]
        + ["--work-dir", str(tmp_path / "x")]
    )
    assert code == 1 and "--prior DIR --controlnet DIR" in capsys.readouterr().err
    help_run = subprocess.run(
        [sys.executable, "-m", "generation.shard", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert help_run.returncode == 0 and "--num-shards" in help_run.stdout


# ---------------------------------------------------------------------------------------------
# Merge


def test_merge_links_files_checks_counts_and_draws_a_grid(source, tiny_model_dirs, tmp_path):
    shards = [tmp_path / "shards" / f"{k:03d}" for k in range(2)]
    for k, out in enumerate(shards):
        run(source, tiny_model_dirs, out, shard=k, num_shards=2)
    manifests = [out / "manifest.csv" for out in shards]
    dataset = tmp_path / "dataset"
    (dataset / "images").mkdir(parents=True)
    (dataset / "images" / "old_run.png").write_bytes(b"stale")
    merged = run_merge(
        {"expected": 5, "grid_samples": 3},
        manifests,
        dataset / "manifest.csv",
        tmp_path / "grid.png",
    )
    assert list(merged["job_id"]) == [0, 1, 2, 3, 4]
    on_disk = pd.read_csv(dataset / "manifest.csv", keep_default_na=False)
    assert tuple(on_disk.columns) == MERGED_COLUMNS  # what generation.released writes too
    for column in (
        "name",
        "image",
        "label",
        "condition",
        "prompt",
        "rcs_class",
        "source_image",
        "seed",
    ):
        assert column in on_disk.columns
    assert sorted(os.listdir(dataset / "images")) == sorted(f"{n}.png" for n in on_disk["name"])
    for row in on_disk.itertuples():
        assert Path(row.image) == dataset / "images" / f"{row.name}.png"
        assert os.path.samefile(row.image, row.shard_image)  # hard link, not a copy
        assert Path(row.label).name == f"{row.name}_labelTrainIds.png"
    assert read_image(tmp_path / "grid.png").shape[0] > 100
    # The merged folder reads back as a "generated" dataset, conditions from the manifest.
    refs = list_samples({"name": "generated", "format": "generated", "root": str(dataset)})
    assert [(r.name, r.condition) for r in refs] == list(
        zip(on_disk["name"], on_disk["condition"], strict=True)
    )
    assert grid_rows(5, 3) == [0, 2, 4] and grid_rows(2, 8) == [0, 1]

    # A shard that lost a row, or a sample listed twice, fails loudly.
    short = pd.read_csv(manifests[1], keep_default_na=False).iloc[:-1]
    short.to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match="hold 4 samples, expected 5"):
        run_merge(
            {"expected": 5},
            [manifests[0], tmp_path / "short.csv"],
            dataset / "m.csv",
            tmp_path / "g.png",
        )
    with pytest.raises(DataError, match="listed more than once"):
        run_merge(
            {"expected": 4}, [manifests[0], manifests[0]], dataset / "m.csv", tmp_path / "g.png"
        )
    with pytest.raises(DataError, match="shard manifest not found"):
        run_merge({"expected": 5}, [tmp_path / "nope.csv"], dataset / "m.csv", tmp_path / "g.png")
    assert not (dataset / "m.csv").exists()
