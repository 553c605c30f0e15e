"""GAP (Eqs. 3-6): the prototype update, the imbalance weights and the prototype InfoNCE, each
against a plainly written loop; the DDP bank; gradients of GAP + UBE."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from flexseg.losses.boundary import boundary_mask, downsample_labels, granularity_masks
from flexseg.losses.gap import (
    PrototypeBank,
    _add_rows,
    boundary_features,
    gap_loss,
    gather_for_update,
    imbalance_weights,
    prototype_info_nce,
)
from flexseg.losses.ube import ube_loss

torch.set_num_threads(1)
IGNORE = 255


def reference_update(prototypes, counts, features, classes, grans, momentum):
    """Eq. 4 one pixel at a time: normalize, seed an empty prototype, else momentum."""
    protos = prototypes.clone()
    counts = counts.clone()
    for f, c, g in zip(features, classes.tolist(), grans.tolist(), strict=True):
        f = f / f.norm()
        if counts[c, g] == 0:
            protos[c, g] = f
        else:
            protos[c, g] = momentum * protos[c, g] + (1 - momentum) * f
        counts[c, g] += 1
    return protos, counts


def random_bank(seed: int, classes=5, grans=3, dim=6, init_share=0.5) -> PrototypeBank:
    g = torch.Generator().manual_seed(seed)
    bank = PrototypeBank(classes, grans, dim).double()
    init = torch.rand(classes, grans, generator=g) < init_share
    bank.prototypes.copy_(torch.randn(classes, grans, dim, generator=g, dtype=torch.float64))
    bank.prototypes[~init] = 0
    bank.counts.copy_(torch.where(init, torch.randint(1, 50, (classes, grans), generator=g), 0))
    return bank


def random_rows(seed: int, n: int, classes=5, grans=3, dim=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, dim, generator=g, dtype=dtype) * 3
    return (
        feats,
        torch.randint(0, classes, (n,), generator=g),
        torch.randint(0, grans, (n,), generator=g),
    )


@pytest.mark.parametrize("momentum", [0.99, 0.9, 0.5, 0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_vectorized_update_equals_sequential_loop(momentum: float, seed: int) -> None:
    bank = random_bank(seed)
    feats, classes, grans = random_rows(seed + 10, 300)
    expected, expected_counts = reference_update(
        bank.prototypes, bank.counts, feats, classes, grans, momentum
    )
    bank.update(feats, classes, grans, momentum)
    torch.testing.assert_close(bank.prototypes, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(bank.counts, expected_counts)


@pytest.mark.parametrize("matmul", [False, True])
def test_add_rows_both_ways_equal_a_loop(matmul: bool) -> None:
    # The update adds rows with index_add on a CPU and with a mixing matmul on a GPU.
    g = torch.Generator().manual_seed(12)
    base = torch.randn(7, 5, generator=g, dtype=torch.float64)
    rows = torch.randint(0, 7, (40,), generator=g)
    coef = torch.rand(40, generator=g, dtype=torch.float64)
    feats = torch.randn(40, 5, generator=g, dtype=torch.float64)
    keep = torch.rand(7, generator=g, dtype=torch.float64)
    expected = base.clone()
    for r in range(7):
        expected[r] *= keep[r]
    for r, c, f in zip(rows.tolist(), coef, feats, strict=True):
        expected[r] += c * f
    _add_rows(base, keep, rows, coef, feats, matmul=matmul)
    torch.testing.assert_close(base, expected, rtol=1e-12, atol=1e-12)


def test_long_runs_underflow_safely() -> None:
    bank = PrototypeBank(2, 1, 4).double()
    feats, _, _ = random_rows(3, 3000, dim=4)
    classes = torch.zeros(3000, dtype=torch.long)
    grans = torch.zeros(3000, dtype=torch.long)
    expected, _ = reference_update(bank.prototypes, bank.counts, feats, classes, grans, 0.5)
    bank.update(feats, classes, grans, 0.5)
    assert bool(torch.isfinite(bank.prototypes).all())
    torch.testing.assert_close(bank.prototypes, expected, rtol=1e-12, atol=1e-12)


def test_float32_update_close_to_loop() -> None:
    bank = PrototypeBank(5, 3, 6)
    feats, classes, grans = random_rows(4, 500, dtype=torch.float32)
    expected, _ = reference_update(
        bank.prototypes.double(), bank.counts, feats.double(), classes, grans, 0.99
    )
    bank.update(feats, classes, grans, 0.99)
    torch.testing.assert_close(bank.prototypes.double(), expected, rtol=1e-5, atol=1e-6)


def test_first_feature_seeds_a_prototype() -> None:
    bank = PrototypeBank(3, 3, 4).double()
    f = torch.tensor([[3.0, 0.0, 4.0, 0.0]], dtype=torch.float64)
    bank.update(f, torch.tensor([2]), torch.tensor([1]), momentum=0.99)
    torch.testing.assert_close(bank.prototypes[2, 1], f[0] / 5)
    assert bank.counts.sum() == 1 and bank.counts[2, 1] == 1


def reference_imbalance(counts, active):
    flat = [(c, g) for c in range(counts.shape[0]) for g in range(counts.shape[1])]
    on = [q for q in flat if bool(active[q])]
    top = max(int(counts[q]) for q in on)
    raw = {q: (top + 1) / (int(counts[q]) + 1) for q in on}
    z = max(raw.values())
    out = torch.zeros(counts.shape, dtype=torch.float64)
    for q in on:
        out[q] = raw[q] / z
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_imbalance_weights_eq6(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 1000, (4, 3), generator=g)
    counts[0, 0] = 0
    everything = torch.ones_like(counts, dtype=torch.bool)
    got = imbalance_weights(counts)
    torch.testing.assert_close(got, reference_imbalance(counts, everything))
    assert got.max().item() == pytest.approx(1.0)
    active = counts > 0
    got = imbalance_weights(counts, active)
    torch.testing.assert_close(got, reference_imbalance(counts, active))
    assert got[0, 0] == 0 and got.max().item() == pytest.approx(1.0)


def reference_info_nce(features, classes, grans, prototypes, counts, tau):
    """Eq. 5 pixel by pixel with cosine similarity, skipping uninitialized prototypes."""
    num_c, num_g, _ = prototypes.shape
    init = [(c, g) for c in range(num_c) for g in range(num_g) if int(counts[c, g]) > 0]
    weights = reference_imbalance(counts, counts > 0)
    total, n = 0.0, 0
    for f, c, g in zip(features, classes.tolist(), grans.tolist(), strict=True):
        if (c, g) not in init:
            continue

        def cos(p, f=f) -> float:
            return float(f @ p) / (float(f.norm()) * float(p.norm()))

        sims = {q: cos(prototypes[q]) / tau for q in init}
        top = max(sims.values())
        lse = top + math.log(sum(math.exp(s - top) for s in sims.values()))
        total += -float(weights[c, g]) * (sims[(c, g)] - lse)
        n += 1
    return total / n, n


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.07, 1.0])
def test_info_nce_matches_reference(seed: int, tau: float) -> None:
    bank = random_bank(seed, init_share=0.6)
    feats, classes, grans = random_rows(seed + 20, 40)
    got = prototype_info_nce(feats, classes, grans, bank, temperature=tau)
    loss, n = reference_info_nce(feats, classes, grans, bank.prototypes, bank.counts, tau)
    assert got.num_pixels == n and got.num_boundary == 40 and 0 < n < 40
    assert got.loss.item() == pytest.approx(loss, rel=1e-9)


def test_info_nce_empty_bank_is_a_graph_connected_zero() -> None:
    bank = PrototypeBank(5, 3, 6).double()
    feats, classes, grans = random_rows(0, 10)
    feats.requires_grad_(True)
    got = prototype_info_nce(feats, classes, grans, bank)
    got.loss.backward()
    assert got.loss.item() == 0.0 and got.num_pixels == 0
    assert torch.equal(feats.grad, torch.zeros_like(feats))


def blocky_labels(seed: int, batch=2, classes=5, size=(32, 40), cell=8, void=0.1):
    g = torch.Generator().manual_seed(seed)
    h, w = size[0] // cell, size[1] // cell
    coarse = torch.randint(0, classes, (batch, h, w), generator=g)
    labels = coarse.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    labels[torch.rand(labels.shape, generator=g) < void] = IGNORE
    return labels


def reference_boundary_pixels(labels, feature_size, kernels, classes):
    """Pixels of Eq. 3 in batch-then-raster order with their finest granularity, by loops."""
    small = downsample_labels(labels, feature_size, num_classes=classes)
    masks = granularity_masks(small, kernels)
    out = []
    for b in range(small.shape[0]):
        for y in range(small.shape[1]):
            for x in range(small.shape[2]):
                for g in range(len(kernels)):
                    if bool(masks[b, g, y, x]):
                        out.append((b, y, x, int(small[b, y, x]), g))
                        break
    return out


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_boundary_features_finest_granularity_raster_order(layout: torch.memory_format) -> None:
    # The trainer's channels-last features are gathered as rows, others as columns.
    labels = blocky_labels(1)
    feats = torch.randn(2, 6, 16, 20, dtype=torch.float64).contiguous(memory_format=layout)
    got = boundary_features(feats, labels, (3, 5, 7), num_classes=5)
    ref = reference_boundary_pixels(labels, (16, 20), (3, 5, 7), 5)
    assert len(ref) > 0 and len(ref) == got.features.shape[0]
    assert got.classes.tolist() == [r[3] for r in ref]
    assert got.grans.tolist() == [r[4] for r in ref]
    expected = torch.stack([feats[b, :, y, x] for b, y, x, _, _ in ref])
    assert torch.equal(got.features, expected)
    assert set(got.grans.tolist()) == {0, 1, 2}


def test_gap_loss_uses_bank_before_update_then_updates() -> None:
    labels = blocky_labels(2)
    torch.manual_seed(0)
    feats = torch.randn(2, 6, 16, 20, dtype=torch.float64, requires_grad=True)
    bank = random_bank(3, init_share=0.7)
    before = PrototypeBank(5, 3, 6).double()
    before.load_state_dict(bank.state_dict())

    result = gap_loss(feats, labels, bank, (3, 5, 7), temperature=0.1, momentum=0.9)

    ref = reference_boundary_pixels(labels, (16, 20), (3, 5, 7), 5)
    rows = torch.stack([feats[b, :, y, x] for b, y, x, _, _ in ref]).detach()
    classes = torch.tensor([r[3] for r in ref])
    grans = torch.tensor([r[4] for r in ref])
    loss, n = reference_info_nce(rows, classes, grans, before.prototypes, before.counts, 0.1)
    assert result.num_pixels == n and result.num_boundary == len(ref)
    assert result.loss.item() == pytest.approx(loss, rel=1e-9)
    protos, counts = reference_update(before.prototypes, before.counts, rows, classes, grans, 0.9)
    torch.testing.assert_close(bank.prototypes, protos, rtol=1e-12, atol=1e-12)
    assert torch.equal(bank.counts, counts)
    result.loss.backward()  # the in-place bank update must not break the graph
    assert feats.grad is not None and bool(torch.isfinite(feats.grad).all())
    assert feats.grad.abs().sum() > 0


def test_gap_loss_without_update_leaves_bank() -> None:
    labels = blocky_labels(4)
    bank = random_bank(5, init_share=0.7)
    state = {k: v.clone() for k, v in bank.state_dict().items()}
    gap_loss(torch.randn(2, 6, 16, 20, dtype=torch.float64), labels, bank, update=False)
    assert all(torch.equal(state[k], v) for k, v in bank.state_dict().items())


def test_no_boundary_pixels_zero_loss_with_graph() -> None:
    labels = torch.full((2, 32, 40), 3, dtype=torch.long)
    feats = torch.randn(2, 6, 16, 20, requires_grad=True)
    bank = random_bank(6).float()
    result = gap_loss(feats, labels, bank)
    assert result.loss.item() == 0.0 and result.num_boundary == 0
    assert result.loss.requires_grad
    result.loss.backward()
    assert torch.equal(feats.grad, torch.zeros_like(feats))


def test_first_batch_initializes_the_bank() -> None:
    labels = blocky_labels(7)
    feats = torch.randn(2, 6, 16, 20, requires_grad=True)
    bank = PrototypeBank(5, 3, 6)
    first = gap_loss(feats, labels, bank)
    assert first.loss.item() == 0.0 and first.num_pixels == 0 and first.num_boundary > 0
    assert int(bank.counts.sum()) == first.num_boundary
    second = gap_loss(feats, labels, bank)
    assert second.num_pixels == second.num_boundary == first.num_boundary
    assert second.loss.item() > 0


def test_bad_inputs_raise() -> None:
    bank = PrototypeBank(5, 3, 6)
    feats, classes, grans = random_rows(0, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match="class index 9"):
        bank.update(feats, torch.tensor([0, 9, 1, 1]), grans, 0.9)
    with pytest.raises(ValueError, match="momentum"):
        bank.update(feats, classes, grans, 1.5)
    with pytest.raises(ValueError, match="increasing"):
        gap_loss(torch.randn(1, 6, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long), bank, (5, 3, 7))
    with pytest.raises(ValueError, match="channels"):
        gap_loss(torch.randn(1, 7, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long), bank)


def test_gap_and_ube_backpropagate_to_logits_and_features() -> None:
    torch.manual_seed(0)
    labels = blocky_labels(8, size=(32, 32))
    logits = torch.randn(2, 5, 32, 32, requires_grad=True)
    feats = torch.randn(2, 6, 8, 8, requires_grad=True)
    bank = PrototypeBank(5, 3, 6)
    gap_loss(feats.detach(), labels, bank)  # seed the prototypes
    ube = ube_loss(logits, labels, boundary_mask(labels, 5, 5), alpha=3.0)
    gap = gap_loss(feats, labels, bank)
    total = ube.loss + 0.5 * gap.loss
    total.backward()
    for grad in (logits.grad, feats.grad):
        assert grad is not None and bool(torch.isfinite(grad).all()) and grad.abs().sum() > 0


def test_gap_loss_same_for_both_feature_layouts() -> None:
    labels = blocky_labels(9, size=(32, 32))
    base = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        bank = PrototypeBank(5, 3, 6).double()
        gap_loss(base.flip(0), labels, bank)  # seed the prototypes
        feats = base.clone().contiguous(memory_format=layout).requires_grad_(True)
        loss = gap_loss(feats, labels, bank).loss
        (grad,) = torch.autograd.grad(loss, feats)
        results.append((loss.detach(), grad, bank.prototypes.clone()))
    (l1, g1, p1), (l2, g2, p2) = results
    assert l1.item() > 0 and torch.equal(l1, l2) and torch.equal(p1, p2)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-15)
    assert g1.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# DDP: two gloo processes on the CPU.


def rank_rows(rank: int, step: int):
    n = {(0, 0): 7, (1, 0): 4, (0, 1): 0, (1, 1): 5}[(rank, step)]
    return random_rows(100 * step + rank, n, dtype=torch.float32)


def rank_batch(rank: int):
    g = torch.Generator().manual_seed(500 + rank)
    return torch.randn(2, 6, 16, 20, generator=g), blocky_labels(600 + rank)


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        bank = PrototypeBank(5, 3, 6)
        for step in (0, 1):
            batch = gather_for_update(*rank_rows(rank, step))
            bank.update(batch.features, batch.classes, batch.grans, momentum=0.9)
        feats, labels = rank_batch(rank)
        gap_loss(feats, labels, bank, momentum=0.9)
        torch.save(bank.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_banks_identical_and_equal_to_single_process(tmp_path: Path) -> None:
    world = 2
    # fork: the children need no fresh interpreter (CPU only, no CUDA in this process).
    mp.start_processes(
        _ddp_worker,
        args=(world, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world,
        start_method="fork",
    )
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert torch.equal(states[0]["prototypes"], states[1]["prototypes"])
    assert torch.equal(states[0]["counts"], states[1]["counts"])

    bank = PrototypeBank(5, 3, 6)
    for step in (0, 1):
        parts = [rank_rows(r, step) for r in range(world)]
        bank.update(*(torch.cat([p[i] for p in parts]) for i in range(3)), momentum=0.9)
    pixels = [boundary_features(*rank_batch(r), (3, 5, 7), num_classes=5) for r in range(world)]
    bank.update(
        torch.cat([p.features for p in pixels]),
        torch.cat([p.classes for p in pixels]),
        torch.cat([p.grans for p in pixels]),
        momentum=0.9,
    )
    torch.testing.assert_close(states[0]["prototypes"], bank.prototypes, rtol=1e-6, atol=1e-7)
    assert torch.equal(states[0]["counts"], bank.counts)
