"""The DataModule over the data-set loader: grid or graph splits, batched as dicts of tensors."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from diffplan.envs import load_split
from diffplan.scoring.batching import make_batch


class PlannerDataModule(pl.LightningDataModule):
    """Loads the train/valid/test splits of one data-set file (recomputed optimal-action sets).

    Shuffling uses a generator seeded with ``seed``, so a run's batch order is reproducible.
    ``limit`` caps every split (for smoke tests).
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

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",)}.get(
            stage or "", ("train", "valid", "test")
        )
        for split in wanted:
            if split not in self.splits:
                self.splits[split] = load_split(self.path, split, trust_pickle=self.trust_pickle)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.splits[split]
        size = len(data) if self.limit is None else min(self.limit, len(data))
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            range(size),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=lambda indices: make_batch(data, indices),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
