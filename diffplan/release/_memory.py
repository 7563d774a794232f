"""Peak tensor memory of a block of torch code, on any device (used by ``validate``'s inference check)."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class TensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated (and still alive) during a block; inputs and weights excluded.

    Works on any device, unlike ``torch.cuda.max_memory_allocated``: each op's new output storages are
    counted until the last tensor viewing them is freed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, tuple[int, int]] = {}
        self._external: set[int] = set()

    def _release(self, key: int) -> None:
        count, size = self._refs[key]
        if count == 1:
            del self._refs[key]
            self.live -= size
        else:
            self._refs[key] = (count - 1, size)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for tensor in tree_leaves((args, kwargs)):
            if isinstance(tensor, torch.Tensor):
                key = tensor.untyped_storage().data_ptr()
                if key not in self._refs:
                    self._external.add(key)
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and not tensor.is_meta:
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key == 0 or key in self._external:
                    continue
                count, size = self._refs.get(key, (0, storage.nbytes()))
                if count == 0:
                    self.live += size
                    self.peak = max(self.peak, self.live)
                self._refs[key] = (count + 1, size)
                weakref.finalize(tensor, self._release, key)
        return out
