"""Model commands: train (registers a challenger), promote (the gate), predict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from offers.cli.common import (
    UserError,
    console,
    progress_printer,
)
from offers.settings import load_settings


def _train_config(config: Path | None):  # -> training.config.TrainConfig
    from training.config import TrainConfig

    if config is None:
        return TrainConfig()
    try:
        return TrainConfig.from_file(config)
    except (ValueError, TypeError) as exc:  # unknown key, bad value, JSON/TOML syntax
        raise UserError(
            f"--config {config}: {exc}; fix the file (knobs: training/config.py)"
        ) from exc


def train(
    data: Annotated[
        Path, typer.Option("--data", exists=True, file_okay=False, help="Contract tables folder.")
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", exists=True, dir_okay=False, help="Training config (.json/.toml)."
        ),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="MLflow experiment (default offer-ranking).")
    ] = None,
):  # -> training.train.TrainResult
    """Select settings on time-ordered folds, compare with baselines on the test slates, register
    the same settings refit on every labelled exposure as `challenger`."""
    from offers.tables import metrics_table
    from training.inputs import KEPT
    from training.train import train as train_job

    settings = load_settings()
    result = train_job(
        data,
        home=settings.home,
        erasures_dir=settings.erasures_dir,
        config=_train_config(config),
        experiment=experiment,
        on_step=progress_printer(),
    )
    _print_hygiene(result.hygiene)
    console.print(f"run [bold]{result.run_id}[/bold] (experiment {result.experiment})")
    windows = result.windows.as_dict()
    console.print(
        f"train {windows['train_start']} .. {windows['train_end']}, "
        f"validation .. {windows['valid_end']}, test .. {windows['test_end']}; "
        f"{result.best_iteration} rounds"
    )
    console.print(metrics_table(result.metrics, title="model vs baselines (test window)"))
    if result.gap_closed is not None:
        console.print(f"popularity-to-oracle ndcg_at_10 gap closed: {result.gap_closed:.1%}")
    if result.selection is not None and result.gate is not None:
        console.print(
            f"selected on {len(result.selection.folds)} time-ordered folds: "
            f"{result.selection.settings}, {result.selection.rounds} rounds; "
            f"the test rows are that selection fit before the test window"
        )
        console.print(result.gate.format())
        console.print(f"registered model refit on every labelled exposure: {result.refit_saw}")
    excluded = {reason: n for reason, n in result.exclusions.items() if reason != KEPT}
    console.print(
        f"exposures kept: {result.exclusions.get(KEPT, 0):,}; excluded by reason: {excluded}"
    )
    console.print(
        f"registered [bold]{result.model_uri}[/bold] with alias challenger "
        f"(promote with `offers promote`)"
    )
    return result


def _print_hygiene(hygiene) -> None:  # features.tracking.RegistryHygiene | None
    """Registry hygiene found before the run: dead runs closed, orphan versions (kept)."""
    for line in hygiene.lines() if hygiene else []:
        typer.echo(f"registry: {line}")


def promote(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Tables for the test window (default: the challenger's)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Config with promote_tolerance (.json/.toml).")
    ] = None,
):  # -> training.promote.PromoteResult
    """Move `champion` to the challenger only if it beats popularity on its test slates (paired
    bootstrap, the first promotion too) and does not trail the champion on a window neither
    model learned from.

    Exit code: 0 promoted, 1 kept, 2 nothing to promote.
    """
    from training.promote import promote as promote_job

    settings = load_settings()
    step = progress_printer()
    step("resolving the challenger and the champion")
    result = promote_job(
        home=settings.home,
        erasures_dir=settings.erasures_dir,
        data_dir=data,
        config=_train_config(config),
        on_step=step,
    )
    _print_hygiene(result.hygiene)
    typer.echo(result.format())
    if not result.promoted:
        raise typer.Exit(code=1)
    return result


def predict(
    data: Annotated[
        Path, typer.Option("--data", exists=True, file_okay=False, help="Contract tables folder.")
    ],
    exposures: Annotated[
        Path,
        typer.Option(
            "--exposures", exists=True, dir_okay=False, help="Rows: user_id, offer_id, shown_at."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output file (.parquet or .csv).")],
    model: Annotated[
        str | None,
        typer.Option("--model", help="models:/offer-ranker@alias or /version (default champion)."),
    ] = None,
):  # -> training.predict.PredictResult
    """Point-in-time scores for given rows; rows the policy refuses get a reason, no score."""
    from training.predict import predict as predict_job

    settings = load_settings()
    with console.status("scoring"):
        result = predict_job(
            data,
            exposures,
            out,
            home=settings.home,
            erasures_dir=settings.erasures_dir,
            model=model,
        )
    console.print(
        f"{result.n_scored:,} of {result.n_rows:,} rows scored with {result.model} -> {result.out}"
    )
    console.print(f"by reason: {result.reasons}")
    return result
