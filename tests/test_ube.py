"""UBE (Eqs. 7-8) against a plainly written per-pixel reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flexseg.losses.boundary import boundary_mask
from flexseg.losses.ube import ube_loss

torch.set_num_threads(1)
IGNORE = 255


def make_inputs(seed: int, batch=2, classes=4, height=6, width=7, void=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, height, width, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, classes, (batch, height, width), generator=g)
    labels[torch.rand(batch, height, width, generator=g) < void] = IGNORE
    boundary = torch.rand(batch, height, width, generator=g) < 0.4
    return logits, labels, boundary


def reference_ube(logits, labels, boundary, alpha, eps, reduction="valid"):
    """Loops over pixels: entropy, batch statistics over valid boundary pixels, weights, loss.
    N (Eq. 8) counts the valid pixels, or with ``reduction`` all every pixel of the batch."""
    batch, classes, height, width = logits.shape
    pixels = [(b, y, x) for b in range(batch) for y in range(height) for x in range(width)]
    entropy, ce = {}, {}
    for b, y, x in pixels:
        z = [float(logits[b, c, y, x]) for c in range(classes)]
        top = max(z)
        norm = sum(math.exp(v - top) for v in z)
        p = [math.exp(v - top) / norm for v in z]
        entropy[b, y, x] = -sum(pc * math.log(pc) for pc in p)
        lab = int(labels[b, y, x])
        ce[b, y, x] = 0.0 if lab == IGNORE else -math.log(p[lab])
    on = [q for q in pixels if bool(boundary[q]) and int(labels[q]) != IGNORE]
    mu = sum(entropy[q] for q in on) / len(on) if on else 0.0
    sigma = math.sqrt(sum((entropy[q] - mu) ** 2 for q in on) / len(on)) if on else 0.0
    weights = torch.ones(batch, height, width, dtype=torch.float64)
    for q in on:
        weights[q] = 1 + alpha / (1 + math.exp(-(entropy[q] - mu) / (sigma + eps)))
    valid = [q for q in pixels if int(labels[q]) != IGNORE]
    counted = pixels if reduction == "all" else valid
    loss = sum(float(weights[q]) * ce[q] for q in valid) / max(len(counted), 1)
    per_image = [
        sum(float(weights[q]) * ce[q] for q in valid if q[0] == b)
        / max(1, sum(1 for q in counted if q[0] == b))
        for b in range(batch)
    ]
    return loss, weights, per_image, mu, sigma


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha", [3.0, 0.5])
def test_ube_matches_reference(seed: int, alpha: float) -> None:
    logits, labels, boundary = make_inputs(seed)
    got = ube_loss(logits, labels, boundary, alpha=alpha, eps=1e-6)
    loss, weights, per_image, mu, sigma = reference_ube(logits, labels, boundary, alpha, 1e-6)
    assert got.loss.item() == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(got.weights.double(), weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.per_image.double(), torch.tensor(per_image, dtype=torch.float64))
    assert got.entropy_mean.item() == pytest.approx(mu, rel=1e-5)
    assert got.entropy_std.item() == pytest.approx(sigma, rel=1e-5)
    assert not got.weights.requires_grad
    assert bool((got.weights >= 1).all() and (got.weights <= 1 + alpha).all())


@pytest.mark.parametrize("seed", [0, 3])
def test_ube_over_all_pixels_matches_reference(seed: int) -> None:
    """Eq. 8's N as the paper states it ("the total number of pixels"), mmseg 0.16's reduction."""
    logits, labels, boundary = make_inputs(seed, void=0.3)
    got = ube_loss(logits, labels, boundary, alpha=3.0, eps=1e-6, reduction="all")
    loss, weights, per_image, _, _ = reference_ube(logits, labels, boundary, 3.0, 1e-6, "all")
    assert got.loss.item() == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close(got.per_image.double(), torch.tensor(per_image, dtype=torch.float64))
    valid = ube_loss(logits, labels, boundary, alpha=3.0, eps=1e-6, reduction="valid")
    share = (labels != IGNORE).double().mean().item()  # ignored pixels only dilute the mean
    assert got.loss.item() == pytest.approx(valid.loss.item() * share, rel=1e-9)
    # alpha 0: mmseg's CrossEntropyLoss (unreduced CE, ignored pixels 0, mean over all of them)
    plain = ube_loss(logits, labels, boundary, alpha=0.0, reduction="all")
    mmseg = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none").mean()
    assert plain.loss.item() == pytest.approx(mmseg.item(), rel=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        ube_loss(logits, labels, boundary, reduction="sum")


def test_alpha_zero_is_plain_cross_entropy() -> None:
    logits, labels, boundary = make_inputs(4)
    logits = logits.float().requires_grad_(True)
    got = ube_loss(logits, labels, boundary, alpha=0.0)
    ref = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    torch.testing.assert_close(got.loss, ref)
    (g1,) = torch.autograd.grad(got.loss, logits)
    (g2,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g1, g2)


def test_no_boundary_pixels_gives_unit_weights() -> None:
    logits, labels, _ = make_inputs(5)
    got = ube_loss(logits, labels, torch.zeros_like(labels, dtype=torch.bool), alpha=3.0)
    assert bool((got.weights == 1).all()) and int(got.num_boundary) == 0
    ref = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    torch.testing.assert_close(got.loss.double(), ref)


def test_single_boundary_pixel_gets_half_emphasis_without_nan() -> None:
    logits, labels, _ = make_inputs(6, void=0.0)
    boundary = torch.zeros_like(labels, dtype=torch.bool)
    boundary[1, 2, 3] = True
    got = ube_loss(logits, labels, boundary, alpha=3.0)
    assert got.weights[1, 2, 3].item() == pytest.approx(2.5)
    assert int(got.num_boundary) == 1 and torch.isfinite(got.loss)


def test_boundary_on_ignored_pixels_is_not_counted() -> None:
    logits, labels, _ = make_inputs(7, void=0.5)
    boundary = labels == IGNORE
    got = ube_loss(logits, labels, boundary, alpha=3.0)
    assert int(got.num_boundary) == 0 and bool((got.weights == 1).all())


def test_weights_carry_no_gradient() -> None:
    logits, labels, boundary = make_inputs(8)
    logits = logits.requires_grad_(True)
    got = ube_loss(logits, labels, boundary, alpha=3.0)
    (grad,) = torch.autograd.grad(got.loss, logits)
    w = got.weights.detach()
    ce = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")
    const = (w * ce).sum() / (labels != IGNORE).sum()
    (expected,) = torch.autograd.grad(const, logits)
    torch.testing.assert_close(grad, expected)


def test_channels_last_logits_give_the_same_loss_and_gradient() -> None:
    # The trainer hands in channels-last logits (read as pixel rows without a copy).
    logits, labels, boundary = make_inputs(12, batch=3, classes=5, height=9, width=11)
    plain = logits.clone().requires_grad_(True)
    last = logits.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    a, b = ube_loss(plain, labels, boundary), ube_loss(last, labels, boundary)
    (ga,) = torch.autograd.grad(a.loss, plain)
    (gb,) = torch.autograd.grad(b.loss, last)
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-12)
    torch.testing.assert_close(a.weights, b.weights, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(a.per_image, b.per_image, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-15)


def test_all_ignored_gives_zero_with_finite_gradient() -> None:
    logits, labels, boundary = make_inputs(9)
    logits = logits.requires_grad_(True)
    labels = torch.full_like(labels, IGNORE)
    got = ube_loss(logits, labels, boundary)
    got.loss.backward()
    assert got.loss.item() == 0.0 and bool(torch.isfinite(logits.grad).all())


def test_works_with_the_eq1_mask() -> None:
    logits, labels, _ = make_inputs(10, height=12, width=12)
    boundary = boundary_mask(labels, 5, 5)
    got = ube_loss(logits, labels, boundary)
    loss, weights, *_ = reference_ube(logits, labels, boundary, 3.0, 1e-6)
    assert got.loss.item() == pytest.approx(loss, rel=1e-5)


def test_bad_inputs_raise() -> None:
    logits, labels, boundary = make_inputs(11)
    with pytest.raises(ValueError, match="upsample"):
        ube_loss(logits[..., :-1], labels, boundary)
    with pytest.raises(ValueError, match="bool"):
        ube_loss(logits, labels, boundary.float())
    bad = labels.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match="7"):
        ube_loss(logits, bad, boundary)
