"""diffplan: pre-trained differentiable planners (Value Iteration Network family) for maze navigation."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diffplan")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "1.0.0"

__all__ = ["__version__", "create_model", "list_models", "load_model", "plan_maze"]


def __getattr__(name: str):
    # Lazy: `import diffplan` stays light; torch and escnn load on first use.
    if name == "load_model":
        from diffplan.release.checkpoint import load_model

        return load_model
    if name == "plan_maze":
        from diffplan.planning import plan_maze

        return plan_maze
    if name in ("create_model", "list_models"):
        from diffplan import models

        return getattr(models, name)
    raise AttributeError(f"module 'diffplan' has no attribute {name!r}")
