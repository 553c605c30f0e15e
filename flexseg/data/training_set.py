"""The training dataset over a data list, and the seeded order in which its images are drawn.

Reproducibility with any number of loader workers: an item is requested with a ``Draw`` key =
(global draw number, image index), and its augmentation generator is seeded from
``(seed, draw, index)`` alone. Which worker loads it, and when, does not matter; a resumed run
that re-requests the same draws gets the same crops, flips and colour jitter.

Draw numbers are global over the run: iteration ``t`` of a run with ``world`` processes and
``batch`` images per process uses draws ``(t * world + rank) * batch + j`` for ``j < batch``, so
every process of a distributed run draws different images from one shared stream.

With online RCS (``training.online_rcs``, ``flexseg.data.rcs.OnlineRcs``) a requested source row
stands for one online RCS sample, as a source index does in DGInStyle-SegModel's ``DGDataset``:
the item's own generator draws a class and one of its candidate images (then the re-crop for
that class), so the data order decides how often a source sample comes, RCS which. The item
reports the row it loaded, which is what Hardness-Aware Sampling then scores.

``EpochOrder`` is the sampler used without Hardness-Aware Sampling: epochs are seeded
permutations of the list (no image repeats within an epoch); each iteration takes the next
``world * batch`` positions, and the tail that does not fill a whole iteration is dropped, as
mmseg's ``drop_last`` loader does. With HAS the indices come from ``flexseg.sampling``.

``BatchPlan`` hands the DataLoader the draws of a window of iterations: the trainer opens a new
loader iterator for each window between HAS refreshes and checkpoints (``window_end``), so every
draw of a window happens after the preceding refresh and a checkpoint never falls on draws made
ahead (prefetched) but not yet trained on. So data order and augmentation are pure functions of
(seed, draw number, image), and on a CPU a resumed run ends bitwise identical to an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from flexseg.config import Experiment
from flexseg.data.lists import ListEntry, to_sample_ref
from flexseg.data.rcs import OnlineRcs
from flexseg.data.readers import load_sample
from flexseg.data.transforms import PipelineSettings, transform_sample
from flexseg.io import DataError
from flexseg.sampling import HardnessSampler


class Draw(NamedTuple):
    """The key of one requested item: the global draw number and the image index."""

    draw: int
    index: int


class TrainingItem(NamedTuple):
    """One training sample (collated by the DataLoader into batched fields)."""

    image: torch.Tensor  # float32 (3, S, S), ImageNet-normalized
    label: torch.Tensor  # int64 (S, S), train ids, 255 = ignore
    index: int  # the row of the data list loaded (Hardness-Aware Sampling scores by it)


@dataclass(frozen=True)
class PartCounts:
    """Rows of each part of a data list."""

    source: int
    generated: int


def count_parts(entries: Sequence[ListEntry]) -> PartCounts:
    return PartCounts(
        source=sum(e.part == "source" for e in entries),
        generated=sum(e.part == "generated" for e in entries),
    )


def check_parts(experiment: Experiment, data_path: Path, parts: PartCounts) -> None:
    """The data list must hold the parts the experiment trains on (and only those)."""
    need_source = experiment.data in ("source", "combined")
    need_generated = experiment.data in ("generated", "combined")
    source, generated = parts.source, parts.generated
    problems = []
    if need_source and source == 0:
        problems.append("no source rows")
    if need_generated and generated == 0:
        problems.append("no generated rows")
    if not need_source and source > 0:
        problems.append(f"{source} source rows")
    if not need_generated and generated > 0:
        problems.append(f"{generated} generated rows")
    if problems:
        raise DataError(
            f"{data_path}: experiment {experiment.name!r} trains on {experiment.data!r} data, but "
            f"the list has {' and '.join(problems)} (source {source}, generated {generated})"
        )


def draw_number(iteration: int, rank: int, world: int, batch: int, slot: int) -> int:
    """The global draw number of batch slot ``slot`` of process ``rank`` at ``iteration``."""
    return (iteration * world + rank) * batch + slot


def item_rng(seed: int, draw: int, index: int) -> np.random.Generator:
    """The augmentation generator of one draw (independent of workers and of the draw order)."""
    return np.random.default_rng([seed, draw, index])


class TrainingSet(Dataset):
    """Map-style dataset indexed by ``Draw`` keys; returns ``TrainingItem``. With ``online``, a
    source row is replaced by an online RCS draw (see the module doc)."""

    def __init__(
        self,
        entries: Sequence[ListEntry],
        settings: PipelineSettings,
        seed: int,
        online: OnlineRcs | None = None,
    ):
        if not entries:
            raise DataError("TrainingSet: the data list is empty")
        self.entries = list(entries)
        self.settings = settings
        self.seed = int(seed)
        self.online = online
        self._refs = [to_sample_ref(e, dataset=e.part) for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: Draw | tuple[int, int]) -> TrainingItem:
        draw, index = (int(k) for k in key)
        if not 0 <= index < len(self.entries):
            raise IndexError(f"image index {index} outside the data list of {len(self)} rows")
        entry, rng = self.entries[index], item_rng(self.seed, draw, index)
        rcs_class = entry.rcs_class
        if self.online is not None and entry.part == "source":
            pick = self.online.draw(rng)
            index, rcs_class = pick.index, pick.rcs_class
            entry = self.entries[index]
        image, label = load_sample(self._refs[index])
        sample = transform_sample(
            image,
            label,
            generated=entry.part == "generated",
            rcs_class=rcs_class,
            settings=self.settings,
            rng=rng,
        )
        return TrainingItem(torch.from_numpy(sample.image), torch.from_numpy(sample.label), index)


class EpochOrder:
    """Seeded, replacement-free epochs over ``size`` images, sharded over ``world`` processes."""

    def __init__(self, size: int, batch: int, world: int, seed: int):
        if batch * world > size:
            raise DataError(
                f"the data list has {size} images, fewer than one iteration needs "
                f"({world} process(es) x batch {batch})"
            )
        self.size = size
        self.batch = batch
        self.world = world
        self.seed = int(seed)
        self.iterations_per_epoch = size // (batch * world)
        self._cached_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._cached_epoch:
            # a stream key distinct from the augmentation keys (which have three entries)
            rng = np.random.default_rng([self.seed, epoch, 0, 1])
            self._perm = rng.permutation(self.size)
            self._cached_epoch = epoch
        return self._perm

    def indices(self, iteration: int, rank: int) -> list[int]:
        """The image indices of process ``rank`` at ``iteration``."""
        epoch, step = divmod(iteration, self.iterations_per_epoch)
        perm = self._permutation(epoch)
        start = (step * self.world + rank) * self.batch
        return [int(i) for i in perm[start : start + self.batch]]


class BatchPlan:
    """The DataLoader's batch sampler: the ``Draw`` keys of iterations ``[start, stop)`` of
    process ``rank`` of ``world``, image indices from ``indices(iteration)``."""

    def __init__(
        self, indices: Callable[[int], list[int]], rank: int, world: int, batch_size: int
    ) -> None:
        self.indices = indices
        self.rank, self.world, self.batch_size = rank, world, batch_size
        self.start = self.stop = 0

    def set_window(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[Draw]]:
        for it in range(self.start, self.stop):
            idx = self.indices(it)
            if len(idx) != self.batch_size:
                raise RuntimeError(
                    f"iteration {it}: {len(idx)} indices for batch {self.batch_size}"
                )
            yield [
                Draw(draw_number(it, self.rank, self.world, self.batch_size, j), i)
                for j, i in enumerate(idx)
            ]


def sampler_indices(sampler: HardnessSampler, batch_size: int) -> Callable[[int], list[int]]:
    """A batch of HAS draws per iteration, checked to be the iteration's draws."""

    def indices(iteration: int) -> list[int]:
        expected = iteration * batch_size
        if sampler.draws != expected:
            raise RuntimeError(
                f"HAS sampler out of step: {sampler.draws} draws before iteration {iteration}, "
                f"expected {expected}"
            )
        return [sampler.draw() for _ in range(batch_size)]

    return indices


def window_end(iteration: int, iterations: int, *every: int) -> int:
    """The end of the loader window that starts at ``iteration``: the run's end or the next
    multiple of any of ``every`` (checkpoint and HAS refresh intervals), whichever comes first."""
    return min(iterations, *((iteration // e + 1) * e for e in every))
