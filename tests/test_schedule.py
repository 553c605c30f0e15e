"""The poly + linear-warmup learning-rate schedule against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from flexseg.schedule import PolyWarmup

torch.set_num_threads(1)


def _optimizer(lr: float = 1e-3, head_mult: float = 10.0) -> torch.optim.Optimizer:
    backbone = torch.nn.Parameter(torch.zeros(2))
    head = torch.nn.Parameter(torch.zeros(2))
    return torch.optim.AdamW(
        [{"params": [backbone], "lr": lr}, {"params": [head], "lr": lr * head_mult}], lr=lr
    )


# (iteration, factor) for T = 100, W = 10, ratio = 0.1, power 1, worked out by hand:
#   t = 0:   poly 1.00, warmup 0.1                  -> 0.1
#   t = 5:   poly 0.95, warmup 0.1 + 0.9 * 5/10 = 0.55 -> 0.5225
#   t = 9:   poly 0.91, warmup 0.1 + 0.9 * 9/10 = 0.91 -> 0.8281
#   t = 10:  poly 0.90, warmup over                 -> 0.9
#   t = 60:  poly 0.40                              -> 0.4
#   t = 99:  poly 0.01                              -> 0.01
#   t = 100: poly 0                                 -> 0
@pytest.mark.parametrize(
    "iteration, factor",
    [(0, 0.1), (5, 0.5225), (9, 0.8281), (10, 0.9), (60, 0.4), (99, 0.01), (100, 0.0)],
)
def test_factor_with_warmup(iteration: int, factor: float) -> None:
    sched = PolyWarmup(iterations=100, power=1.0, warmup_iters=10, warmup_ratio=0.1)
    assert sched.factor(iteration) == pytest.approx(factor, abs=1e-12)


def test_power_two_and_no_warmup() -> None:
    sched = PolyWarmup(iterations=40, power=2.0, warmup_iters=0)
    # (1 - 10/40)^2 = 0.5625, (1 - 20/40)^2 = 0.25, (1 - 30/40)^2 = 0.0625
    assert sched.factor(0) == 1.0
    assert sched.factor(10) == pytest.approx(0.5625)
    assert sched.factor(20) == pytest.approx(0.25)
    assert sched.factor(30) == pytest.approx(0.0625)


def test_paper_recipe_values() -> None:
    # DAFormer: T = 40000, W = 1500, ratio 1e-6, lr 6e-5, head x10.
    sched = PolyWarmup(iterations=40000, power=1.0, warmup_iters=1500, warmup_ratio=1e-6)
    opt = _optimizer(lr=6e-5, head_mult=10.0)
    sched.attach(opt)
    # t = 750: poly = 1 - 750/40000 = 0.98125; warmup = 1e-6 + (1 - 1e-6) * 0.5 = 0.5000005
    backbone, head = sched.apply(opt, 750)
    assert backbone == pytest.approx(6e-5 * 0.98125 * 0.5000005, rel=1e-12)
    assert head == pytest.approx(6e-4 * 0.98125 * 0.5000005, rel=1e-12)
    # t = 20000, after warmup: half of each base rate.
    backbone, head = sched.apply(opt, 20000)
    assert backbone == pytest.approx(3e-5)
    assert head == pytest.approx(3e-4)
    assert [g["lr"] for g in opt.param_groups] == [backbone, head]


def test_head_multiplier_kept_through_warmup() -> None:
    sched = PolyWarmup(iterations=50, power=1.0, warmup_iters=20, warmup_ratio=1e-6)
    opt = _optimizer(lr=2e-4, head_mult=10.0)
    sched.attach(opt)
    for t in (0, 3, 19, 20, 35, 49):
        backbone, head = sched.apply(opt, t)
        assert head == pytest.approx(10.0 * backbone, rel=1e-12)


def test_apply_requires_attach_and_valid_inputs() -> None:
    sched = PolyWarmup(iterations=10)
    with pytest.raises(KeyError, match="attach"):
        sched.apply(_optimizer(), 0)
    with pytest.raises(ValueError, match="iterations"):
        PolyWarmup(iterations=0)
    with pytest.raises(ValueError, match="iteration"):
        sched.factor(-1)
