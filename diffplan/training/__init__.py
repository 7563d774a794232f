"""Training: the shared LightningModule, data module, losses, metrics and the per-entry run."""
