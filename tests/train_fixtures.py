"""Small on-disk training data and tiny configs for the training tests (not a test module)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from flexseg.config import load_config, stage_params
from flexseg.data.lists import entry_from_ref, write_data_list
from flexseg.data.readers import list_samples
from flexseg.io import write_image, write_label

# train id -> (raw Cityscapes label id, base colour)
CLASSES = {
    0: (7, (128, 64, 128)),  # road
    2: (11, (70, 70, 70)),  # building
    8: (21, (60, 140, 40)),  # vegetation
    10: (23, (70, 130, 180)),  # sky
    13: (26, (20, 20, 160)),  # car
}

TINY_MODEL: dict[str, Any] = {
    "name": "tiny_test",
    "architecture": "daformer",
    "encoder": {
        "type": "mit",
        "pretrained": None,
        "config": {
            "hidden_sizes": [8, 16, 16, 32],
            "depths": [1, 1, 1, 1],
            "num_attention_heads": [1, 1, 1, 2],
            "sr_ratios": [4, 2, 1, 1],
            "drop_path_rate": 0.0,
        },
    },
    "head": {"embed_dim": 16, "fusion_dim": 16, "dilations": [1, 2, 3, 4], "dropout": 0.1},
    "test_scale_factor": 1,
}


def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A street-like train-id layout: sky, buildings, vegetation, road and a few cars."""
    label = np.full((h, w), 10, dtype=np.uint8)
    horizon = int(h * rng.uniform(0.35, 0.5))
    label[int(h * 0.15) :, :] = 2
    for _ in range(2):
        x0 = int(rng.integers(0, w - 8))
        label[int(h * 0.3) : horizon + 4, x0 : x0 + int(rng.integers(6, 16))] = 8
    label[horizon + 4 :, :] = 0
    for _ in range(int(rng.integers(1, 3))):
        y0 = int(rng.integers(horizon + 4, h - 6))
        x0 = int(rng.integers(0, w - 12))
        label[y0 : y0 + int(rng.integers(4, 8)), x0 : x0 + int(rng.integers(8, 14))] = 13
    return label


def _render(label: np.ndarray, rng: np.random.Generator, tint: float) -> np.ndarray:
    image = np.zeros((*label.shape, 3), dtype=np.float32)
    for train_id, (_, colour) in CLASSES.items():
        image[label == train_id] = colour
    image = image * tint + rng.normal(0, 12, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_tree(
    root: Path,
    n_source: int = 8,
    n_generated: int = 6,
    seed: int = 0,
    source_size: tuple[int, int] = (72, 40),
    generated_size: int = 32,
) -> Path:
    """A GTA-layout source set (raw ids, some void) and a generated set under ``root``;
    sizes are (width, height) and the generated side."""
    rng = np.random.default_rng(seed)
    raw = np.zeros(256, dtype=np.uint8)
    for train_id, (raw_id, _) in CLASSES.items():
        raw[train_id] = raw_id
    for i in range(n_source):
        label = _scene(rng, source_size[1], source_size[0])
        ids = raw[label]
        ids[:2, :] = 0  # a void strip (raw id 0 -> 255)
        write_image(root / "gta" / "images" / f"{i:05d}.png", _render(label, rng, 1.0))
        write_label(root / "gta" / "labels" / f"{i:05d}.png", ids)
    for i in range(n_generated):
        label = _scene(rng, generated_size, generated_size)
        write_image(root / "gen" / "images" / f"g{i:04d}.png", _render(label, rng, 0.8))
        write_label(root / "gen" / "labels" / f"g{i:04d}_labelTrainIds.png", label)
    return root


def write_lists(root: Path) -> dict[str, Path]:
    """``source``, ``generated`` and ``combined`` data lists for a tree from ``make_tree``."""
    src = list_samples({"name": "gta", "format": "gta", "root": str(root / "gta")})
    gen = list_samples({"name": "gen", "format": "generated", "root": str(root / "gen")})
    # every other source row carries an RCS class (car), as rows of the RCS subset do
    source = [entry_from_ref(r, "source", 13 if i % 2 == 0 else -1) for i, r in enumerate(src)]
    generated = [entry_from_ref(r, "generated") for r in gen]
    paths = {
        "source": root / "source.csv",
        "generated": root / "generated.csv",
        "combined": root / "combined.csv",
    }
    write_data_list(paths["source"], source)
    write_data_list(paths["generated"], generated)
    write_data_list(paths["combined"], source + generated)
    return paths


# The execution options of the training tests (``flexseg.train.Execution``).
OPTIONS = {"threads": 1, "workers": 0, "device": "cpu", "log_every": 1, "checkpoint_every": 10}


def options(**changes: Any) -> dict[str, Any]:
    return {**OPTIONS, **changes}


def run_files(folder: str | Path):
    """A run's files under ``folder``, with the names the workflow gives them (train.smk)."""
    from flexseg.train import RunFiles

    folder = Path(folder)
    return RunFiles(
        folder / "model.pt", folder / "loss_log.csv", folder / "config.json", folder / "checkpoints"
    )


def run_file_args(folder: str | Path) -> list[str]:
    """``run_files(folder)`` as the command's options."""
    f = run_files(folder)
    return [
        *("--model-file", str(f.model), "--loss-log", str(f.loss_log)),
        *("--resolved-config", str(f.resolved_config), "--checkpoint-dir", str(f.checkpoints)),
    ]


def train_params(experiment: str = "flexseg", seed: int = 0, **training: Any) -> dict[str, Any]:
    """The ``train`` stage slice of the default config with the tiny model and a small recipe."""
    config = load_config()
    params = stage_params(config, "train", experiment=experiment, model="tiny", seed=seed)
    params["model"] = copy.deepcopy(TINY_MODEL)
    small = {
        "iterations": 30,
        "batch_size": 2,
        "crop_size": 32,
        "lr": 4e-4,
        "warmup_iters": 0,
        "source_resize": [72, 40],
        "rcs_recrop_min_pixels": 10,
    }
    small.update(training)
    for key, value in small.items():
        if isinstance(value, dict):
            params["training"][key] = {**params["training"][key], **value}
        else:
            params["training"][key] = value
    return params
