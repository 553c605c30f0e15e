"""The ImageNet feature distance against a loop over feature locations."""

from __future__ import annotations

import math

import pytest
import torch

from flexseg.labels import THING_CLASSES
from flexseg.losses.feature_distance import feature_distance

torch.set_num_threads(1)
IGNORE = 255


def reference_fd(student, imagenet, labels, things, share, classes):
    """Per location: the cell's pixel counts (void as a class), majority, share, thing test."""
    batch, channels, h, w = student.shape
    height, width = labels.shape[1:]
    sy, sx = height // h, width // w
    total, n = 0.0, 0
    for b in range(batch):
        for i in range(h):
            for j in range(w):
                counts: dict[int, int] = {}
                for y in range(i * sy, (i + 1) * sy):
                    for x in range(j * sx, (j + 1) * sx):
                        v = int(labels[b, y, x])
                        counts[v] = counts.get(v, 0) + 1
                order = sorted(
                    counts.items(), key=lambda kv: (-kv[1], classes if kv[0] == IGNORE else kv[0])
                )
                value, count = order[0]
                if count / (sy * sx) < share or value not in things:
                    continue
                d = math.sqrt(
                    sum(
                        (float(student[b, c, i, j]) - float(imagenet[b, c, i, j])) ** 2
                        for c in range(channels)
                    )
                )
                total += d
                n += 1
    return (total / n if n else 0.0), n


def make_labels(seed: int, batch=2, size=(16, 24), cell=4, classes=19):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, classes, (batch, size[0] // cell, size[1] // cell), generator=g)
    labels = coarse.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    noise = torch.rand(labels.shape, generator=g)
    labels = torch.where(noise < 0.2, torch.randint(0, classes, labels.shape, generator=g), labels)
    labels[noise > 0.9] = IGNORE
    return labels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("share", [0.75, 0.5])
def test_feature_distance_matches_reference(seed: int, share: float) -> None:
    g = torch.Generator().manual_seed(seed + 100)
    student = torch.randn(2, 5, 4, 6, generator=g, dtype=torch.float64)
    imagenet = torch.randn(2, 5, 4, 6, generator=g, dtype=torch.float64)
    labels = make_labels(seed)
    got = feature_distance(student, imagenet, labels, THING_CLASSES, share=share)
    expected, n = reference_fd(student, imagenet, labels, set(THING_CLASSES), share, 19)
    assert n > 0
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_no_thing_location_is_zero_and_grad_safe() -> None:
    student = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)  # road only
    loss = feature_distance(student, torch.randn(1, 3, 2, 2), labels)
    loss.backward()
    assert loss.item() == 0.0 and loss.requires_grad
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_identical_features_give_finite_zero_gradient() -> None:
    imagenet = torch.randn(1, 3, 2, 2)
    student = imagenet.clone().requires_grad_(True)
    labels = torch.full((1, 8, 8), 13, dtype=torch.long)  # car: a thing
    loss = feature_distance(student, imagenet, labels)
    loss.backward()
    assert loss.item() == 0.0 and bool(torch.isfinite(student.grad).all())


def test_imagenet_features_get_no_gradient() -> None:
    student = torch.randn(1, 3, 2, 2, requires_grad=True)
    imagenet = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.full((1, 8, 8), 11, dtype=torch.long)
    feature_distance(student, imagenet, labels).backward()
    assert imagenet.grad is None and student.grad.abs().sum() > 0


def test_bad_inputs_raise() -> None:
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="equal shape"):
        feature_distance(torch.randn(1, 3, 2, 2), torch.randn(1, 4, 2, 2), labels)
    with pytest.raises(ValueError, match="thing classes"):
        feature_distance(torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2), labels, (13, 40))
