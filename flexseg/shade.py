"""SHADE (Style-Hallucinated Dual Consistency, Zhao et al., ECCV 2022) as HRDA's DG recipe uses
it: the basis styles, their refresh during training, and the decisions that tie SHADE to the
FLEX-Seg objective.

The parts, each in its own module:

* style hallucination after the encoder's first stage, training only: the batch continues as
  [original; stylized], the labels twice (``flexseg.models.style_hallucination``; the encoders,
  ``Segmentor`` and ``HRDASegmentor`` say where it sits);
* the style consistency, a JS divergence between the two halves' class probabilities, weight
  ``consistency_weight`` (``flexseg.losses.style_consistency``, added by the objective);
* the basis: ``basis_styles`` (K) of the source images' first-stage styles (per-channel mean and
  std, a 2C vector per image), chosen by farthest point sampling, at the start of training and
  every ``refresh_every`` iterations (this module, ``StyleBasis``).

Anchor facts (HRDA dg: ``mmseg/models/utils/style_hallucination_hook.py``,
``farthest_point_sampling.py``; DGInStyle-SegModel ``experiments.py`` ``shade``): K = 64,
Dirichlet concentration 0.0156, refresh every 4,000 iterations and before the first, the pass in
eval mode without gradient over the source set as the training pipeline prepares it but without
rare-class sampling, farthest point sampling from a random first point with squared Euclidean
distances, consistency weight 10. The anchor takes K from the channel count (64 for both MiT-B5's
stage 1 and ResNet's stem); here K is the config's ``basis_styles`` whatever the width.

Decisions:

* The basis pass reads every distinct source row of the training data list (generated rows are
  left out; rows are distinct by image and label path), through the training pipeline without
  the RCS re-crop (``rcs_class`` ignored), in the model's first stage in eval mode (no dropout,
  BN running statistics) and the run's autocast. The statistics are the anchor's: mean and
  unbiased std over the feature map, no epsilon. Each image's augmentation is seeded from
  (seed, iteration of the pass, image), a stream of its own, and the first point of farthest
  point sampling from (seed, iteration): neither touches the global random generators, so the
  training draws do not depend on the passes.
* The pass runs at the top of iterations 0, R, 2R, ... (R = ``refresh_every``), before that
  iteration's batch is trained on, as the anchor's hook does (before the first iteration and
  after every R-th). Its time is printed with its iteration and image count, and it counts in
  the loss log's ``seconds``.
* The basis is saved in the training checkpoint (``state_dict``); a run resumed between two
  passes continues with the saved basis, one resumed at a pass recomputes it from the restored
  model, so on a CPU the resumed run is bitwise the uninterrupted one.
* DDP: process r computes the styles of source images r, r + N, r + 2N, ... (N processes), the
  rows are summed over processes into the full (images, 2C) matrix (disjoint rows: the sum is
  exact) and every process runs farthest point sampling on it, in float64 on the CPU from the
  same first point, so every process holds the same basis. (DDP also broadcasts rank 0's
  buffers, the basis among them, before each forward: a rank whose share went missing would
  not show as a difference between ranks, only as a wrong basis.)
* With fewer source images than K the basis repeats styles (see
  ``flexseg.models.style_hallucination``) and the pass says so.

How the rest of the objective sees the doubled batch (``flexseg.losses.objective``):

* Segmentation loss (UBE or CE): on all 2B images with the labels twice, as the anchor's CE; UBE's
  entropy statistics (mu_H, sigma_H) are taken over both halves' boundary pixels.
* GAP: the loss on both halves' boundary features (a stylized boundary pixel is pulled to the
  same prototype as its original); the prototype bank is updated from the original half only, so
  the prototypes (and the counts behind Eq. 6's weights) stay those of the source images.
* HAS: each image's recorded loss is the mean of its two per-image losses.
* ImageNet feature distance: on both halves; the frozen ImageNet model sees the unstylized
  images, and its features, computed once, serve both halves (what running it on the images
  twice, as the anchor does, gives, at half the cost).
* One backward over all the terms.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from flexseg.data.lists import ListEntry, to_sample_ref
from flexseg.data.readers import load_sample
from flexseg.data.transforms import PipelineSettings, transform_sample
from flexseg.io import DataError
from flexseg.models.encoders import attach_style
from flexseg.models.style_hallucination import farthest_point_sampling, style_vectors


@dataclass(frozen=True)
class ShadeSettings:
    """``training.shade`` (workflow/schemas/training.schema.yaml)."""

    enabled: bool
    basis_styles: int
    concentration: float
    refresh_every: int
    consistency_weight: float


def source_rows(entries: Sequence[ListEntry]) -> list[ListEntry]:
    """The distinct source rows of a data list (by image and label path), in list order."""
    seen: set[tuple[str, str]] = set()
    rows = []
    for entry in entries:
        key = (entry.image, entry.label)
        if entry.part == "source" and key not in seen:
            seen.add(key)
            rows.append(entry)
    return rows


class BasisImages(Dataset):
    """Source rows through the training pipeline without RCS, for the pass at ``iteration``:
    item i is (image (3, S, S) float32, i)."""

    def __init__(
        self, entries: Sequence[ListEntry], settings: PipelineSettings, seed: int, iteration: int
    ) -> None:
        self.entries = list(entries)
        self.settings = settings
        self.seed, self.iteration = int(seed), int(iteration)
        self._refs = [to_sample_ref(e, dataset=e.part) for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = load_sample(self._refs[index])
        # four key entries: a stream apart from the training draws' (three) and epochs' (0, 1)
        rng = np.random.default_rng([self.seed, self.iteration, index, 2])
        sample = transform_sample(
            image, label, generated=False, rcs_class=-1, settings=self.settings, rng=rng
        )
        return torch.from_numpy(sample.image), index


@dataclass(frozen=True)
class BasisPass:
    """What one basis pass did (printed by the trainer)."""

    iteration: int
    images: int  # source images over all processes
    seconds: float
    styles: int
    channels: int

    def message(self) -> str:
        repeat = "; fewer images than styles: the basis repeats styles"
        repeat = repeat if self.images < self.styles else ""
        return (
            f"SHADE basis at iteration {self.iteration}: {self.styles} styles of 2 x "
            f"{self.channels} from {self.images} source images in {self.seconds:.2f} s"
            f" ({1000 * self.seconds / max(self.images, 1):.1f} ms per image){repeat}"
        )


class StyleBasis:
    """The basis of one run: attaches the style hallucination to ``model``'s encoder and
    refreshes its basis from the source rows of ``entries`` (see the module doc)."""

    def __init__(
        self,
        model: Any,  # a Segmentor (``style_features``, ``encoder``)
        settings: ShadeSettings,
        entries: Sequence[ListEntry],
        transforms: PipelineSettings,
        seed: int,
        batch_size: int,
        workers: int,
        rank: int = 0,
        world: int = 1,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.sources = source_rows(entries)
        if not self.sources:
            raise DataError(
                "training.shade is on but the data list has no source rows to take the basis "
                "styles from"
            )
        self.model, self.settings = model, settings
        self.transforms, self.seed = transforms, int(seed)
        self.batch_size, self.workers = int(batch_size), int(workers)
        self.rank, self.world = int(rank), int(world)
        self.autocast = autocast
        self.style = attach_style(model.encoder, settings.basis_styles, settings.concentration)

    def due(self, iteration: int) -> bool:
        """Whether a pass runs at the top of ``iteration``."""
        return iteration % self.settings.refresh_every == 0

    @property
    def device(self) -> torch.device:
        return self.style.basis_mean.device

    def collect(self, iteration: int) -> torch.Tensor:
        """The (images, 2C) style matrix of the source rows, on every process. Collective."""
        mine = list(range(self.rank, len(self.sources), self.world))
        dataset = BasisImages(self.sources, self.transforms, self.seed, iteration)
        loader = DataLoader(
            torch.utils.data.Subset(dataset, mine),
            batch_size=self.batch_size,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            # a private generator: opening the loader must not consume the global RNG
            generator=torch.Generator().manual_seed(self.seed),
        )
        styles = torch.zeros(len(self.sources), 2 * self.style.channels, device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for images, index in loader:
                    images = images.to(self.device, non_blocking=True)
                    images = images.contiguous(memory_format=torch.channels_last)
                    with self.autocast():
                        feats = self.model.style_features(images)
                    styles[index.to(self.device)] = style_vectors(feats)
        finally:
            self.model.train(was_training)
        if self.world > 1:
            dist.all_reduce(styles, op=dist.ReduceOp.SUM)
        return styles

    def refresh(self, iteration: int) -> BasisPass:
        """Run a basis pass and give the style module the new basis. Collective."""
        start = time.perf_counter()
        styles = self.collect(iteration).cpu()
        first = int(np.random.default_rng([self.seed, iteration, 3]).integers(styles.shape[0]))
        chosen = farthest_point_sampling(styles, self.settings.basis_styles, first)
        basis = styles[chosen].view(len(chosen), 2, self.style.channels)
        self.style.set_basis(basis[:, 0], basis[:, 1])
        return BasisPass(
            iteration=iteration,
            images=styles.shape[0],
            seconds=time.perf_counter() - start,
            styles=self.settings.basis_styles,
            channels=self.style.channels,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "mean": self.style.basis_mean.detach().cpu().clone(),
            "std": self.style.basis_std.detach().cpu().clone(),
            "has_basis": self.style.has_basis,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["has_basis"]:
            self.style.set_basis(state["mean"].to(self.device), state["std"].to(self.device))
