"""Shared test set-up: W&B never touches a network; small thread count keeps the 2-core machine usable."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import torch  # noqa: E402

torch.set_num_threads(1)
