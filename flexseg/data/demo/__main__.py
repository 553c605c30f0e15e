"""Render the procedural demo world on disk (``flexseg.data.demo.world``)."""

from __future__ import annotations

import argparse
import logging
import time

from flexseg.config import ConfigError, add_params_arguments, params_from_args
from flexseg.data.demo.world import class_frequency_table, log, render_world


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flexseg.data.demo", description=__doc__.split("\n\n")[0]
    )
    add_params_arguments(parser)
    parser.add_argument("--out", required=True, help="world root (the config's demo.root)")
    parser.add_argument("--grid", help="overview PNG of a few images per domain")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        params = params_from_args(args, "render_demo")
        start = time.perf_counter()
        summary = render_world(params["demo"], args.out, args.grid, args.workers, params["prompt"])
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")
    elapsed = time.perf_counter() - start
    total = sum(d["count"] for d in summary["domains"].values())
    log.info(
        "rendered %d images in %.1f s with %d workers into %s",
        total,
        elapsed,
        args.workers,
        args.out,
    )
    log.info("\n%s", class_frequency_table(summary))


if __name__ == "__main__":
    main()
