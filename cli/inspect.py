"""`diffplan inspect`: one release model in depth, and optionally a drawn test maze."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from diffplan.release.checkpoint import CHECKPOINT_FORMAT_VERSION
from diffplan.release.inspection import Inspection, inspect_model, plot_test_map
from diffplan.release.manifest import load_manifest
from diffplan_cli._common import (
    DEFAULT_MANIFEST,
    DEFAULT_RELEASE_ROOT,
    DEFAULT_RUN_ROOT,
    JsonOpt,
    JsonOutOpt,
    ReleaseRootOpt,
    RunRootOpt,
    check_json_out,
    console,
    emit_json,
    percent,
)


def _format_note(version: int) -> str:
    if version >= CHECKPOINT_FORMAT_VERSION:
        return str(version)
    upgrade = "diffplan upgrade CHECKPOINT"
    return f"{version} (older: `{upgrade}` rewrites it as format {CHECKPOINT_FORMAT_VERSION})"


def _key_values(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


def _members(result: Inspection) -> list[dict]:
    """An Ensemble's members as its metadata records them (empty for any other model)."""
    members = ((result.info or {}).get("ensemble") or {}).get("members")
    return [m for m in members if isinstance(m, dict)] if isinstance(members, list) else []


def _beats(result: Inspection) -> str:
    ensemble = (result.info or {}).get("ensemble") or {}
    beats = ensemble.get("beats_best_member") or {}
    verdicts = ", ".join(f"{split} {'yes' if value else 'no'}" for split, value in beats.items())
    return f"{verdicts or '-'} (best member by validation accuracy: {ensemble.get('best_member', '-')})"


def _ensemble_rows(result: Inspection, members: list[dict]) -> list[tuple[str, str]]:
    if not members:
        return []
    listed = ", ".join(f"{m.get('name')} ({str(m.get('checkpoint_sha256'))[:12]}...)" for m in members)
    return [
        ("members", listed),
        ("budget", f"k={result.model_config.get('k')} for every member"),
        ("beats best member", _beats(result)),
    ]


def _render(result: Inspection) -> None:
    members = _members(result)
    match = {
        True: "[green]matches the metadata[/]",
        False: "[red]differs from the metadata[/]",
        None: "[yellow]no metadata to compare[/]",
    }[result.sha256_matches_metadata]
    console.print(
        _key_values(
            f"{result.name}",
            [
                ("algorithm", result.algorithm),
                ("task", str(result.task)),
                ("checkpoint", str(result.checkpoint)),
                ("size", f"{result.size_mb:.3f} MB"),
                ("sha256", f"{result.sha256} ({match})"),
                ("format", _format_note(result.format_version)),
                ("flags", ", ".join(f"{k}={v}" for k, v in sorted(result.extra.items())) or "-"),
                ("data", f"{result.data_path or '-'} (fingerprint {result.data_fingerprint or '-'})"),
                *_ensemble_rows(result, members),
            ],
        )
    )
    info = result.info or {}
    if result.info_problem:
        console.print(f"[yellow]metadata:[/] {result.info_problem}", highlight=False, soft_wrap=True)
    if info:
        perf, stats, run = (
            info.get("performance", {}),
            info.get("model_stats", {}),
            info.get("training_run", {}),
        )
        target = info.get("target", {})
        rows = [
            (
                "test accuracy",
                f"{percent(perf.get('test_accuracy'))} (target > {percent(target.get('minimum'))})",
            ),
            ("test success", percent(perf.get("test_success"))),
            ("test optimality", percent(perf.get("test_optimality"))),
            ("validation accuracy", percent(perf.get("validation_accuracy"))),
            ("final loss", str(perf.get("final_loss"))),
            ("epochs run / best", f"{run.get('epochs_run', '-')} / {run.get('best_epoch', '-')}"),
            ("training time", f"{stats.get('training_time_hours', 0):.3f} h"),
            ("created", str(info.get("created_date", "-"))),
            ("hardware", ", ".join(f"{k}={v}" for k, v in sorted(info.get("hardware", {}).items())) or "-"),
            (
                "libraries",
                ", ".join(f"{k} {v}" for k, v in sorted(info.get("library_versions", {}).items())) or "-",
            ),
            ("notes", str(info.get("notes", ""))),
        ]
        if perf.get("test_angle_error_degrees") is not None:
            rows.insert(3, ("test angle error", f"{perf['test_angle_error_degrees']:.2f} degrees"))
        console.print(_key_values("Metadata", rows))
    params = Table(title="Parameters", title_justify="left")
    params.add_column("module")
    params.add_column("parameters", justify="right")
    names = {f"members.{i}": m.get("name") for i, m in enumerate(members)}
    for module, count in result.parameters.items():
        params.add_row(f"{module} ({names[module]})" if module in names else module, f"{count:,}")
    params.add_row("[bold]total[/]", f"[bold]{result.total_parameters:,}[/]")
    console.print(params)
    if result.config is not None:
        console.print(f"[bold]Resolved config[/] ({result.config_path})")
        console.print(yaml.safe_dump(result.config, sort_keys=False).rstrip(), highlight=False, markup=False)
    curve = result.curve
    if curve is None:
        console.print("Training curve: no runs/<name>/logs/metrics.csv here.")
    else:
        console.print(
            _key_values(
                f"Training curve ({curve.path})",
                [
                    ("epochs logged", str(curve.epochs)),
                    (
                        "best epoch",
                        f"{curve.best_epoch} (validation accuracy {percent(curve.best_val_accuracy)})",
                    ),
                    (
                        "final training loss",
                        "-" if curve.final_train_loss is None else f"{curve.final_train_loss:.4f}",
                    ),
                ],
            )
        )


def inspect(
    model: Annotated[str, typer.Argument(help="Release model name (e.g. VIN_maze15) or checkpoint path.")],
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", "-m", help=f"Release manifest (default {DEFAULT_MANIFEST} if present)."),
    ] = None,
    release_root: ReleaseRootOpt = DEFAULT_RELEASE_ROOT,
    run_root: RunRootOpt = DEFAULT_RUN_ROOT,
    json_output: JsonOpt = False,
    json_out: JsonOutOpt = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Draw one test maze with values and policy (PNG).")
    ] = None,
    index: Annotated[int, typer.Option("--index", help="Which test maze to draw.")] = 0,
    data: Annotated[Path | None, typer.Option("--data", help="Draw from this data set's test split.")] = None,
) -> None:
    """Show a release model's metadata, config, parameters, file and training curve (weights-only read)."""
    check_json_out(json_out)
    manifest_path = manifest if manifest is not None else DEFAULT_MANIFEST
    spec = load_manifest(manifest_path) if manifest is not None or DEFAULT_MANIFEST.is_file() else None
    result = inspect_model(model, manifest=spec, release_root=release_root, run_root=run_root)
    scores = None
    if plot is not None:
        scores = plot_test_map(result, plot, index, data=data, manifest_path=manifest_path if spec else None)
    if json_output or json_out is not None:
        payload = result.to_dict()
        if plot is not None:
            payload["plot"] = {"path": str(plot), "index": index, "scores": scores}
        emit_json(payload, json_output, json_out)
    if json_output:
        return
    _render(result)
    if plot is not None:
        console.print(
            f"Drew test map {index} to {plot}: accuracy {percent(scores['accuracy'])}, "
            f"success {percent(scores['success'])}.",
            highlight=False,
        )
