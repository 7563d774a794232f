"""Rewrite format-1 release checkpoints as format 2 (canonical complete-basis coefficients).

Why: see ``diffplan.release.checkpoint``. A format-1 file still loads, but its conversion rebuilds the old
SVD basis on the reading machine, and LAPACK may choose that basis differently on another CPU. Upgrading
on the machine that trained the model fixes the filters once: the rewritten file holds canonical
coefficients and plans the same everywhere. The metadata's checksum and size follow the new file; every
other figure stays, as the filters are the same to float precision (``diffplan validate`` re-scores).

    python -m diffplan.release.upgrade pretrained_models/grid/SymVIN_maze15.ckpt ...
"""

from __future__ import annotations

import sys
from pathlib import Path

from diffplan.release.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    checkpoint_file_stats,
    model_from_record,
    read_release_checkpoint,
    save_release_checkpoint,
)
from diffplan.release.metadata import read_info, write_info


def upgrade_release_checkpoint(checkpoint: str | Path) -> bool:
    """Rewrite ``checkpoint`` (and its ``<name>_info.json`` beside it, if any) in the current format.

    Returns False, touching nothing, when the file is already current.
    """
    checkpoint = Path(checkpoint)
    record = read_release_checkpoint(checkpoint)
    if record.get("format_version", 1) >= CHECKPOINT_FORMAT_VERSION:
        return False
    model = model_from_record(record, checkpoint)
    save_release_checkpoint(
        checkpoint,
        model,
        name=record["name"],
        algorithm=record["algorithm"],
        model_config=record["model_config"],
        extra=record["extra"],
    )
    info_path = checkpoint.with_name(f"{checkpoint.stem}_info.json")
    if info_path.is_file():
        info = read_info(info_path)
        info["model_stats"].update(checkpoint_file_stats(checkpoint))
        write_info(info_path, info)
    return True


def main(paths: list[str]) -> int:
    for path in paths:
        changed = upgrade_release_checkpoint(path)
        print(f"{path}: {'upgraded to' if changed else 'already'} format {CHECKPOINT_FORMAT_VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
