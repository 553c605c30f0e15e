"""Evaluation throughput: test images per second through the whole per-image evaluation path.

Builds the demo model (``models.tiny`` of config/config.yaml, or ``--model``) with random
weights and pushes synthetic images of each evaluated dataset's demo size through
``flexseg.evaluate.evaluate_samples``: keep-ratio resize, sliding window (or whole image) as the
config's ``evaluation`` section says, softmax, bilinear to the ground-truth size, argmax,
confusion matrix and the Eq. 1 boundary / interior counts. Image decoding is left out (it depends
on the disk). Prints images/s per dataset and overall, ending with ``eval_images_per_s=<value>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flexseg.config import load_config, stage_params  # noqa: E402
from flexseg.device import resolve_device  # noqa: E402
from flexseg.evaluate import EvalSettings, Sample, evaluate_samples  # noqa: E402
from flexseg.models import build_model  # noqa: E402


def demo_size(config: dict, dataset: str) -> tuple[int, int]:
    """(width, height) of a dataset's demo images."""
    demo = config["demo"]
    if dataset in demo.get("targets", {}):
        return tuple(demo["targets"][dataset]["size"])
    if dataset == "source_val":
        return tuple(demo["source_val"]["size"])
    return tuple(config["evaluation"]["scales"][dataset])


def synthetic_samples(count: int, size: tuple[int, int], seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for i in range(count):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        # Blocky labels, so the boundary region is a band and not every pixel.
        coarse = rng.integers(0, 19, (max(h // 16, 1), max(w // 16, 1)), dtype=np.uint8)
        label = np.kron(coarse, np.ones((16, 16), dtype=np.uint8))[:h, :w]
        label = np.pad(label, ((0, h - label.shape[0]), (0, w - label.shape[1])), mode="edge")
        out.append(Sample(f"synthetic_{i}", rgb, label))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", nargs="*", default=[], help="config overrides (YAML)")
    parser.add_argument("--model", default="tiny", help="entry of models (default: tiny)")
    parser.add_argument("--images", type=int, default=12, help="images per dataset")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    config = load_config(*args.config)
    device = resolve_device(args.device, "--device")
    torch.manual_seed(0)
    # The model entry as the training job builds it (without its training overrides).
    experiment = config["run"]["experiments"][0]
    model_cfg = stage_params(config, "train", experiment=experiment, model=args.model, seed=0)
    model = build_model(model_cfg["model"]).to(device).eval()
    factor = float(model_cfg["model"]["test_scale_factor"])

    total_images, total_seconds = 0, 0.0
    for dataset in config["evaluation"]["datasets"]:
        params = stage_params(config, "evaluate", dataset=dataset)
        settings = EvalSettings.from_params(params["evaluation"], params["scale"], factor)
        size = demo_size(config, dataset)
        warm = synthetic_samples(1, size, seed=1)
        evaluate_samples(model, iter(warm), 1, settings, device, desc=f"warmup {dataset}")
        samples = synthetic_samples(args.images, size, seed=0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        evaluate_samples(model, iter(samples), len(samples), settings, device, desc=dataset)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        inf = settings.inference
        print(
            f"{dataset:12s} {size[0]}x{size[1]} -> box {inf.scale} x{inf.scale_factor:g} "
            f"{inf.mode} {inf.window}/{inf.stride}: {len(samples) / seconds:.1f} images/s",
            flush=True,
        )
        total_images += len(samples)
        total_seconds += seconds
    print(f"device={device} threads={args.threads} model={args.model}")
    print(f"eval_images_per_s={total_images / total_seconds:.2f}")


if __name__ == "__main__":
    main()
