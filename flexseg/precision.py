"""TF32 for float32 work on CUDA: one switch, set explicitly by every GPU stage.

On Ampere and later GPUs, TF32 runs float32 matrix products and convolutions on tensor cores
with a 10-bit mantissa (relative error about 1e-3 per product, accumulation in float32): several
times the float32 rate, and different numbers. torch's own defaults differ between the two
(matmul off, cuDNN convolutions on), so a run that sets nothing mixes both silently. Training,
generation and evaluation each have a ``tf32`` key (``training.tf32``,
``generation.sampler.tf32``, ``evaluation.tf32``; default false: exact float32, as the anchors
ran on GPUs without TF32) and call ``apply_tf32`` with it before building their models. Without
CUDA the flags change nothing; bf16/fp16 autocast regions do not use them.
"""

from __future__ import annotations

import torch


def apply_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 in CUDA matrix products and cuDNN convolutions, both at once."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
