"""The motivation experiment's loss (Eq. 2) against a plainly written per-pixel reference, and
as the objective's option."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flexseg.losses.boundary import boundary_mask
from flexseg.losses.boundary_weight import boundary_weighted_loss
from flexseg.losses.objective import (
    BoundaryWeightSettings,
    FeatureDistanceSettings,
    Objective,
    UbeSettings,
)
from flexseg.models import SegOutput

torch.set_num_threads(1)
IGNORE = 255


def make_inputs(seed: int, batch=2, classes=4, height=9, width=8, void=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, height, width, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, classes, (batch, height, width), generator=g)
    labels[torch.rand(batch, height, width, generator=g) < void] = IGNORE
    return logits, labels


def reference(logits, labels, band, alpha, reduction):
    """Loops over pixels: W = alpha on the band (valid pixels), 1 elsewhere; sum W * CE / N."""
    batch, classes, height, width = logits.shape
    total, counted, per_image = 0.0, 0, []
    for b in range(batch):
        image_sum, image_n = 0.0, 0
        for y in range(height):
            for x in range(width):
                lab = int(labels[b, y, x])
                if reduction == "all" or lab != IGNORE:
                    image_n += 1
                if lab == IGNORE:
                    continue
                z = [float(logits[b, c, y, x]) for c in range(classes)]
                top = max(z)
                ce = -(z[lab] - top - math.log(sum(math.exp(v - top) for v in z)))
                w = alpha if bool(band[b, y, x]) else 1.0
                image_sum += w * ce
        total, counted = total + image_sum, counted + image_n
        per_image.append(image_sum / image_n)
    return total / counted, per_image


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("reduction", ["valid", "all"])
@pytest.mark.parametrize("alpha", [5.0, 2.5])
def test_eq2_matches_reference(seed, reduction, alpha):
    logits, labels = make_inputs(seed)
    band = boundary_mask(labels, 5, 5)
    assert band.any() and (~band).any()
    got = boundary_weighted_loss(logits, labels, band, alpha=alpha, reduction=reduction)
    loss, per_image = reference(logits, labels, band, alpha, reduction)
    assert got.loss.item() == pytest.approx(loss, rel=1e-10)
    torch.testing.assert_close(got.per_image, torch.tensor(per_image, dtype=torch.float64))
    expected = torch.where(band & (labels != IGNORE), alpha, 1.0).double()
    torch.testing.assert_close(got.weights.double(), expected)


def test_alpha_one_is_the_plain_cross_entropy_and_alpha_weights_the_band():
    logits, labels = make_inputs(2)
    band = boundary_mask(labels, 3, 3)
    plain = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    one = boundary_weighted_loss(logits, labels, band, alpha=1.0)
    assert one.loss.item() == pytest.approx(plain.item(), rel=1e-12)
    logits.requires_grad_(True)
    boundary_weighted_loss(logits, labels, band, alpha=5.0).loss.backward()
    grad = logits.grad.abs().sum(dim=1)
    logits.grad = None
    F.cross_entropy(logits, labels, ignore_index=IGNORE).backward()
    base = logits.grad.abs().sum(dim=1)
    on = band & (labels != IGNORE)
    torch.testing.assert_close(grad[on], 5 * base[on])
    torch.testing.assert_close(grad[~band], base[~band])


def test_bad_inputs_are_refused():
    logits, labels = make_inputs(0)
    band = boundary_mask(labels, 5, 5)
    with pytest.raises(ValueError, match="bool mask"):
        boundary_weighted_loss(logits, labels, band.long())
    with pytest.raises(ValueError, match="upsample"):
        boundary_weighted_loss(logits[..., :4], labels, band)
    with pytest.raises(ValueError, match="alpha"):
        boundary_weighted_loss(logits, labels, band, alpha=-1.0)


def _output(logits, labels):
    return [SegOutput(logits=logits, features=None, labels=labels, weight=1.0, stage_features=None)]


def test_objective_option_uses_eq2_with_its_kernels_and_the_ce_reduction():
    logits, labels = make_inputs(4)
    images = torch.zeros(labels.shape[0], 3, *labels.shape[1:])
    fd = FeatureDistanceSettings(enabled=False, weight=0.005, thing_share=0.75)
    setting = BoundaryWeightSettings(alpha=5.0, dilate_kernel=3, erode_kernel=5)
    objective = Objective(None, None, None, fd, boundary_weight=setting, ce_reduction="all")
    terms = objective(_output(logits.float(), labels), images)
    band = boundary_mask(labels, 3, 5)
    loss, per_image = reference(logits, labels, band, 5.0, "all")
    assert terms.total.item() == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(
        terms.per_image.double(), torch.tensor(per_image, dtype=torch.float64)
    )
    plain = Objective(None, None, None, fd, ce_reduction="all")(
        _output(logits.float(), labels), images
    )
    assert plain.total.item() < terms.total.item()
    ube = UbeSettings(alpha=3.0, eps=1e-6, dilate_kernel=5, erode_kernel=5)
    with pytest.raises(ValueError, match="cannot both"):
        Objective(ube, None, None, fd, boundary_weight=setting)
