"""Time generating and loading the three release data sets (14000 15x15 mazes each).

    python -m benchmarks.bench_data [--repeats 3] [--folder /tmp/bench]

Prints a rich table: median seconds to generate each file, median seconds to load all three of its
splits (labels recomputed), and its size on disk, beside the targets. Exit code 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from diffplan.envs import generate_dataset, load_split

DATASETS = {  # name -> (file name, generate_dataset settings), as in manifests/release_v1.yaml
    "grid": ("m15_4abs-cc_10k.npz", {"kind": "grid"}),
    "graph": ("m15_graph-cc_10k.pth", {"kind": "graph", "has_obstacle": True}),
    "graph_continuous": ("m15_graph-cc_10k_cont_act.pth", {"kind": "graph", "cont_action": True}),
}
TARGETS = {"grid": 10.0, "graph": 30.0}  # generation seconds, by kind
LOAD_TARGET_S = 3.0
SIZE_TARGET_MB = 50.0


def _median_seconds(repeats: int, run, *args, **kwargs) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _load_all(path: Path) -> None:
    for split in ("train", "valid", "test"):
        load_split(path, split)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=3, help="Runs per measurement; the median is reported."
    )
    parser.add_argument(
        "--folder", type=Path, default=None, help="Where to write the files (default: a temp folder)."
    )
    args = parser.parse_args()
    console = Console()

    table = Table(title=f"Data sets: 10000/2000/2000 mazes of 15x15, median of {args.repeats} runs")
    for column in (
        "Data set",
        "Generate (s)",
        "Target",
        "Load 3 splits (s)",
        "Target",
        "Size (MB)",
        "Target",
        "OK",
    ):
        table.add_column(column, justify="left" if column == "Data set" else "right")
    all_ok = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        for name, (file_name, settings) in DATASETS.items():
            path = folder / file_name
            with console.status(f"{name}: generating"):
                generate_s = _median_seconds(
                    args.repeats, generate_dataset, output=path, force=True, **settings
                )
            with console.status(f"{name}: loading"):
                load_s = _median_seconds(args.repeats, _load_all, path)
            size_mb = path.stat().st_size / 1e6
            target = TARGETS[settings["kind"]]
            ok = generate_s <= target and load_s <= LOAD_TARGET_S and size_mb <= SIZE_TARGET_MB
            all_ok &= ok
            table.add_row(
                name,
                f"{generate_s:.2f}",
                f"<= {target:.0f}",
                f"{load_s:.2f}",
                f"<= {LOAD_TARGET_S:.0f}",
                f"{size_mb:.1f}",
                f"<= {SIZE_TARGET_MB:.0f}",
                "[green]yes[/]" if ok else "[red]NO[/]",
            )
    console.print(table)
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
