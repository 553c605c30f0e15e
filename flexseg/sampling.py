"""Hardness-Aware Sampling (HAS), Eqs. 10-12: a training-image sampler that moves from uniform
draws to draws weighted by each image's recent loss.

    h_i      <- beta h_i + (1 - beta) L_i                      every ``refresh_every`` steps (Eq. 10)
    thr(t)    = 1 / (1 + exp(k (t - m)))                                                  (Eq. 11)
    p_i       = exp(h_i / tau) / sum_j exp(h_j / tau)                                     (Eq. 12)

At each iteration t a number r ~ U[0, 1) is drawn; r > thr(t) samples the whole batch from p,
otherwise uniformly (the paper draws r "at each training iteration", so one r per batch and
per process). Draws are with replacement, so a batch may repeat an image.

Decisions the paper leaves open:

* t counts iterations (optimizer steps), from 0; m is the midpoint in iterations (the config's
  ``training.has.midpoint``; the paper gives no value, the default is half of the schedule). With
  k = 0.05 the switch is quick: thr falls from 0.88 to 0.12 between m - 40 and m + 40
  iterations, and is within 0.007 of 1 or 0 beyond m -/+ 100.
  The sampler knows the iteration of each draw from its own count of draws and the per-process
  batch size, so prefetching does not shift the schedule.
* Scores start at h_i = 0 (uniform p). L_i is the *mean* of the per-image losses recorded for
  image i since the last refresh (a sum would grow with how often the image was drawn, and hard
  images are drawn more: a feedback loop). Images not seen since the last refresh keep h_i.
  The trainer records each image's weighted mean cross-entropy (``UBEResult.per_image``).
* Eq. 12 uses a max-shifted softmax (no overflow for large h / tau).
* Scores only change at a refresh, and draws happen lazily, when the DataLoader asks for the next
  batch. With ``num_workers > 0`` the DataLoader asks ahead (``prefetch_factor * num_workers``
  batches), so draws lag the scores by that many batches; with 0 workers there is no lag.
* DDP: every process records its own images; at a refresh the accumulated sums and counts are
  all-reduced, so the scores stay identical everywhere. Each process draws from its own generator,
  seeded from (seed, rank): the streams are independent (not disjoint, as with replacement).
* ``state_dict`` holds the scores, the pending sums, the draw count and the generator state; a
  resumed run continues the same stream (draws prefetched before the checkpoint are skipped).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def has_threshold(iteration: float, k: float, midpoint: float) -> float:
    """Eq. 11, written so that neither tail overflows."""
    z = k * (iteration - midpoint)
    if z >= 0:
        e = math.exp(-z)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(z))


def hardness_probabilities(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Eq. 12: softmax(h / tau) in float64, shifted by the maximum."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = scores.to(torch.float64) / temperature
    e = torch.exp(z - z.max())
    return e / e.sum()


def _process_seed(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


class HardnessSampler(Sampler[int]):
    """An endless stream of image indices for a DataLoader (``sampler=``), following HAS.

    After each optimizer step call ``record(indices, losses)`` with the batch's dataset indices
    and per-image losses, then ``refresh(step)`` with the number of steps completed so far.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        beta: float = 0.9,
        refresh_every: int = 50,
        k: float = 0.05,
        midpoint: float = 20000.0,
        temperature: float = 1.0,
        seed: int = 0,
        rank: int | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"HardnessSampler needs at least one image, got {num_samples}")
        if batch_size < 1 or refresh_every < 1:
            raise ValueError(
                f"batch_size and refresh_every must be positive, got {batch_size}, {refresh_every}"
            )
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.beta = beta
        self.refresh_every = refresh_every
        self.k = k
        self.midpoint = midpoint
        self.temperature = temperature
        self.seed = seed
        self.rank = rank
        self.scores = torch.zeros(num_samples, dtype=torch.float64)
        self.loss_sum = torch.zeros(num_samples, dtype=torch.float64)
        self.loss_count = torch.zeros(num_samples, dtype=torch.float64)
        self.draws = 0
        self.hard = False  # the mode of the current iteration's batch
        self.generator = torch.Generator().manual_seed(_process_seed(seed, rank))
        self.probabilities = hardness_probabilities(self.scores, temperature)

    def threshold(self, iteration: float) -> float:
        return has_threshold(iteration, self.k, self.midpoint)

    def __iter__(self) -> Iterator[int]:
        # Endless: the trainer stops after its iterations. A new iterator continues the stream.
        while True:
            yield self.draw()

    def draw(self) -> int:
        """The next index; the first draw of each iteration decides that batch's mode."""
        if self.draws % self.batch_size == 0:
            iteration = self.draws // self.batch_size
            r = float(torch.rand((), generator=self.generator, dtype=torch.float64))
            self.hard = r > self.threshold(iteration)
        if self.hard:
            index = torch.multinomial(self.probabilities, 1, generator=self.generator)
        else:
            index = torch.randint(self.num_samples, (1,), generator=self.generator)
        self.draws += 1
        return int(index)

    def record(
        self, indices: Sequence[int] | torch.Tensor, losses: Sequence[float] | torch.Tensor
    ) -> None:
        """Accumulate per-image losses of one batch until the next refresh."""
        idx = torch.as_tensor(indices).detach().cpu().reshape(-1).long()
        val = torch.as_tensor(losses).detach().cpu().reshape(-1).to(torch.float64)
        if idx.numel() != val.numel():
            raise ValueError(f"record got {idx.numel()} indices but {val.numel()} losses")
        if idx.numel() == 0:
            return
        bad = (idx < 0) | (idx >= self.num_samples)
        if bool(bad.any()):
            raise ValueError(f"image index {int(idx[bad][0])} is outside 0..{self.num_samples - 1}")
        if not bool(torch.isfinite(val).all()):
            raise ValueError(f"non-finite per-image loss recorded: {val.tolist()}")
        self.loss_sum.index_add_(0, idx, val)
        self.loss_count.index_add_(0, idx, torch.ones_like(val))

    def refresh(self, iteration: int) -> bool:
        """Apply Eq. 10 when ``iteration`` (steps completed) is a positive multiple of
        ``refresh_every``; returns whether it did. Collective under DDP."""
        if iteration > 0 and iteration % self.refresh_every == 0:
            self.update_scores()
            return True
        return False

    def update_scores(self) -> None:
        """Eq. 10 now, with the losses accumulated since the last refresh (all processes')."""
        sums = torch.stack([self.loss_sum, self.loss_count])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = (
                torch.device("cuda", torch.cuda.current_device())
                if dist.get_backend() == "nccl"
                else torch.device("cpu")
            )
            reduced = sums.to(device)
            dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
            sums = reduced.cpu()
        total, count = sums[0], sums[1]
        seen = count > 0
        mean = total / count.clamp(min=1.0)
        updated = self.beta * self.scores + (1.0 - self.beta) * mean
        self.scores = torch.where(seen, updated, self.scores)
        self.loss_sum.zero_()
        self.loss_count.zero_()
        self.probabilities = hardness_probabilities(self.scores, self.temperature)

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "scores": self.scores.clone(),
            "loss_sum": self.loss_sum.clone(),
            "loss_count": self.loss_count.clone(),
            "draws": self.draws,
            "hard": self.hard,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("num_samples", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]}, this sampler {getattr(self, key)}"
                )
        self.scores = state["scores"].to(torch.float64).clone()
        self.loss_sum = state["loss_sum"].to(torch.float64).clone()
        self.loss_count = state["loss_count"].to(torch.float64).clone()
        self.draws = int(state["draws"])
        self.hard = bool(state["hard"])
        self.generator.set_state(state["generator"])
        self.probabilities = hardness_probabilities(self.scores, self.temperature)
