"""Time GAP's vectorized prototype update (Eq. 4) against the pixel-by-pixel loop it replaces.

    python benchmarks/prototype_update.py [--pixels 4000] [--dim 256] [--device cpu]

Both start from the same bank (about half of the prototypes already initialized) and take the
same boundary pixels in the same order; the script checks that they agree, prints the timings
and ends with ``vectorized_speedup=<x>``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from flexseg.losses.gap import PrototypeBank


def loop_update(bank: PrototypeBank, feats, classes, grans, momentum: float) -> None:
    """Eq. 4 one pixel at a time, as the paper states it."""
    with torch.no_grad():
        for f, c, g in zip(feats, classes.tolist(), grans.tolist(), strict=True):
            f = F.normalize(f, dim=0)
            if bank.counts[c, g] == 0:
                bank.prototypes[c, g] = f
            else:
                bank.prototypes[c, g] = momentum * bank.prototypes[c, g] + (1 - momentum) * f
            bank.counts[c, g] += 1


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--granularities", type=int, default=3)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--pixels", type=int, default=4000, help="boundary pixels per update")
    parser.add_argument("--momentum", type=float, default=0.99)
    parser.add_argument("--repeats", type=int, default=20, help="vectorized runs (best is kept)")
    parser.add_argument("--loop-repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    g = torch.Generator().manual_seed(args.seed)
    start = PrototypeBank(args.classes, args.granularities, args.dim)
    seeded = torch.rand(args.classes, args.granularities, generator=g) < 0.5
    start.prototypes.copy_(F.normalize(torch.randn(start.prototypes.shape, generator=g), dim=-1))
    start.prototypes[~seeded] = 0
    start.counts.copy_(torch.where(seeded, torch.randint(1, 1000, seeded.shape, generator=g), 0))
    start = start.to(device)
    feats = torch.randn(args.pixels, args.dim, generator=g).to(device)
    classes = torch.randint(0, args.classes, (args.pixels,), generator=g).to(device)
    grans = torch.randint(0, args.granularities, (args.pixels,), generator=g).to(device)

    def fresh() -> PrototypeBank:
        bank = PrototypeBank(args.classes, args.granularities, args.dim).to(device)
        bank.load_state_dict(start.state_dict())
        return bank

    vec_bank, loop_bank = fresh(), fresh()
    vec_bank.update(feats, classes, grans, args.momentum)
    loop_update(loop_bank, feats, classes, grans, args.momentum)
    max_diff = (vec_bank.prototypes - loop_bank.prototypes).abs().max().item()
    if not torch.equal(vec_bank.counts, loop_bank.counts) or max_diff > 1e-4:
        raise SystemExit(f"vectorized and loop updates disagree (max |diff| = {max_diff:.3g})")

    t_vec = timed(
        lambda: fresh().update(feats, classes, grans, args.momentum), device, args.repeats
    )
    t_loop = timed(
        lambda: loop_update(fresh(), feats, classes, grans, args.momentum),
        device,
        args.loop_repeats,
    )
    print(
        f"bank {args.classes}x{args.granularities}x{args.dim}, {args.pixels} boundary pixels, "
        f"momentum {args.momentum}, device {device}, threads {args.threads}"
    )
    print(f"max |vectorized - loop| = {max_diff:.3g}")
    print(f"loop_seconds={t_loop:.4f}")
    print(f"vectorized_seconds={t_vec:.5f}")
    print(f"vectorized_speedup={t_loop / t_vec:.1f}")


if __name__ == "__main__":
    main()
