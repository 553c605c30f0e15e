"""Tiny randomly initialised diffusion components, saved and loaded back like real ones.

Import the fixtures into a test module (``from diffusion_fixtures import tiny_model_dirs,
tiny_components``). The components are built once per session with ``TINY_SPEC`` (a U-Net of
(32, 64) channels, a 4-block VAE that downsamples by 8 like Stable Diffusion's, a 20-channel
ControlNet, a 2-layer CLIP text encoder, the offline CLIP tokenizer and Stable Diffusion 1.5's
DDIM schedule), written in the diffusers layout and read back through
``generation.components.load_components`` with the hub offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from generation.components import (  # noqa: E402
    TINY_SPEC,
    Components,
    load_components,
    random_components,
    save_components,
)


@dataclass(frozen=True)
class ModelDirs:
    prior: Path
    controlnet: Path


def save_tiny_components(root: Path, seed: int = 0) -> ModelDirs:
    """Write tiny random components under ``root`` (``prior/`` and ``controlnet/``)."""
    dirs = ModelDirs(prior=root / "prior", controlnet=root / "controlnet")
    save_components(random_components(TINY_SPEC, seed=seed), dirs.prior, dirs.controlnet)
    return dirs


def load_tiny(dirs: ModelDirs) -> Components:
    return load_components({"kind": "demo"}, dirs.prior, dirs.controlnet, device="cpu")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> ModelDirs:
    torch.set_num_threads(1)
    return save_tiny_components(tmp_path_factory.mktemp("tiny_diffusion"))


@pytest.fixture(scope="session")
def tiny_components(tiny_model_dirs: ModelDirs) -> Components:
    return load_tiny(tiny_model_dirs)
