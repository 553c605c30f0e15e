"""Processes, devices and random states of a training run.

DDP: ``nproc`` N > 1 (a param) re-launches the training command as N processes under torch's
elastic launcher (``relaunch``, what torchrun runs); the same command can also be started as
``torchrun --standalone --nproc_per_node N -m flexseg.train ...``. Every process uses the same
seed (so dropout and HRDA detail crops share a stream) and draws its own images; only rank 0
writes files. Mixed precision (``amp`` bf16/fp16) is CUDA-only: asking for it on a CPU is an
error, not a silent fallback.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist

from flexseg.config import ConfigError
from flexseg.device import resolve_device


@dataclass(frozen=True)
class Process:
    """This process's place in the run and its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def say(self, message: str) -> None:
        if self.is_main:
            print(message, flush=True)

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every process, by rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over processes (the values themselves in a single process)."""
        if not self.active:
            return values
        dist.all_reduce(values)
        return values / self.world


def start_process(device_name: str, threads: int, amp: str) -> Process:
    """Join the process group that torchrun describes in the environment (if any), pick the
    device and set the CPU threads."""
    device = resolve_device(device_name, "training.device")
    if amp != "none" and device.type != "cuda":
        raise ConfigError(
            f"training.amp is {amp}, which needs a CUDA device (this run is on {device}); "
            "set training.amp: none"
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ["RANK"]) if world > 1 else 0
    local_rank = int(os.environ.get("LOCAL_RANK", rank)) if world > 1 else 0
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return Process(rank=rank, world=world, local_rank=local_rank, device=device)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class RandomState:
    """The process's global random generators, as a checkpoint entry (``state_dict`` /
    ``load_state_dict``, like the other entries)."""

    device: torch.device

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, keys, *rest = state["python"]
        random.setstate((version, tuple(keys), *rest))
        name, np_keys, *np_rest = state["numpy"]
        np.random.set_state((name, np.asarray(np_keys, dtype=np.uint32), *np_rest))
        torch.set_rng_state(state["torch"])
        if self.device.type == "cuda" and state["cuda"] is not None:
            torch.cuda.set_rng_state_all(state["cuda"])


def worker_init(_: int) -> None:
    # Loader workers only decode and augment; their own generators are never used (TrainingSet).
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def relaunch(nproc: int, argv: Sequence[str]) -> int:
    """Run the training command again as ``nproc`` processes under torch's elastic launcher. The
    arguments are passed verbatim, never parsed by the launcher (whose options could swallow
    ours)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"flexseg-train-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=1.0,
    )
    print(f"launching {nproc} training processes (torch.distributed elastic launcher)", flush=True)
    try:
        elastic_launch(config, sys.executable)("-m", "flexseg.train", *argv)
    except ChildFailedError as err:
        print(f"error: a training process failed:\n{err}", file=sys.stderr, flush=True)
        return 1
    return 0
