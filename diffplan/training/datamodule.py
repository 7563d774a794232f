"""The DataModule over the data-set loader: grid or graph splits, batched as dicts of tensors."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from diffplan.envs import load_split
from diffplan.errors import TrainingError
from diffplan.scoring.batching import make_batch
from diffplan.training.sampling import TrainBatchSampler, score_shard


class PlannerDataModule(pl.LightningDataModule):
    """Loads the train/valid/test splits of one data-set file (recomputed optimal-action sets).

    ``batch_size`` is the global batch: under DDP each of the ``world_size`` processes takes
    ``batch_size / world_size`` maps of every global batch (:mod:`diffplan.training.sampling`); the order
    is drawn from ``seed`` and the epoch, the same on every process and for any number of processes.
    Validation and test maps are split over the processes without repeats. ``limit`` caps every split
    (smoke tests).

    Its ``state_dict`` (saved in every run checkpoint) records the split sizes, the world size and the
    per-device batch of the run, so the release metadata can be built from the checkpoint files alone.
    """

    def __init__(
        self,
        path: str | Path,
        batch_size: int = 32,
        seed: int = 42,
        limit: int | None = None,
        trust_pickle: bool = False,
    ) -> None:
        super().__init__()
        self.path, self.batch_size, self.seed, self.limit = Path(path), batch_size, seed, limit
        self.trust_pickle = trust_pickle
        self.splits: dict = {}

    def _shard(self) -> tuple[int, int]:
        """(rank, world size) of this process; (0, 1) outside a trainer."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _size(self, split: str) -> int:
        total = len(self.splits[split])
        return total if self.limit is None else min(self.limit, total)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",)}.get(
            stage or "", ("train", "valid", "test")
        )
        for split in wanted:
            if split not in self.splits:
                self.splits[split] = load_split(self.path, split, trust_pickle=self.trust_pickle)
        _, world = self._shard()
        for split in wanted:
            if split != "train" and self._size(split) < world:
                raise TrainingError(
                    f"the {split} split of {self.path} has {self._size(split)} maps to score, fewer than "
                    f"the {world} processes; use fewer devices or more maps."
                )

    @property
    def per_device_batch(self) -> int:
        return self.batch_size // self._shard()[1]

    def _loader(self, split: str, batches) -> DataLoader:
        data = self.splits[split]
        return DataLoader(
            range(self._size(split)), batch_sampler=batches, collate_fn=partial(make_batch, data)
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self._shard()
        batches = TrainBatchSampler(
            self._size("train"), self.batch_size, seed=self.seed, rank=rank, world_size=world
        )
        return self._loader("train", batches)

    def _score_loader(self, split: str) -> DataLoader:
        rank, world = self._shard()
        batches = score_shard(self._size(split), self.per_device_batch, rank=rank, world_size=world)
        return self._loader(split, batches)

    def val_dataloader(self) -> DataLoader:
        return self._score_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._score_loader("test")

    def state_dict(self) -> dict[str, Any]:
        sizes = {f"{split}_size": self._size(split) for split in ("train", "valid") if split in self.splits}
        return {
            **sizes,
            "world_size": self._shard()[1],
            "per_device_batch": self.per_device_batch,
            "batch_size": self.batch_size,
            "limit": self.limit,
            "seed": self.seed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the data order follows from the seed and the epoch (a resumed run may run
        on another number of processes)."""
