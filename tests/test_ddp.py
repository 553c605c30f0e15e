"""Distributed training on two CPU processes (gloo): identical weights, prototype bank, HAS
scores and SHADE basis on both ranks; the re-launch for ``nproc`` > 1; disjoint shards of the
epoch order."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from train_fixtures import (  # noqa: E402
    make_tree,
    options,
    run_file_args,
    run_files,
    train_params,
    write_lists,
)

from flexseg.data.training_set import EpochOrder, draw_number  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _record_basis_passes() -> list[dict]:
    """Wrap ``StyleBasis.refresh``: after each pass, this process's basis as the pass left it
    (DDP's buffer broadcast at the next forward would hide a difference between ranks) and the
    basis one process computes alone, from all source images, with the same model."""
    import numpy as np

    from flexseg.models.style_hallucination import farthest_point_sampling
    from flexseg.shade import StyleBasis

    passes: list[dict] = []
    refresh = StyleBasis.refresh

    def recorded(self, iteration):
        result = refresh(self, iteration)
        rank, world = self.rank, self.world
        self.rank, self.world = 0, 1
        try:
            alone = self.collect(iteration).cpu()
        finally:
            self.rank, self.world = rank, world
        first = int(np.random.default_rng([self.seed, iteration, 3]).integers(alone.shape[0]))
        chosen = alone[farthest_point_sampling(alone, self.settings.basis_styles, first)]
        channels = self.style.channels
        state = self.state_dict()
        passes.append(
            {
                "iteration": iteration,
                "mean": state["mean"],
                "std": state["std"],
                "alone_mean": chosen[:, :channels],
                "alone_std": chosen[:, channels:],
            }
        )
        return result

    StyleBasis.refresh = recorded
    return passes


def _worker(
    rank: int, world: int, port: int, params: dict, data: str, out: str, projection: bool = False
) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        HF_HUB_OFFLINE="1",
    )
    torch.set_num_threads(1)
    import flexseg.train
    from flexseg.train import train

    if projection:  # build the GAP-only parameters whatever the experiment says
        build = flexseg.train.build_model
        flexseg.train.build_model = lambda cfg, gap_features=True: build(cfg)
    shade_on = params["training"].get("shade", {}).get("enabled", False)
    passes = _record_basis_passes() if shade_on else None
    result = train(params, data, run_files(Path(out) / "run"), options(checkpoint_every=3))
    state = {"model": result.model.state_dict()}
    if result.bank is not None:
        state["bank"] = result.bank.state_dict()
    if result.sampler is not None:
        state["scores"] = result.sampler.scores
        state["generator"] = result.sampler.generator.get_state()
    if result.shade is not None:
        state["basis"] = result.shade.state_dict()
        state["passes"] = passes
    torch.save(state, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    make_tree(root)
    return write_lists(root)


def test_two_processes_stay_identical(lists, tmp_path) -> None:
    """FLEX-Seg with SHADE: each rank styles its share of the source images for the basis
    passes (iterations 0 and 4); after the gather both hold the same basis."""
    shade = {"enabled": True, "basis_styles": 5, "refresh_every": 4}
    params = train_params(
        seed=0, iterations=6, has={"refresh_every": 2, "midpoint": 2, "k": 1.0}, shade=shade
    )
    params["experiment"] = {
        "name": "flexseg",
        "data": "combined",
        "gap": True,
        "ube": True,
        "has": True,
    }
    mp.spawn(
        _worker,
        args=(2, _free_port(), params, str(lists["combined"]), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in r0["model"]:
        assert torch.equal(r0["model"][key], r1["model"][key]), key
    assert int(r0["bank"]["counts"].sum()) > 0
    for key in r0["bank"]:
        assert torch.equal(r0["bank"][key], r1["bank"][key]), key
    assert torch.equal(r0["scores"], r1["scores"]) and float(r0["scores"].abs().sum()) > 0
    assert not torch.equal(r0["generator"], r1["generator"])  # each rank draws its own images
    assert r0["basis"]["has_basis"] and r1["basis"]["has_basis"]
    for key in ("mean", "std"):
        assert torch.equal(r0["basis"][key], r1["basis"][key]), key
    # each pass: both ranks computed the same basis (before any broadcast), and it is the one
    # a single process computes from all source images with the same model
    assert [p["iteration"] for p in r0["passes"]] == [0, 4]
    assert [p["iteration"] for p in r1["passes"]] == [0, 4]
    for p0, p1 in zip(r0["passes"], r1["passes"], strict=True):
        for key in ("mean", "std"):
            assert torch.equal(p0[key], p1[key]), (p0["iteration"], key)
            assert torch.allclose(p0[key], p0[f"alone_{key}"], rtol=1e-5, atol=1e-6), key
    # five distinct styles, none the zero row a missing share would leave
    rows = torch.cat([r0["basis"]["mean"], r0["basis"]["std"]], dim=1)
    assert len({tuple(r.tolist()) for r in rows}) == 5 and bool(rows[:, 8:].min() > 0)
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["state_dict"]
    for key in saved:
        assert torch.equal(saved[key], r0["model"][key])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2


def test_nproc_relaunches_under_torchrun(lists, tmp_path) -> None:
    params = train_params(seed=0, iterations=2)
    params["nproc"] = 2
    params["experiment"] = {
        "name": "dginstyle",
        "data": "combined",
        "gap": False,
        "ube": False,
        "has": False,
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flexseg.train",
            "--params",
            json.dumps(params),
            "--data",
            str(lists["combined"]),
            *run_file_args(tmp_path),
            *("--checkpoint-every", "2", "--threads", "1", "--workers", "0", "--device", "cpu"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "launching 2 training processes" in proc.stdout
    assert json.loads((tmp_path / "config.json").read_text())["world_size"] == 2
    assert (tmp_path / "model.pt").is_file()


def test_epoch_order_shards_are_disjoint() -> None:
    order = EpochOrder(size=23, batch=3, world=2, seed=5)
    assert order.iterations_per_epoch == 3  # 23 // 6; the last 5 positions of an epoch drop
    for epoch in range(3):
        seen = []
        for step in range(3):
            it = epoch * 3 + step
            seen += order.indices(it, 0) + order.indices(it, 1)
        assert len(seen) == len(set(seen)) == 18
    assert order.indices(0, 0) != order.indices(3, 0) or order.indices(0, 1) != order.indices(3, 1)
    again = EpochOrder(size=23, batch=3, world=2, seed=5)
    assert [again.indices(i, 1) for i in range(7)] == [order.indices(i, 1) for i in range(7)]
    draws = {draw_number(it, r, 2, 3, j) for it in range(4) for r in range(2) for j in range(3)}
    assert draws == set(range(24))
    with pytest.raises(Exception, match="fewer than one iteration"):
        EpochOrder(size=5, batch=3, world=2, seed=0)


DLV2_TINY = {
    "name": "tiny_r",
    "architecture": "daformer",
    "encoder": {"type": "resnet", "name": "resnet10t", "pretrained": None},
    "head": {"type": "deeplabv2", "fusion_dim": 16},
    "test_scale_factor": 1,
}


def test_deeplabv2_head_with_gap_off_trains_under_ddp(lists, tmp_path) -> None:
    """GAP off: the DeepLabV2 head's GAP-only projection is not built, so every parameter gets a
    gradient and DDP (no find_unused_parameters) passes its second iteration; with the
    projection built (the model of a GAP run) the same training stops there."""
    params = train_params(seed=0, iterations=2)
    params["model"] = dict(DLV2_TINY)
    params["experiment"] = {
        "name": "source_only",
        "data": "combined",
        "gap": False,
        "ube": False,
        "has": False,
    }
    mp.spawn(
        _worker,
        args=(2, _free_port(), params, str(lists["combined"]), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert not any("projection" in key for key in r0["model"])
    for key in r0["model"]:
        assert torch.equal(r0["model"][key], r1["model"][key]), key

    from flexseg.checkpoint import load_model

    model, _ = load_model(tmp_path / "run" / "model.pt")
    assert not model.gap_features and model.decode_head.projection is None

    with pytest.raises(Exception, match="finished reduction in the prior iteration"):
        mp.spawn(
            _worker,
            args=(2, _free_port(), params, str(lists["combined"]), str(tmp_path / "old"), True),
            nprocs=2,
            join=True,
        )
