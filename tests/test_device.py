"""Device resolution: cuda fails without a GPU, auto falls back to the CPU loudly."""

from __future__ import annotations

import pytest
import torch

from flexseg.config import ConfigError
from flexseg.device import DeviceError, resolve_device


def test_cpu_is_the_cpu_and_an_unknown_name_names_the_key():
    assert resolve_device("cpu", "training.device") == torch.device("cpu")
    with pytest.raises(ConfigError, match="evaluation.device must be one of auto, cpu, cuda"):
        resolve_device("gpu", "evaluation.device")


def test_without_a_gpu_cuda_fails_and_auto_warns(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="generation.sampler.device is cuda, but torch sees no"):
        resolve_device("cuda", "generation.sampler.device")
    assert resolve_device("auto", "training.device") == torch.device("cpu")
    assert "WARNING: training.device is auto" in capsys.readouterr().err


def test_with_a_gpu_auto_and_cuda_take_it(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", "training.device") == torch.device("cuda")
    assert resolve_device("cuda", "training.device") == torch.device("cuda")
    assert capsys.readouterr().err == ""
