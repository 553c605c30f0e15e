"""SHADE: the stylized half carries the Dirichlet mixture of the basis statistics, farthest point
sampling and the JS style consistency against plain references, where the hallucination sits
in MiT and ResNet, the basis pass, the objective on a tiny DAFormer and HRDA with SHADE, and
a resumed SHADE run that ends bitwise identical (the DDP test is in test_ddp.py)."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from test_models import MIT  # noqa: E402  (the tiny MiT encoder config)
from train_fixtures import make_tree, options, run_files, train_params, write_lists  # noqa: E402

from flexseg import train as T  # noqa: E402
from flexseg.config import build, load_config  # noqa: E402
from flexseg.data.lists import (  # noqa: E402
    ListEntry,
    read_data_list,
    to_sample_ref,
    write_data_list,
)
from flexseg.data.readers import load_sample  # noqa: E402
from flexseg.data.transforms import transform_sample  # noqa: E402
from flexseg.labels import NUM_CLASSES, THING_CLASSES  # noqa: E402
from flexseg.losses import (  # noqa: E402
    Objective,
    PrototypeBank,
    boundary_mask,
    feature_distance,
    gap_loss,
    ube_loss,
)
from flexseg.losses.objective import cross_entropy  # noqa: E402
from flexseg.losses.style_consistency import style_consistency  # noqa: E402
from flexseg.models import attach_style, build_model  # noqa: E402
from flexseg.models.style_hallucination import (  # noqa: E402
    STD_EPS,
    StyleHallucination,
    farthest_point_sampling,
    style_vectors,
)
from flexseg.shade import ShadeSettings, StyleBasis, source_rows  # noqa: E402

HEAD = {"type": "daformer", "embed_dim": 8, "fusion_dim": 12, "dilations": [1, 2], "dropout": 0.0}
DAFORMER = {"name": "t", "architecture": "daformer", "encoder": MIT, "head": HEAD}
HRDA = {
    "name": "h",
    "architecture": "hrda",
    "encoder": MIT,
    "head": HEAD,
    "hrda": {"context_scale": 0.5, "detail_crop": 32, "attention_embed_dim": 8},
}
RESNET = {
    "name": "r",
    "architecture": "daformer",
    "encoder": {"type": "resnet", "name": "resnet10t", "pretrained": None},
    "head": {"type": "deeplabv2", "fusion_dim": 8},
}
SHADE = ShadeSettings(
    enabled=True, basis_styles=5, concentration=0.0156, refresh_every=4, consistency_weight=10.0
)


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    make_tree(root)
    return write_lists(root)


def random_basis(module: StyleHallucination, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    k, c = module.basis_styles, module.channels
    module.set_basis(torch.randn(k, c, generator=g) * 2, torch.rand(k, c, generator=g) + 0.1)


# ---------------------------------------------------------------------------------------------
# Style hallucination


def test_stylized_half_carries_the_mixed_statistics() -> None:
    module = StyleHallucination(channels=4, basis_styles=6, concentration=0.0156)
    random_basis(module)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 9, 7, generator=g) * torch.rand(1, 4, 1, 1, generator=g) * 3 + 5
    x.requires_grad_(True)
    torch.manual_seed(7)
    out = module(x)
    torch.manual_seed(7)
    weights = module.mixing_weights(3, x.device)  # the same draws from the same generator state
    assert out.shape == (6, 4, 9, 7)
    assert torch.equal(out[:3], x)  # [original; stylized]
    assert torch.allclose(weights.sum(dim=1), torch.ones(3)) and bool((weights >= 0).all())
    for b in range(3):
        for c in range(4):
            mean = sum(float(weights[b, k]) * float(module.basis_mean[k, c]) for k in range(6))
            std = sum(float(weights[b, k]) * float(module.basis_std[k, c]) for k in range(6))
            feature = out[3 + b, c].detach().double()
            assert float(feature.mean()) == pytest.approx(mean, abs=1e-4)
            assert float(feature.std()) == pytest.approx(std, rel=1e-4, abs=1e-5)
    # The statistics are detached: d x' / d x is sigma' / (sigma + 1e-7) per image and channel.
    out[3:].sum().backward()
    sigma = x.detach().std(dim=(2, 3))
    expected = (weights @ module.basis_std) / (sigma + STD_EPS)
    assert torch.allclose(x.grad[:, :, 0, 0], expected, rtol=1e-5)
    assert torch.allclose(x.grad, x.grad[:, :, :1, :1].expand_as(x.grad))


def test_mixing_weights_are_convex_at_the_anchors_concentration() -> None:
    """64 styles at 0.0156 (most weights underflow towards 0): still finite convex weights."""
    module = StyleHallucination(channels=2, basis_styles=64, concentration=0.0156)
    torch.manual_seed(0)
    weights = module.mixing_weights(2000, torch.device("cpu"))
    assert bool(torch.isfinite(weights).all()) and bool((weights >= 0).all())
    assert torch.allclose(weights.sum(dim=1), torch.ones(2000, dtype=weights.dtype), atol=1e-5)
    assert len({int(i) for i in weights.argmax(dim=1)}) > 50  # every style gets its turn


def test_no_basis_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no basis"):
        StyleHallucination(2, 3, 0.1)(torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="5 styles x 2 channels"):
        StyleHallucination(2, 5, 0.1).set_basis(torch.zeros(4, 2), torch.zeros(4, 2))


def test_mit_hallucinates_after_stage_one() -> None:
    torch.manual_seed(0)
    model = build_model(DAFORMER)
    encoder = model.encoder
    images = torch.randn(2, 3, 32, 32)
    plain = encoder(images)
    style = attach_style(encoder, basis_styles=3, concentration=0.5)
    random_basis(style)
    assert style.channels == 8  # the tiny MiT's stage-1 width
    stylized = encoder(images, stylize=True)
    assert [tuple(f.shape) for f in stylized] == [(4, *f.shape[1:]) for f in plain]
    for a, b in zip(plain, stylized, strict=True):
        assert torch.allclose(a, b[:2], atol=1e-5)  # the stage loop is SegformerModel's
        assert not torch.allclose(b[:2], b[2:], atol=1e-3)
    assert torch.equal(encoder.style_features(images), plain[0])


def test_resnet_hallucinates_after_the_stem() -> None:
    torch.manual_seed(0)
    model = build_model(RESNET, gap_features=False)
    encoder = model.encoder
    images = torch.randn(2, 3, 32, 32)
    style = attach_style(encoder, basis_styles=4, concentration=0.5)
    random_basis(style)
    stem = encoder.model.maxpool(encoder.model.act1(encoder.model.bn1(encoder.model.conv1(images))))
    assert style.channels == stem.shape[1] and stem.shape[-1] == 8  # stride 4
    assert torch.equal(encoder.style_features(images), stem)
    doubled = encoder(images, stylize=True)[0]
    assert doubled.shape == (4, 512, 4, 4)
    # In training the BNs after the stem normalize over both halves (as in the anchor); with
    # running statistics the first half is the plain pass.
    encoder.eval()
    plain, doubled = encoder(images)[0], encoder(images, stylize=True)[0]
    assert torch.allclose(doubled[:2], plain, atol=1e-5)
    assert not torch.allclose(doubled[2:], plain, atol=1e-3)


def test_segmentor_doubles_only_in_training() -> None:
    torch.manual_seed(0)
    model = build_model(HRDA)
    random_basis(attach_style(model.encoder, 3, 0.5))
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, NUM_CLASSES, (2, 64, 64))
    outputs = model.train()(images, labels)
    assert [o.logits.shape[0] for o in outputs] == [4, 4]
    assert torch.equal(outputs[0].labels, torch.cat([labels, labels]))
    assert outputs[1].labels.shape == (4, 32, 32)
    assert model.eval()(images).shape == (2, NUM_CLASSES, 64, 64)
    assert model.encode_last_stage(images).shape[0] == 2
    assert model.style_features(images).shape == (2, 8, 8, 8)  # the context view, stride 4


# ---------------------------------------------------------------------------------------------
# Farthest point sampling


def fps_loop(points: np.ndarray, count: int, first: int) -> list[int]:
    """Farthest point sampling written plainly: squared distances, first index on ties."""
    nearest = [math.inf] * len(points)
    chosen, index = [], first
    for _ in range(count):
        chosen.append(index)
        for j, p in enumerate(points):
            d = sum((float(a) - float(b)) ** 2 for a, b in zip(p, points[index], strict=True))
            nearest[j] = min(nearest[j], d)
        index = max(range(len(points)), key=lambda j: (nearest[j], -j))
    return chosen


@pytest.mark.parametrize(("n", "count", "first"), [(30, 10, 3), (7, 7, 0), (5, 9, 4)])
def test_farthest_point_sampling_matches_a_plain_loop(n, count, first) -> None:
    points = np.random.default_rng(n).normal(size=(n, 6)) * [1, 2, 3, 1, 1, 5]
    chosen = farthest_point_sampling(torch.from_numpy(points).float(), count, first)
    expected = fps_loop(points.astype(np.float32), count, first)
    assert chosen.tolist() == expected
    if count <= n:
        assert len(set(expected)) == count  # distinct while points remain
    else:
        assert sorted(set(expected)) == list(range(n))  # all taken, then repeats (as the anchor)


# ---------------------------------------------------------------------------------------------
# Style consistency


def js_reference(logits: np.ndarray) -> float:
    """The JS term over pixels, a loop in float64 (see the module doc's formula)."""
    n2, c, h, w = logits.shape
    b = n2 // 2
    terms = [0.0, 0.0]
    for i in range(b):
        for y in range(h):
            for x in range(w):
                z0, z1 = logits[i, :, y, x], logits[b + i, :, y, x]
                p = np.exp(z0 - z0.max()) / np.exp(z0 - z0.max()).sum()
                q = np.exp(z1 - z1.max()) / np.exp(z1 - z1.max()).sum()
                log_m = np.log(np.clip((p + q) / 2, 1e-7, 1.0))
                for t, a in enumerate((q, p)):
                    terms[t] += sum(
                        a[k] * (math.log(a[k]) - log_m[k]) for k in range(c) if a[k] > 0
                    )
    pixels = b * h * w
    return (terms[0] / pixels + terms[1] / pixels) / 2


def test_style_consistency_matches_a_plain_reference() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, 3, 4, generator=g) * 3
    logits[0, 1, 0, 0], logits[2, 1, 0, 0] = -60.0, -60.0  # mixture below 1e-7: the clamp acts
    logits[1, :, 1, 1] = torch.tensor([80.0, 0, 0, 0, 0])  # a one-hot probability (0 log 0)
    value = style_consistency(logits.contiguous(memory_format=torch.channels_last))
    assert float(value) == pytest.approx(js_reference(logits.double().numpy()), rel=1e-5)
    same = torch.cat([logits[:2], logits[:2]])
    assert float(style_consistency(same)) == pytest.approx(0.0, abs=1e-6)
    # Identical halves with some probabilities below 1e-7: without the clamp the value is 0
    # exactly; with it every such class adds p (log p - log 1e-7) < 0, the whole value.
    tiny = torch.cat(
        [torch.randn(2, 3, 3, 4, generator=g), -20 - 15 * torch.rand(2, 2, 3, 4, generator=g)], 1
    )
    tiny = torch.cat([tiny, tiny])
    clamped = float(style_consistency(tiny))
    assert clamped < -1e-12
    assert clamped == pytest.approx(js_reference(tiny.double().numpy()), rel=1e-4)
    assert float(style_consistency(logits.bfloat16())) == pytest.approx(float(value), rel=0.05)
    with pytest.raises(ValueError, match="2B"):
        style_consistency(logits[:3])


# ---------------------------------------------------------------------------------------------
# The objective with SHADE


def _recipe():
    params = train_params()
    return build(T.Recipe, params["training"])


@pytest.mark.parametrize("cfg", [DAFORMER, HRDA], ids=["daformer", "hrda"])
def test_objective_with_shade_runs_and_sees_both_halves(cfg) -> None:
    recipe = _recipe()
    torch.manual_seed(0)
    model = build_model(cfg).train()
    imagenet = copy.deepcopy(model).eval().requires_grad_(False)
    random_basis(attach_style(model.encoder, 3, 0.0156))
    bank = PrototypeBank(NUM_CLASSES, 3, 12)
    fd = recipe.feature_distance
    objective = Objective(recipe.ube, recipe.gap, bank, fd, imagenet_model=imagenet, shade=SHADE)
    images = torch.randn(2, 3, 64, 64)
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, 8:, :] = 13  # mostly car (a thing class): the feature distance has locations
    labels[:, 56:, 40:] = 0
    outputs = model(images, labels)
    g = recipe.gap
    steps = {"kernels": g.kernels, "temperature": g.temperature, "momentum": g.momentum}
    # the bank already holds prototypes (as after earlier batches): GAP's loss is not 0
    gap_loss(outputs[0].features.detach().float()[:2], labels, bank, **steps)
    bank_before = copy.deepcopy(bank)
    terms = objective(outputs, images)
    values = terms.values()
    assert bool(torch.isfinite(values).all())
    assert float(values[4]) > 0 and float(values[1]) > 0  # style, seg (TERMS order)
    consistency = style_consistency(outputs[0].logits.detach())
    assert float(values[4]) == pytest.approx(float(consistency), rel=1e-6)
    expected = (
        terms.parts["seg"]
        + recipe.gap.weight * terms.parts["gap"]
        + fd.weight * terms.parts["fd"]
        + 10.0 * terms.parts["style"]
    )
    assert float(values[0]) == pytest.approx(float(expected.detach()), rel=1e-6)
    terms.total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)

    # HAS: the mean of each image's two losses (the main output's, UBE off here for a plain check)
    # the feature distance: both halves against the unstylized images' ImageNet features
    with torch.no_grad():
        reference = imagenet.encode_last_stage(images)
        twice = torch.cat([reference, reference])
        fd_expected = feature_distance(
            outputs[0].stage_features, twice, outputs[0].labels, THING_CLASSES, fd.thing_share
        )
    assert float(values[3]) > 0
    assert float(values[3]) == pytest.approx(float(fd_expected), rel=1e-6)

    plain = Objective(None, None, None, fd, imagenet_model=imagenet, shade=SHADE)
    with torch.no_grad():
        main = outputs[0]
        size = main.labels.shape[-2:]
        logits = F.interpolate(main.logits.float(), size, mode="bilinear", align_corners=False)
        _, per = cross_entropy(logits.contiguous(memory_format=torch.channels_last), main.labels)
        got = plain(outputs, images).per_image
    assert got.shape == (2,)
    assert torch.allclose(got, (per[:2] + per[2:]) / 2, rtol=1e-5)

    # UBE and GAP: each loss over both halves as one batch (UBE's statistics over both halves'
    # boundary pixels); GAP's bank took the original half only: the same update as from the
    # first two images (HRDA: the detail output's loss reads the bank the fused one updated).
    u = recipe.ube
    assert u is not None
    seg_expected = gap_expected = 0.0
    with torch.no_grad():
        for out in outputs:
            size = out.labels.shape[-2:]
            logits = F.interpolate(out.logits.float(), size, mode="bilinear", align_corners=False)
            boundary = boundary_mask(out.labels, u.dilate_kernel, u.erode_kernel)
            ube = ube_loss(logits, out.labels, boundary, alpha=u.alpha, eps=u.eps)
            seg_expected += out.weight * float(ube.loss)
            features = out.features.detach().float()
            whole = gap_loss(features, out.labels, bank_before, update=False, **steps)
            gap_expected += out.weight * float(whole.loss)
            gap_loss(features[:2], out.labels[:2], bank_before, **steps)
    assert float(values[1]) == pytest.approx(seg_expected, rel=1e-5)
    assert float(values[2]) > 0
    assert float(values[2]) == pytest.approx(gap_expected, rel=1e-5)
    assert int(bank.counts.sum()) > 0
    assert torch.equal(bank.counts, bank_before.counts)
    assert torch.allclose(bank.prototypes, bank_before.prototypes, atol=1e-6)


def test_objective_refuses_an_undoubled_batch() -> None:
    recipe = _recipe()
    model = build_model(DAFORMER).train()
    objective = Objective(None, None, None, recipe.feature_distance, shade=SHADE)
    images, labels = torch.randn(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long)
    with pytest.raises(ValueError, match="do not hold 2 x 2 images"):
        objective(model(images, labels), images)


# ---------------------------------------------------------------------------------------------
# The basis pass and training


def test_defaults_are_the_anchors() -> None:
    """HRDA dg / DGInStyle-SegModel experiments.py (shade=True): 64 styles, 0.0156, every 4,000
    iterations, consistency weight 10; off unless a recipe turns it on."""
    shade = load_config()["training"]["shade"]
    assert shade == {
        "enabled": False,
        "basis_styles": 64,
        "concentration": 0.0156,
        "refresh_every": 4000,
        "consistency_weight": 10.0,
    }


def test_basis_comes_from_the_source_rows_only(lists, tmp_path) -> None:
    rows = read_data_list(lists["combined"])
    # generated rows that do not exist on disk: the pass must never read them
    missing = [
        ListEntry(
            f"x{i}", str(tmp_path / "no.png"), str(tmp_path / "no.png"), "train_ids", "generated"
        )
        for i in range(2)
    ]
    path = tmp_path / "list.csv"
    write_data_list(path, [*rows, rows[0], *missing])  # a repeated source row counts once
    entries = read_data_list(path)
    sources = source_rows(entries)
    assert len(sources) == 8 and all(e.part == "source" for e in sources)
    recipe = _recipe()
    torch.manual_seed(0)
    model = build_model(DAFORMER).train()
    basis = StyleBasis(model, SHADE, entries, recipe.transforms, seed=3, batch_size=3, workers=0)
    record = basis.refresh(0)
    assert model.training  # the pass ran in eval mode and restored the mode
    assert (record.images, record.styles, record.channels) == (8, 5, 8)
    assert "5 styles of 2 x 8 from 8 source images" in record.message()
    styles = basis.collect(0)
    assert styles.shape == (8, 16)
    chosen = torch.cat([basis.style.basis_mean, basis.style.basis_std], dim=1)
    # every basis style is one source image's style vector, five distinct ones
    matches = [int((styles == row).all(dim=1).nonzero()[0]) for row in chosen]
    assert len(set(matches)) == 5
    # the statistics are the stage-1 feature's mean and unbiased std, in eval mode, of the
    # source images through the training pipeline without the RCS re-crop
    images = torch.stack([basis_image(sources[i], recipe.transforms, 3, i) for i in range(8)])
    model.eval()
    with torch.no_grad():
        direct = style_vectors(model.style_features(images))
    model.train()
    assert torch.allclose(styles, direct, atol=1e-5)
    again = StyleBasis(build_model(DAFORMER), SHADE, entries, recipe.transforms, 3, 2, 0)
    again.load_state_dict(basis.state_dict())
    assert torch.equal(again.style.basis_mean, basis.style.basis_mean)


def basis_image(entry: ListEntry, settings, seed: int, index: int) -> torch.Tensor:
    """Image ``index`` of the pass at iteration 0: its own stream, no RCS re-crop."""
    assert entry.part == "source"
    image, label = load_sample(to_sample_ref(entry))
    rng = np.random.default_rng([seed, 0, index, 2])
    sample = transform_sample(image, label, False, -1, settings, rng)
    return torch.from_numpy(sample.image)


def passes_printed(text: str) -> list[int]:
    return [int(line.split()[4][:-1]) for line in text.splitlines() if "SHADE basis at" in line]


def test_resume_with_shade_is_bitwise_identical(lists, tmp_path, capsys) -> None:
    shade = {"enabled": True, "basis_styles": 4, "refresh_every": 3}
    params = train_params(
        seed=1, iterations=10, has={"refresh_every": 3, "midpoint": 4, "k": 1.0}, shade=shade
    )
    run = options(checkpoint_every=4)
    whole = T.train(params, lists["combined"], run_files(tmp_path / "whole"), run)
    assert passes_printed(capsys.readouterr().err) == [0, 3, 6, 9]
    T.train(params, lists["combined"], run_files(tmp_path / "resumed"), run, stop_after=6)
    assert passes_printed(capsys.readouterr().err) == [0, 3]
    resumed = T.train(params, lists["combined"], run_files(tmp_path / "resumed"), run)
    assert resumed.resumed_from == 4  # between the passes at 3 and 6: the basis is restored
    assert passes_printed(capsys.readouterr().err) == [6, 9]  # no pass at the resume point
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and not any("basis" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    basis_a, basis_b = whole.shade.state_dict(), resumed.shade.state_dict()
    assert basis_a["has_basis"] and basis_b["has_basis"]
    assert torch.equal(basis_a["mean"], basis_b["mean"])
    assert torch.equal(basis_a["std"], basis_b["std"])
    rows_a = (tmp_path / "whole" / "loss_log.csv").read_text().splitlines()
    rows_b = (tmp_path / "resumed" / "loss_log.csv").read_text().splitlines()
    cols = rows_a[0].split(",")
    assert "style" in cols
    for ra, rb in zip(rows_a[1:], rows_b[1:], strict=True):
        for col, va, vb in zip(cols, ra.split(","), rb.split(","), strict=True):
            if col != "seconds":
                assert va == vb, (ra, col)
    assert float(rows_a[1].split(",")[cols.index("style")]) > 0
    # evaluation loads model.pt with no style module
    from flexseg.checkpoint import load_model

    model, _ = load_model(tmp_path / "whole" / "model.pt")
    assert model.encoder.style is None
