"""The TF32 switch: both CUDA flags follow the config key, and every GPU stage receives it."""

from __future__ import annotations

import torch

from flexseg.config import load_config, stage_params
from flexseg.precision import apply_tf32


def test_apply_tf32_sets_both_flags() -> None:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        apply_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        apply_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32  # torch's own default is True
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_each_gpu_stage_gets_its_tf32_key() -> None:
    config = load_config(
        overrides={
            "training": {"tf32": True},
            "generation": {"sampler": {"tf32": True}},
            "evaluation": {"tf32": True},
        }
    )
    train = stage_params(config, "train", experiment="flexseg", model="tiny", seed=0)
    assert train["training"]["tf32"] is True
    assert stage_params(config, "generate")["sampler"]["tf32"] is True
    assert stage_params(config, "evaluate", dataset="cityscapes")["evaluation"]["tf32"] is True
    default = load_config()
    assert default["training"]["tf32"] is False
    assert default["generation"]["sampler"]["tf32"] is False
    assert default["evaluation"]["tf32"] is False


def test_quality_scoring_sets_the_evaluations_tf32(tmp_path) -> None:
    """``flexseg.quality score`` predicts with ``evaluation.tf32`` (its slice's ``tf32``), as the
    evaluation does: both flags follow it after a scoring run on a tiny set."""
    import numpy as np
    from test_quality import write_generated_set
    from train_fixtures import TINY_MODEL, train_params

    from flexseg.checkpoint import save_model
    from flexseg.models import build_model
    from flexseg.quality import score

    ckpt = tmp_path / "model.pt"
    model = build_model(TINY_MODEL)
    save_model(ckpt, model, TINY_MODEL, "source_only", 0, train_params("source_only"), "test", 2)
    manifest = write_generated_set(tmp_path / "gen", np.random.default_rng(0), n=2, side=16)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for enabled in (True, False):
            params = {"panels": 0, "boundary_kernel": 5, "tf32": enabled}
            files = (tmp_path / f"{enabled}.json", tmp_path / f"{enabled}.npz")
            record = score(params, manifest, ckpt, *files, device="cpu")
            flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            assert flags == (enabled, enabled) and record["settings"]["tf32"] is enabled
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    assert stage_params(load_config(), "quality")["tf32"] is False
