"""One process-pool helper for `--jobs N` (validation and training): spawned workers, results in input
order, a dead worker turned into one clear error.

Spawn, not fork: forking after torch has started its thread pools is unsafe.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def run_in_processes(
    work: Callable[..., Result],
    items: Sequence[Item],
    *,
    jobs: int,
    arguments: Callable[[int, Item], tuple] = lambda index, item: (item,),
    order: Sequence[int] | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    on_done: Callable[[int, Result], None] | None = None,
    on_broken: Callable[[int, BaseException], BaseException] | None = None,
) -> list[Result]:
    """``[work(*arguments(i, items[i])) for i in range(len(items))]`` in ``jobs`` spawned processes.

    Args:
        work: a module-level function (it is pickled into the workers).
        arguments: the positional arguments of item ``i``.
        order: the order in which items are submitted (e.g. the longest first); default input order.
        initializer, initargs: run once in each worker.
        on_done: called in this process with (index, result) as each item finishes.
        on_broken: turns a worker's death while running item ``i`` into the exception to raise.

    Returns the results in input order, whatever order they finished in.
    """
    context = multiprocessing.get_context("spawn")
    results: dict[int, Any] = {}
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=initializer, initargs=initargs
    ) as pool:
        submit_order = range(len(items)) if order is None else order
        futures = {pool.submit(work, *arguments(i, items[i])): i for i in submit_order}
        try:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    results[index] = future.result()
                except BrokenProcessPool as err:
                    if on_broken is None:
                        raise
                    raise on_broken(index, err) from err
                if on_done is not None:
                    on_done(index, results[index])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [results[i] for i in range(len(items))]
