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
