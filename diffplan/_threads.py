"""Run a block with a given number of torch CPU threads.

On a small, shared machine one thread is both the fastest and the steadiest choice for single-maze
inference: with two threads, OpenMP workers spin-wait whenever another process holds the second core,
which made ``validate``'s latency figures 10x slower and noisier (VIN_maze15 67 ms vs 5.6 ms per maze).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Set ``torch.set_num_threads(threads)`` inside the block (``None``: leave as is); yields the count."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
