"""Lightning callbacks, one per file."""

from diffplan.training.callbacks.epoch_report import EpochReport, EpochReportCallback
from diffplan.training.callbacks.nan_guard import NanGuard
from diffplan.training.callbacks.wall_clock import WallClock

__all__ = ["EpochReport", "EpochReportCallback", "NanGuard", "WallClock"]
