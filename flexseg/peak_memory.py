"""A job's peak memory, as one line at the end of its log.

Snakemake's ``benchmark:`` files sample a job's memory (every 0.5 s for 15 s, then every 30 s,
so a short spike of a long job is missed) and know nothing of GPUs. The heavy commands
(training, evaluation, a generation shard, the quality score, the random weights) therefore end
by printing

    peak memory: RSS <rss> GiB[; GPU <allocated> GiB (reserved <reserved> GiB)]

with the kernel's high-water mark of the process's resident memory (``getrusage`` ``ru_maxrss``:
the process itself, not its worker processes) and, when the process used CUDA, the peaks of
``torch.cuda.max_memory_allocated`` (tensors) and ``max_memory_reserved`` (what the caching
allocator held, closer to what nvidia-smi shows) over its devices. ``benchmarks/paper_scale.py``
reads the line back with ``read_peak``. CUDA is never initialised here.
"""

from __future__ import annotations

import re
import resource
import sys
from dataclasses import dataclass

PREFIX = "peak memory:"
_LINE = re.compile(
    re.escape(PREFIX) + r" RSS ([0-9.]+) GiB(?:; GPU ([0-9.]+) GiB \(reserved ([0-9.]+) GiB\))?"
)
GIB = 2**30


@dataclass(frozen=True)
class PeakMemory:
    rss_gib: float
    gpu_gib: float | None = None  # max_memory_allocated; None when CUDA was not used
    gpu_reserved_gib: float | None = None


def measure() -> PeakMemory:
    """This process's peaks so far."""
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / GIB
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return PeakMemory(rss)
    devices = range(torch.cuda.device_count())
    allocated = max(torch.cuda.max_memory_allocated(d) for d in devices)
    reserved = max(torch.cuda.max_memory_reserved(d) for d in devices)
    return PeakMemory(rss, allocated / GIB, reserved / GIB)


def format_line(peak: PeakMemory) -> str:
    line = f"{PREFIX} RSS {peak.rss_gib:.2f} GiB"
    if peak.gpu_gib is not None:
        line += f"; GPU {peak.gpu_gib:.2f} GiB (reserved {peak.gpu_reserved_gib:.2f} GiB)"
    return line


def report_peak_memory() -> PeakMemory:
    """Print this process's peak-memory line (stdout, flushed) and return the figures."""
    peak = measure()
    print(format_line(peak), flush=True)
    return peak


def read_peak(text: str) -> PeakMemory | None:
    """The largest figures among the peak-memory lines of ``text`` (a DDP job prints one per
    process); None without any."""
    found = [
        PeakMemory(
            float(m.group(1)),
            None if m.group(2) is None else float(m.group(2)),
            None if m.group(3) is None else float(m.group(3)),
        )
        for m in _LINE.finditer(text)
    ]
    if not found:
        return None
    gpu = [p.gpu_gib for p in found if p.gpu_gib is not None]
    reserved = [p.gpu_reserved_gib for p in found if p.gpu_reserved_gib is not None]
    return PeakMemory(
        max(p.rss_gib for p in found),
        max(gpu) if gpu else None,
        max(reserved) if reserved else None,
    )
