"""The learning-rate schedule of DAFormer/HRDA ("poly10warm"), which FLEX-Seg inherits.

For iteration ``t`` (0-based: the iteration about to run) and a parameter group with base rate
``lr_g`` (the global lr times the group's multiplier, e.g. x10 for the decode head):

    poly(t)   = (1 - t / T) ** power                     (min lr 0, T = ``iterations``)
    warmup(t) = ratio + (1 - ratio) * t / W    for t < W  (1 afterwards, W = ``warmup_iters``)
    lr_g(t)   = lr_g * poly(t) * warmup(t)

The warmup factor multiplies the current poly rate (mmcv's ``LrUpdaterHook`` with linear warmup),
rather than ramping towards the rate at iteration W.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PolyWarmup:
    """Poly decay to 0 over ``iterations`` with a linear warmup over ``warmup_iters``."""

    iterations: int
    power: float = 1.0
    warmup_iters: int = 0
    warmup_ratio: float = 1e-6

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be non-negative, got {self.warmup_iters}")

    def factor(self, iteration: int) -> float:
        """The multiplier of every group's base rate at 0-based ``iteration``."""
        if iteration < 0:
            raise ValueError(f"iteration must be non-negative, got {iteration}")
        progress = min(iteration, self.iterations) / self.iterations
        poly = (1.0 - progress) ** self.power
        if iteration < self.warmup_iters:
            poly *= self.warmup_ratio + (1.0 - self.warmup_ratio) * iteration / self.warmup_iters
        return poly

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Remember every group's configured rate as its base (``initial_lr``)."""
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> list[float]:
        """Set each group's rate for ``iteration``; return the rates."""
        factor = self.factor(iteration)
        rates = []
        for group in optimizer.param_groups:
            if "initial_lr" not in group:
                raise KeyError("PolyWarmup.apply: call attach(optimizer) first (no initial_lr)")
            group["lr"] = group["initial_lr"] * factor
            rates.append(group["lr"])
        return rates
