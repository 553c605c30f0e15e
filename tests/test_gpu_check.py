"""The GPU check in its CPU form (tiny sizes): every figure printed, finite, goals beside them."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PRECISIONS = ("fp32", "bf16", "fp16")
MODES = ("loop_fp32", "batched_fp32", "batched_bf16")
EXPECTED = [
    *(
        f"train_{m}_{p}_{k}"
        for m in ("daformer_mitb5", "hrda_mitb5")
        for p in PRECISIONS
        for k in ("it_per_s", "peak_gib", "loss", "loss_finite")
    ),
    *(f"train_{m}_bf16_over_fp32_speed" for m in ("daformer_mitb5", "hrda_mitb5")),
    "gen_tiles",
    "gen_steps",
    "gen_tflop_per_guided_call",
    "gen_pflop_per_image_counted",
    "gen_pflop_per_image_20steps",
    "bf16_peak_tflops",
    *(
        f"gen_{mode}_{k}"
        for mode in MODES
        for k in ("s_per_image", "s_per_tiled_step", "tiled_tflops", "peak_gib")
    ),
    "gen_speedup_bf16_vs_loop_per_step",
    "gen_bf16_tiled_fraction_of_peak",
    "gen_image_diff_bf16_vs_fp32",
    "gen_image_diff_batched_vs_loop_fp32",
    "eval_hrda_mitb5_s_per_image",
    "eval_hrda_mitb5_peak_gib",
    "eval_hrda_mitb5_windows",
    "total_seconds",
]
GOALS = {
    "train_daformer_mitb5_bf16_over_fp32_speed": ">= 1.5",
    "train_hrda_mitb5_bf16_over_fp32_speed": ">= 1.5",
    "gen_speedup_bf16_vs_loop_per_step": ">= 5",
    "gen_bf16_tiled_fraction_of_peak": ">= 0.4",
}


def test_cpu_form_prints_every_figure_finite() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures, lines = {}, {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(\w+)=(\S+)", line)
        if m:
            assert m.group(1) not in figures, f"{m.group(1)} printed twice"
            figures[m.group(1)] = float(m.group(2))
            lines[m.group(1)] = line
        else:
            assert line.startswith("# "), line  # everything else is a note
    missing = [k for k in EXPECTED if k not in figures]
    assert not missing, f"not printed: {missing}\n{proc.stdout}"
    bad = {k: v for k, v in figures.items() if not math.isfinite(v)}
    assert not bad, bad
    for key, goal in GOALS.items():
        assert f"goal {goal}: " in lines[key], lines[key]
    assert all(
        figures[f"train_{m}_fp32_loss_finite"] == 1 for m in ("daformer_mitb5", "hrda_mitb5")
    )
    assert figures["gen_tiles"] == 9 and figures["eval_hrda_mitb5_windows"] == 3
    # the same images batched or one tile per call; bf16 close to fp32 but not identical
    assert figures["gen_image_diff_batched_vs_loop_fp32"] < 0.5
    assert 0 < figures["gen_image_diff_bf16_vs_fp32"] < 5
    for mode in MODES:
        assert figures[f"gen_{mode}_peak_gib"] > 0 and figures[f"gen_{mode}_tiled_tflops"] > 0
