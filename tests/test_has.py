"""Hardness-Aware Sampling (Eqs. 10-12): schedule, probabilities, score updates, the draws'
statistics before and after the midpoint, resume, DataLoader use and DDP."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from flexseg.sampling import HardnessSampler, hardness_probabilities, has_threshold

torch.set_num_threads(1)


@pytest.mark.parametrize("t", [0, 50, 150, 190, 200, 201, 230, 400, 3000])
@pytest.mark.parametrize("k,m", [(0.05, 200.0), (0.01, 20000.0), (1.0, 0.0)])
def test_threshold_eq11(t: float, k: float, m: float) -> None:
    z = k * (t - m)
    if abs(z) < 700:  # where the plain formula does not overflow
        assert has_threshold(t, k, m) == pytest.approx(1.0 / (1.0 + math.exp(z)), rel=1e-12)


def test_threshold_tails_do_not_overflow() -> None:
    assert has_threshold(1e9, 0.05, 0.0) == 0.0
    assert has_threshold(-1e9, 0.05, 0.0) == 1.0
    assert has_threshold(200, 0.05, 200) == 0.5


@pytest.mark.parametrize("tau", [1.0, 0.5, 3.0])
def test_probabilities_eq12(tau: float) -> None:
    scores = torch.tensor([0.3, -1.0, 2.5, 0.0, 1.1], dtype=torch.float64)
    denom = sum(math.exp(float(h) / tau) for h in scores)
    expected = [math.exp(float(h) / tau) / denom for h in scores]
    got = hardness_probabilities(scores, tau)
    assert got.tolist() == pytest.approx(expected, rel=1e-12)


def test_probabilities_stable_for_large_scores() -> None:
    scores = torch.tensor([1000.0, 999.0, 0.0], dtype=torch.float64)
    got = hardness_probabilities(scores, 1.0)
    e = [1.0, math.exp(-1.0), math.exp(-1000.0)]
    assert bool(torch.isfinite(got).all())
    assert got.tolist() == pytest.approx([v / sum(e) for v in e], rel=1e-12)


def reference_scores(records, num, beta):
    """Eq. 10 with L_i = mean of the losses recorded for i in each refresh window."""
    h = [0.0] * num
    for window in records:
        seen: dict[int, list[float]] = {}
        for i, loss in window:
            seen.setdefault(i, []).append(loss)
        for i, losses in seen.items():
            h[i] = beta * h[i] + (1 - beta) * sum(losses) / len(losses)
    return h


def test_record_and_refresh_eq10() -> None:
    windows = [
        [(0, 1.0), (0, 3.0), (2, 5.0), (4, 0.5)],
        [(0, 4.0), (1, 2.0), (1, 2.5)],
        [(3, 7.0)],
    ]
    sampler = HardnessSampler(5, 2, beta=0.9, refresh_every=50)
    for w, window in enumerate(windows):
        for i, loss in window:
            sampler.record([i], torch.tensor([loss]))
        assert not sampler.refresh(50 * (w + 1) - 1)
        assert sampler.refresh(50 * (w + 1))
        expected = reference_scores(windows[: w + 1], 5, 0.9)
        assert sampler.scores.tolist() == pytest.approx(expected, rel=1e-12)
    assert not sampler.refresh(0)
    assert sampler.probabilities.tolist() == pytest.approx(
        hardness_probabilities(torch.tensor(expected), 1.0).tolist()
    )


def skewed_sampler(scores, batch_size=1, **kwargs) -> HardnessSampler:
    sampler = HardnessSampler(len(scores), batch_size, beta=0.0, **kwargs)
    sampler.record(list(range(len(scores))), torch.tensor(scores, dtype=torch.float64))
    sampler.update_scores()
    return sampler


def frequencies(sampler: HardnessSampler, draws: int) -> torch.Tensor:
    stream = iter(sampler)
    idx = torch.tensor([next(stream) for _ in range(draws)])
    return torch.bincount(idx, minlength=sampler.num_samples).double() / draws


def assert_frequencies(freq: torch.Tensor, p: torch.Tensor, draws: int) -> None:
    sigma = torch.sqrt(p * (1 - p) / draws)
    assert bool(((freq - p).abs() <= 5 * sigma + 1e-9).all()), (freq.tolist(), p.tolist())


def test_uniform_before_midpoint_and_hardness_after() -> None:
    scores = [0.0, 0.0, 0.0, 0.0, 3.0]
    p_hard = hardness_probabilities(torch.tensor(scores), 1.0)
    uniform = torch.full((5,), 0.2, dtype=torch.float64)
    before = skewed_sampler(scores, midpoint=1e6, seed=1)
    assert_frequencies(frequencies(before, 4000), uniform, 4000)
    after = skewed_sampler(scores, midpoint=-1e6, seed=1)
    assert_frequencies(frequencies(after, 4000), p_hard, 4000)
    half = skewed_sampler(scores, k=0.0, seed=2)  # thr = 0.5 at every iteration
    assert_frequencies(frequencies(half, 4000), 0.5 * uniform + 0.5 * p_hard, 4000)
    assert p_hard[4] > 0.8  # the three cases differ by far more than the tolerance


def test_schedule_follows_the_iteration_count() -> None:
    sampler = skewed_sampler([0.0] * 4 + [30.0], batch_size=2, k=0.05, midpoint=200, seed=3)
    stream = iter(sampler)
    draws = torch.tensor([next(stream) for _ in range(800)]).view(400, 2)
    early = (draws[:100] == 4).double().mean().item()  # t < 100: thr > 0.99, uniform
    late = (draws[300:] == 4).double().mean().item()  # t >= 300: thr < 0.007, hardness
    assert abs(early - 0.2) < 5 * math.sqrt(0.16 / 200) + 0.01
    assert late > 0.97


def test_one_random_number_per_iteration() -> None:
    sampler = skewed_sampler([0.0] * 4 + [50.0], batch_size=8, k=0.0, seed=4)
    stream = iter(sampler)
    batches = torch.tensor([next(stream) for _ in range(8 * 400)]).view(400, 8)
    all_hard = (batches == 4).all(dim=1).double().mean().item()
    # One r per batch: half the batches are all hard; per-draw r would give 0.6^8 = 0.017.
    assert abs(all_hard - 0.5) < 5 * math.sqrt(0.25 / 400)


def take(sampler: HardnessSampler, n: int) -> list[int]:
    stream = iter(sampler)
    return [next(stream) for _ in range(n)]


def test_seeded_and_rank_specific() -> None:
    same = [take(HardnessSampler(50, 2, seed=7, rank=0), 40) for _ in range(2)]
    other_rank = take(HardnessSampler(50, 2, seed=7, rank=1), 40)
    other_seed = take(HardnessSampler(50, 2, seed=8, rank=0), 40)
    assert same[0] == same[1] and same[0] != other_rank and same[0] != other_seed


def test_a_new_iterator_continues_the_stream() -> None:
    one = HardnessSampler(50, 2, seed=7)
    two = HardnessSampler(50, 2, seed=7)
    assert take(one, 10) + take(one, 10) == take(two, 20)


def test_state_dict_resume_continues_the_stream(tmp_path: Path) -> None:
    kwargs = dict(k=0.5, midpoint=10, refresh_every=5, seed=11)
    first = HardnessSampler(20, 3, **kwargs)
    take(first, 31)  # stops mid-iteration on purpose
    first.record([1, 5, 5], [2.0, 9.0, 8.0])
    first.refresh(5)
    first.record([7], [4.0])
    torch.save(first.state_dict(), tmp_path / "sampler.pt")
    expected = take(first, 60)
    first.refresh(10)

    second = HardnessSampler(20, 3, **{**kwargs, "seed": 99})
    second.load_state_dict(torch.load(tmp_path / "sampler.pt"))
    assert take(second, 60) == expected
    second.refresh(10)
    assert torch.equal(second.scores, first.scores)
    with pytest.raises(ValueError, match="num_samples"):
        HardnessSampler(21, 3).load_state_dict(first.state_dict())


def test_dataloader_draws_lazily_with_refreshed_scores() -> None:
    sampler = HardnessSampler(6, 2, beta=0.0, refresh_every=1, midpoint=-1e6, seed=5)
    loader = DataLoader(list(range(6)), batch_size=2, sampler=sampler, num_workers=0)
    batches = iter(loader)
    next(batches)
    sampler.record([3], [60.0])
    assert sampler.refresh(1)
    for _ in range(5):
        assert next(batches).tolist() == [3, 3]


def test_bad_records_raise() -> None:
    sampler = HardnessSampler(4, 2)
    with pytest.raises(ValueError, match="index 4"):
        sampler.record([1, 4], [0.1, 0.2])
    with pytest.raises(ValueError, match="non-finite"):
        sampler.record([1], [float("nan")])
    with pytest.raises(ValueError, match="2 indices but 1 losses"):
        sampler.record([1, 2], [0.1])


# ---------------------------------------------------------------------------------------------
# DDP: two gloo processes on the CPU.

RANK_RECORDS = {0: ([0, 1, 1, 5], [1.0, 2.0, 4.0, 0.5]), 1: ([1, 3, 7], [6.0, 3.0, 2.0])}


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        sampler = HardnessSampler(8, 2, beta=0.5, refresh_every=10, seed=3)
        sampler.record(*RANK_RECORDS[rank])
        sampler.refresh(10)
        draws = take(sampler, 30)
        torch.save({"scores": sampler.scores, "draws": draws}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_scores_identical_and_streams_differ(tmp_path: Path) -> None:
    mp.start_processes(
        _ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork"
    )
    out = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = HardnessSampler(8, 2, beta=0.5, refresh_every=10)
    for r in range(2):
        single.record(*RANK_RECORDS[r])
    single.refresh(10)
    assert torch.equal(out[0]["scores"], out[1]["scores"])
    torch.testing.assert_close(out[0]["scores"], single.scores)
    assert out[0]["draws"] != out[1]["draws"]
