"""Which maps each process trains and scores on, for one process or several (DDP).

Training: ``batch_size`` is the *global* batch. Each epoch the run draws one permutation of the training
maps from its seed and the epoch number, cuts it into global batches, and process ``rank`` of
``world_size`` takes maps ``rank, rank + world_size, ...`` of each. The global batches, and so the data
order, are the same whatever the number of processes; on one process they are exactly the batches of a
``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed))`` (the order runs had before
DDP support), and a resumed run continues with the permutation of its epoch rather than starting over.

Scoring: each process scores maps ``rank, rank + world_size, ...`` once, no padding, so every validation
and test map counts exactly once (``DistributedSampler`` would repeat maps to even the shares out).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def epoch_permutation(size: int, seed: int, epoch: int, batch_size: int) -> list[int]:
    """The training order of epoch ``epoch`` (counted from 0): the permutation that a shuffling
    ``DataLoader(batch_size=batch_size)`` with a generator seeded ``seed`` gives under Lightning.

    Per epoch that loader draws its base seed, then ``RandomSampler``'s permutation, then the sampler's
    empty tail permutation, which is drawn only when the sampler runs dry: when a last, short batch has
    to be made (Lightning stops after the last full batch of an evenly divided epoch).
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.arange(size)
    for _ in range(epoch + 1):
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # the DataLoader's base seed
        order = torch.randperm(size, generator=generator)
        if size % batch_size:
            torch.randperm(size, generator=generator)  # RandomSampler's tail of size % size == 0 maps
    return order.tolist()


class EpochOrder(Sampler[int]):
    """The maps of one epoch in training order (:func:`epoch_permutation`); Lightning calls ``set_epoch``
    before each training epoch (on a batch sampler's ``sampler``), also after a resume."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_permutation(self.size, self.seed, self.epoch, self.batch_size))

    def __len__(self) -> int:
        return self.size


class TrainBatchSampler(Sampler[list[int]]):
    """This process's share of each global batch of an epoch (see the module docstring).

    A last global batch with fewer maps than processes is dropped on every process (the processes must
    take the same number of steps).
    """

    def __init__(self, size: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not split over {world_size} processes")
        self.sampler = EpochOrder(size, batch_size, seed)
        self.size, self.batch_size = size, batch_size
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        for start in range(0, self.size, self.batch_size):
            batch = order[start : start + self.batch_size]
            if len(batch) >= self.world_size:
                yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full + (rest >= self.world_size and rest > 0)


def score_shard(size: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Batches (of at most ``batch_size`` maps) of maps ``rank, rank + world_size, ...`` below ``size``:
    over all ranks, every map exactly once. Ranks may get one batch more or less than others."""
    shard = list(range(rank, size, world_size))
    return [shard[start : start + batch_size] for start in range(0, len(shard), batch_size)]
