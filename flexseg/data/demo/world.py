"""Render the procedural demo world: a game-like source and five shifted targets, on disk.

``python -m flexseg.data.demo --params P --out resources/demo --grid results/demo/world_grid.png``
(``P = {"demo": <config section demo>}``) writes, each in its real dataset's layout
(training_and_evaluation.md §4): ``gta/`` and ``gta_val/`` (GTA5: palettized raw Cityscapes ids),
``cityscapes/`` (``gtFine_labelIds``), ``bdd100k/`` (JPEG, train-id masks), ``mapillary/`` (JPEG,
palettized v1.2 indices), ``acdc/`` (fog, night, rain, snow), ``dark_zurich/`` (night), and
``prior/`` (images, train-id labels and ``captions.csv``: renders in every condition that stand in
for Stable Diffusion's broad prior when the tiny demo generator is trained). ``world.json`` is
written last and marks the world complete: counts, sizes, seed, class statistics and the SHA-256
of every file. The grid PNG shows a few images per domain beside their coloured labels.

The stand-in for FLEX-Seg's data (the paper trains on GTA5 plus DGInStyle images and tests on
ACDC, Dark Zurich, Cityscapes, BDD100K and Mapillary) is ours: how the domains differ, the class
frequencies and the scene grammar are documented in ``flexseg.data.demo``. Prior captions follow
DGInStyle's prompts: the classes present in train-id order joined by spaces, and for an adverse
condition ``"A city street scene with {classes}, in {word} weather."`` (``flexseg.prompts``); the
template and words are those of ``generation.prompt`` (passed as ``prompt`` in the params; the
schema's defaults otherwise).

Files of an earlier render that this one did not write (e.g. after lowering a count) are removed
from the domain folders, so that the readers never list stale images. A non-empty ``--out``
without a demo world's marker is refused rather than overwritten.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flexseg.config import ConfigError, Part, read_part
from flexseg.data.demo.classes import FINE_TO_TRAIN
from flexseg.data.demo.domains import (
    STYLE_STREAM,
    Domain,
    Item,
    build_domains,
    item_seed,
    to_label_space,
)
from flexseg.data.demo.scene import render_scene
from flexseg.data.demo.style import shade
from flexseg.io import (
    atomic_path,
    opencv_single_threaded,
    remove_unlisted,
    write_image,
    write_json,
    write_label,
    write_text,
)
from flexseg.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, colorize
from flexseg.prompts import class_list, make_prompt

log = logging.getLogger("flexseg.data.demo")

MARKER = ".demo_world"
WORLD_FILE = "world.json"
CAPTIONS_FILE = "prior/captions.csv"
DEFAULT_PROMPT = read_part({}, Part("generation.prompt"), "generation.prompt")
GRID_CELL_HEIGHT = 72


@dataclass
class ItemResult:
    """What rendering one image produced: its files and hashes, class pixels, caption, preview."""

    domain: str
    index: int
    condition: str
    size: tuple[int, int]
    files: list[tuple[str, str]]
    class_pixels: np.ndarray
    void_pixels: int
    caption: str = ""
    preview: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)


def validate_demo(section: Any) -> dict[str, Any]:
    """The ``demo`` config section checked against ``workflow/schemas/demo.schema.yaml``, with the
    schema's defaults filled in; ConfigError naming the key otherwise."""
    return read_part(section, Part("demo"), "demo")


def _encode(path: str, rgb: np.ndarray, jpeg_quality: int | None) -> bytes:
    ext = ".jpg" if jpeg_quality is not None else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if jpeg_quality is not None else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"could not encode image {path}")
    return buf.tobytes()


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def render_item(
    domain: Domain, item: Item, root: Path, prompt: dict[str, Any], preview: bool
) -> ItemResult:
    """Render, write and hash one image and its label."""
    seed = item_seed(domain.seed, domain.name, item.index)
    width, height = item.size
    render = render_scene(
        seed, width, height, lambda rng: domain.camera(rng, width, height), require=item.require
    )
    style_rng = np.random.default_rng([*seed, STYLE_STREAM])
    look = domain.look(style_rng, item)
    rgb = shade(render, look, item.condition, style_rng)
    fine = render.gbuffer.fine
    train = FINE_TO_TRAIN[fine]

    image_bytes = _encode(item.image, rgb, domain.jpeg_quality)
    _write_bytes(root / item.image, image_bytes)
    write_label(root / item.label, to_label_space(fine, domain.label_space), domain.palette)
    label_bytes = (root / item.label).read_bytes()
    files = [
        (item.image, hashlib.sha256(image_bytes).hexdigest()),
        (item.label, hashlib.sha256(label_bytes).hexdigest()),
    ]
    counts = np.bincount(train.reshape(-1), minlength=256)
    return ItemResult(
        domain=domain.name,
        index=item.index,
        condition=item.condition,
        size=item.size,
        files=files,
        class_pixels=counts[:NUM_CLASSES].astype(np.int64),
        void_pixels=int(counts[IGNORE_INDEX]),
        caption=(
            make_prompt(
                class_list(train), item.condition, prompt["template"], prompt["condition_words"]
            )
            if domain.name == "prior"
            else ""
        ),
        preview=(_decode(image_bytes), train) if preview else None,
    )


def _decode(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


_WORKER_STATE: dict[str, Any] = {}


def _init_worker(root: Path, prompt: dict[str, Any]) -> None:
    # One OpenCV thread per process: the pool provides the parallelism.
    cv2.setNumThreads(1)
    _WORKER_STATE.update(root=root, prompt=prompt)


def _run_task(task: tuple[Domain, Item, bool]) -> ItemResult:
    domain, item, preview = task
    return render_item(domain, item, _WORKER_STATE["root"], _WORKER_STATE["prompt"], preview)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ConfigError(
            f"--out {out} is a non-empty folder that holds no demo world (no {MARKER} marker); "
            "refusing to write the demo world over it"
        )


def _grid(results: dict[str, list[ItemResult]], domains: list[Domain]) -> np.ndarray:
    """One row per domain: image and coloured label side by side, for each preview."""
    rows = []
    title_w = 96
    for d in domains:
        cells = []
        for r in results[d.name]:
            if r.preview is None:
                continue
            rgb, train = r.preview
            h, w = train.shape
            cw = max(1, int(round(w * GRID_CELL_HEIGHT / h)))
            img = cv2.resize(rgb, (cw, GRID_CELL_HEIGHT), interpolation=cv2.INTER_AREA)
            lab = cv2.resize(
                colorize(train), (cw, GRID_CELL_HEIGHT), interpolation=cv2.INTER_NEAREST
            )
            cells += [img, lab, np.full((GRID_CELL_HEIGHT, 4, 3), 255, np.uint8)]
        if not cells:
            continue
        title = np.full((GRID_CELL_HEIGHT, title_w, 3), 255, np.uint8)
        cv2.putText(
            title,
            d.name,
            (4, GRID_CELL_HEIGHT // 2 + 4),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.38,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
        rows.append(np.concatenate([title, *cells], axis=1))
    if not rows:
        return np.full((GRID_CELL_HEIGHT, title_w, 3), 255, np.uint8)
    width = max(r.shape[1] for r in rows)
    padded = [
        np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    return np.concatenate(padded, axis=0)


def _captions_csv(rows: list[ItemResult], domain: Domain) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "condition", "caption"])
    for r in rows:
        name = Path(domain.item(r.index).image).stem
        writer.writerow([name, r.condition, r.caption])
    return buf.getvalue()


def render_world(
    demo: dict[str, Any],
    out: str | os.PathLike,
    grid: str | os.PathLike | None = None,
    workers: int = 1,
    prompt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Render every domain of ``demo`` (a config ``demo`` section) under ``out``; return the
    summary that is also written to ``out/world.json``."""
    demo = validate_demo(demo)
    prompt = DEFAULT_PROMPT if prompt is None else prompt
    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / MARKER, "a rendered demo world (flexseg.data.demo)\n")
    (out / WORLD_FILE).unlink(missing_ok=True)

    domains = build_domains(demo)
    n_preview = int(demo["grid_samples"]) if grid is not None else 0
    tasks = [(d, item, item.index < n_preview) for d in domains for item in d.items()]
    results: dict[str, list[ItemResult]] = {d.name: [] for d in domains}
    if workers <= 1:
        _init_worker(out, prompt)
        done = [_run_task(t) for t in tasks]
    else:
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with (
            opencv_single_threaded(),
            ctx.Pool(workers, initializer=_init_worker, initargs=(out, prompt)) as pool,
        ):
            done = list(pool.imap_unordered(_run_task, tasks, chunksize=4))
    for r in sorted(done, key=lambda r: (r.domain, r.index)):
        results[r.domain].append(r)

    by_name = {d.name: d for d in domains}
    captions = _captions_csv(results["prior"], by_name["prior"])
    write_text(out / CAPTIONS_FILE, captions)
    files = [f for d in domains for r in results[d.name] for f in r.files]
    files.append((CAPTIONS_FILE, hashlib.sha256(captions.encode()).hexdigest()))
    keep = {out / path for path, _ in files}
    removed = [
        p for f in sorted({d.folder for d in domains}) for p in remove_unlisted(out / f, keep)
    ]
    if removed:
        log.info("removed %d files of an earlier render, e.g. %s", len(removed), removed[0])

    if grid is not None:
        write_image(grid, _grid(results, domains))

    summary = {
        "seed": int(demo["seed"]),
        "classes": list(CLASS_NAMES),
        "domains": {},
        "files": [{"path": p, "sha256": h} for p, h in sorted(files)],
    }
    for d in domains:
        rows = results[d.name]
        pixels = np.sum([r.class_pixels for r in rows], axis=0)
        conditions: dict[str, int] = {}
        for r in rows:
            conditions[r.condition] = conditions.get(r.condition, 0) + 1
        summary["domains"][d.name] = {
            "folder": d.folder,
            "count": len(rows),
            "size": list(d.size),
            "sizes": [list(s) for s in sorted({tuple(r.size) for r in rows})],
            "label_space": d.label_space,
            "conditions": dict(sorted(conditions.items())),
            "class_pixels": pixels.tolist(),
            "void_pixels": int(sum(r.void_pixels for r in rows)),
            "images_with_class": [
                int(sum(r.class_pixels[c] > 0 for r in rows)) for c in range(NUM_CLASSES)
            ],
        }
    write_json(out / WORLD_FILE, summary)
    return summary


def class_frequency_table(summary: dict[str, Any], domain: str = "source") -> str:
    """Per class: share of labelled pixels and number of images, most common first."""
    info = summary["domains"][domain]
    pixels = np.asarray(info["class_pixels"], dtype=np.float64)
    share = pixels / max(pixels.sum(), 1.0)
    lines = [f"{domain}: class share of labelled pixels (images with the class of {info['count']})"]
    for c in np.argsort(-share):
        lines.append(
            f"  {CLASS_NAMES[c]:<14} {100 * share[c]:6.2f}%  {info['images_with_class'][c]:4d}"
        )
    return "\n".join(lines)
