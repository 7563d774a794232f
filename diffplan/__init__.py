"""diffplan: pre-trained differentiable planners (Value Iteration Network family) for maze navigation."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diffplan")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "1.0.0"
