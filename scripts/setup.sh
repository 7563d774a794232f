#!/usr/bin/env bash
# One-step set-up on a fresh machine: system packages, then PyTorch (CPU wheel) first, then diffplan.
#   bash scripts/setup.sh        # the library and the `diffplan` command
#   bash scripts/setup.sh dev    # plus the test tools (pytest, ruff)
set -euo pipefail
cd "$(dirname "$0")/.."
# escnn's dependency py3nj compiles Fortran.
if ! command -v gfortran > /dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q && $SUDO apt-get install -y -q gfortran
fi
# Torch first and pinned: an unpinned torch pulls a CUDA build of several GB.
python -m pip install -q "torch==2.13.0"
if [ "${1:-}" = "dev" ]; then
    python -m pip install -q -e ".[dev]"
else
    python -m pip install -q -e .
fi
