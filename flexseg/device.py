"""The torch device a GPU stage (training, evaluation, generation) runs on.

A config's ``device`` is ``cuda`` (fail when torch sees no GPU), ``cpu``, or ``auto``: CUDA when
torch sees a GPU, else the CPU with a warning in the job's log, so that a GPU stage never falls
back to the CPU unseen. The paper config asks for ``cuda``; the demo runs ``auto`` on the CPU.
"""

from __future__ import annotations

import os
import sys

import torch

from flexseg.config import ConfigError

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(ConfigError):
    """The device a config key asks for is unknown or not available; the message names the key."""


def resolve_device(requested: str, key: str) -> torch.device:
    """``requested`` (the value of config key ``key``) as a torch device."""
    if requested not in DEVICES:
        raise DeviceError(f"{key} must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    if requested == "cuda":
        raise DeviceError(
            f"{key} is cuda, but torch sees no CUDA device (CUDA_VISIBLE_DEVICES={visible}); "
            f"set {key}: cpu or auto to run on the CPU"
        )
    print(
        f"WARNING: {key} is auto and torch sees no CUDA device (CUDA_VISIBLE_DEVICES={visible}): "
        f"this stage runs on the CPU; set {key}: cuda to fail instead",
        file=sys.stderr,
        flush=True,
    )
    return torch.device("cpu")
