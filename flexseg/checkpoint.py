"""Model files and training checkpoints.

``model.pt`` (what evaluation reads, docs/CONTRACTS.md) holds the model config, the state dict,
the experiment, seed, resolved training params, git revision and the number of iterations
trained. ``load_model`` rebuilds the network from the stored config and loads the weights.

Decision: the stored *build* config has ``encoder.pretrained`` cleared and, for a MiT encoder,
the encoder's resolved ``SegformerConfig`` fields written out, so loading a trained model never
fetches the ImageNet weights again (they are overwritten by the state dict anyway) and works
offline; the config as given is kept under ``model_config`` for the record.

``gap_features`` records whether the model was built with its GAP-only parameters
(``flexseg.models.build_model``; False for a run with GAP off and a DeepLabV2 head). Files written
before the key existed lack it and load as True: their models always carried the projection.

Training checkpoints (``checkpoints/last.pt``) are plain dicts of tensors and Python values,
written whole (temporary file, then rename) and read with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flexseg.io import DataError, atomic_path

MODEL_FORMAT = "flexseg-model"
MODEL_VERSION = 1
REQUIRED_KEYS = (
    "format",
    "version",
    "model_config",
    "build_config",
    "state_dict",
    "experiment",
    "seed",
    "params",
    "git_revision",
    "iterations",
)


@dataclass(frozen=True)
class ModelMeta:
    """What ``model.pt`` says about the model it holds."""

    experiment: str
    model: str
    seed: int
    iterations: int
    git_revision: str
    params: dict[str, Any]
    model_config: dict[str, Any]


def build_config(model_cfg: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """``model_cfg`` (a validated model entry) made self-contained: no pretrained source, the
    encoder's resolved config."""
    from flexseg.models.encoders import MIT_CONFIG_FIELDS, MiTEncoder

    cfg = copy.deepcopy(dict(model_cfg))
    encoder = getattr(model, "encoder", None)
    if cfg["encoder"]["pretrained"] is not None and isinstance(encoder, MiTEncoder):
        resolved = encoder.model.config.to_dict()
        cfg["encoder"]["config"] = {
            k: v for k, v in resolved.items() if k in MIT_CONFIG_FIELDS and k != "return_dict"
        }
    cfg["encoder"]["pretrained"] = None
    return cfg


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    model_cfg: dict[str, Any],
    experiment: str,
    seed: int,
    params: dict[str, Any],
    git_revision: str,
    iterations: int,
) -> None:
    """Write ``model.pt`` whole (see the module doc for its contents)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "model_config": copy.deepcopy(dict(model_cfg)),
        "build_config": build_config(model_cfg, model),
        "state_dict": state,
        "gap_features": bool(getattr(model, "gap_features", True)),
        "experiment": experiment,
        "seed": int(seed),
        "params": copy.deepcopy(params),
        "git_revision": git_revision,
        "iterations": int(iterations),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _read(path: Path, map_location: str | torch.device, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise DataError(f"{what} {path} is unreadable or corrupt: {err}") from err
    if not isinstance(payload, dict):
        raise DataError(f"{what} {path} does not hold a dict (got {type(payload).__name__})")
    return payload


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the model stored in ``path`` (in eval mode) and return it with its metadata."""
    from flexseg.models import build_model

    path = Path(path)
    payload = _read(path, map_location, "model file")
    if payload.get("format") != MODEL_FORMAT:
        raise DataError(f"model file {path} is not a {MODEL_FORMAT} file")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise DataError(f"model file {path} lacks {', '.join(missing)}")
    if payload["version"] != MODEL_VERSION:
        raise DataError(
            f"model file {path} has format version {payload['version']}; this code reads "
            f"version {MODEL_VERSION}"
        )
    model = build_model(
        payload["build_config"], gap_features=bool(payload.get("gap_features", True))
    )
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise DataError(
            f"model file {path}: the weights do not fit the stored config: {err}"
        ) from err
    model.to(map_location).eval()
    cfg = payload["model_config"]
    meta = ModelMeta(
        experiment=str(payload["experiment"]),
        model=str(cfg.get("name", "")),
        seed=int(payload["seed"]),
        iterations=int(payload["iterations"]),
        git_revision=str(payload["git_revision"]),
        params=payload["params"],
        model_config=cfg,
    )
    return model, meta


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a training checkpoint whole."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_state(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a training checkpoint written by ``save_training_state``."""
    return _read(Path(path), map_location, "training checkpoint")
