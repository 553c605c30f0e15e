"""Peak bytes of live tensors, counted op by op on any device (a helper of the benchmarks).

``LiveTensorBytes`` is a torch dispatch mode: every tensor an aten op returns adds its storage's
bytes, once, unless it aliases an input (a view or an in-place result); a storage leaves the
count when it is freed (checked whenever the count would pass the peak). The peak is taken after
each op, so it is the most memory the tensors of the code under the mode held at once: on a GPU that is what ``torch.cuda.max_memory_allocated``
reports, without the caching allocator's rounding (blocks of 512 bytes and up) and without the
scratch memory kernels allocate for themselves (cuBLAS / cuDNN workspaces). Tensors that existed
before the mode (parameters, inputs) are not counted. On a CPU it costs a little Python per op.
"""

from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveTensorBytes(TorchDispatchMode):
    """``with LiveTensorBytes() as m: ...``, then ``m.peak`` (bytes) and ``m.current``."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _drop_freed(self) -> None:
        freed = [key for key, (ref, _) in self._live.items() if ref.expired()]
        for key in freed:
            self.current -= self._live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {
            t.untyped_storage()._cdata
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and t.layout == torch.strided
        }
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in inputs:
                continue
            if key in self._live:
                ref, nbytes = self._live[key]
                if not ref.expired():
                    continue  # already counted
                self.current -= nbytes  # a freed storage's address, reused
            self._live[key] = (StorageWeakRef(storage), storage.nbytes())
            self.current += storage.nbytes()
        # Freed storages only lower the count: it needs settling only when it passes the peak.
        if self.current > self.peak:
            self._drop_freed()
            self.peak = max(self.peak, self.current)
        return out

    def __exit__(self, *exc):
        self._drop_freed()
        return super().__exit__(*exc)


def parameter_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers of ``modules`` (shared tensors counted once)."""
    seen: dict[int, int] = {}
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            storage = t.untyped_storage()
            seen[storage._cdata] = storage.nbytes()
    return sum(seen.values())
