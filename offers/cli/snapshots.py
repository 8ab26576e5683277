"""`offers features ...`: build a consent-filtered snapshot, list and show snapshots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from offers.cli.common import (
    QUARANTINE_HELP,
    SPARK_MASTER_HELP,
    UserError,
    console,
    parse_instant,
)
from offers.settings import load_settings


def features_build(
    data: Path = typer.Option(..., help="Folder with the contract tables."),
    as_of: str | None = typer.Option(None, help="Cutoff (ISO 8601, naive = UTC); default now."),
    half_life_days: float = typer.Option(30.0, help="Half-life of the decayed spend, days."),
    engine: str = typer.Option("duckdb", help="duckdb (default) or spark."),
    spark_master: Annotated[
        str | None, typer.Option(help=SPARK_MASTER_HELP, show_default="local[2]")
    ] = None,
    quarantine: Annotated[
        Path | None, typer.Option("--quarantine", metavar="QDIR", help=QUARANTINE_HELP)
    ] = None,
) -> dict:
    """Build a consent-filtered snapshot as of one cutoff and publish it atomically.

    The inputs pass the data contract first (as `offers validate`); exit 2, nothing published,
    on any bad row (or, with --quarantine, on a file unusable as a whole) and when no
    transaction is usable.
    """
    from features.job import build_snapshot
    from features.snapshot import NothingUsableError
    from features.validate import ContractError

    settings = load_settings()
    if engine == "spark":
        from features.spark import spark_session

        spark_session(spark_master)  # the session the job's backend then runs on
    try:
        manifest = build_snapshot(
            data,
            settings.features_dir,
            as_of=parse_instant(as_of, "--as-of"),
            erasures_dir=settings.erasures_dir,
            half_life_days=half_life_days,
            engine=engine,
            quarantine_dir=quarantine,
            on_note=typer.echo,
        )
    except ContractError as exc:
        typer.echo(f"features build refused: {_contract_failure(exc)}", err=True)
        raise typer.Exit(code=2) from exc
    except NothingUsableError as exc:
        typer.echo(f"features build refused: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    _print_build(manifest)
    return manifest


def _contract_failure(exc) -> str:  # exc: features.validate.ContractError
    """One line when whole files or columns are unusable; else the report naming the rows."""
    report = exc.report
    if len(report.file_problems) == len(report.summaries):
        found = "; ".join(v.format() for s in report.summaries for v in s.examples)
        return f"{found}; nothing published"
    return f"the inputs break the data contract; nothing published\n{exc}"


def _print_build(manifest: dict) -> None:
    console.print(
        f"published snapshot [bold]{manifest['snapshot_id']}[/bold] (cutoff {manifest['cutoff']})"
    )
    table = Table("rule", "transactions excluded")
    for rule, n in manifest["exclusions_by_rule"].items():
        table.add_row(rule, f"{n:,}")
    table.add_row(
        "[bold]used[/bold]",
        f"{manifest['transactions_used']:,} of {manifest['transactions_read']:,}",
    )
    console.print(table)
    console.print({k: f"{v:,}" for k, v in manifest["row_counts"].items()})
    check = manifest["input_check"]
    if check["mode"] == "quarantine":
        rejected = {t: c["rejected"] for t, c in check["tables"].items()}
        console.print(f"quarantined rows per table (in {check['quarantine_dir']}): {rejected}")


def features_publish_online(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            envvar="OFFERS_ONLINE_STORE",
            help="The Redis to write to: redis://HOST:PORT/DB (or OFFERS_ONLINE_STORE).",
        ),
    ],
    prefix: Annotated[
        str, typer.Option(envvar="OFFERS_ONLINE_PREFIX", help="Key prefix in the store.")
    ] = "offers",
    grace_s: Annotated[
        float,
        typer.Option(min=0, help="Seconds the old snapshot's keys stay after the switch."),
    ] = 5.0,
) -> dict:
    """Materialise the published snapshot into Redis and switch `offers serve --online` to it.

    Per user one value with all of the user's feature rows; the switch is one SET of the
    pointer; the previous snapshot's keys are deleted after --grace-s seconds. The store is
    recorded under OFFERS_HOME, so `offers erase` reaches it.
    """
    import redis

    from features.online.publish import OnlinePublishError, publish_online
    from features.online.stores import OnlineStoreError
    from offers.cli.common import progress_printer

    home = load_settings().home
    try:
        report = publish_online(to, home, prefix, grace_s, on_step=progress_printer())
    except (OnlinePublishError, OnlineStoreError) as exc:
        raise UserError(str(exc)) from exc
    except redis.RedisError as exc:
        raise UserError(f"online store {to.split('@')[-1]}: {exc}") from exc
    console.print(
        f"published snapshot [bold]{report['snapshot_id']}[/bold] to {report['store']}: "
        f"{report['users_written']:,} users under {report['namespace']}"
    )
    if report["old_namespaces_removed"]:
        console.print(
            {k: f"{v:,} keys removed" for k, v in report["old_namespaces_removed"].items()}
        )
    return report


def features_list() -> list[dict]:
    """Snapshots under OFFERS_HOME, the published one marked."""
    from features.snapshot import CURRENT, list_snapshots
    from offers.tables import key_table

    settings = load_settings()
    snapshots = list_snapshots(settings.features_dir)
    pointer = settings.features_dir / CURRENT
    current = pointer.read_text().strip() if pointer.exists() else None
    table = key_table("snapshot (* published)", "cutoff", "built (UTC)", "users", "policy_version")
    for m in snapshots:
        mark = "*" if m["snapshot_id"] == current else " "
        table.add_row(
            f"{mark} {m['snapshot_id']}",
            _short_instant(m["cutoff"]),
            _short_instant(m["built_at"]),
            str(m["row_counts"]["user"]),
            m["policy_version"],
        )
    console.print(table if snapshots else f"no snapshots in {settings.features_dir}")
    return snapshots


def _short_instant(text: str) -> str:
    """`2025-12-01` for a UTC midnight, else `2025-12-01 04:33` (UTC): narrow table cells."""
    stamp = pd.Timestamp(text)
    stamp = stamp.tz_convert("UTC") if stamp.tzinfo else stamp
    return f"{stamp:%Y-%m-%d}" if stamp == stamp.normalize() else f"{stamp:%Y-%m-%d %H:%M}"


def features_show(
    snapshot_id: str = typer.Argument(None, help="Default: the published one."),
) -> dict:
    """The manifest of one snapshot: cutoff, digests, exclusions by rule, features."""
    from features.snapshot import list_snapshots, read_manifest

    features_dir = load_settings().features_dir
    known = [m["snapshot_id"] for m in list_snapshots(features_dir)]
    if snapshot_id is not None and snapshot_id not in known:
        raise UserError(
            f"no snapshot {snapshot_id!r} in {features_dir}; "
            + (f"known: {', '.join(known)}" if known else "build one with `offers features build`")
        )
    manifest = read_manifest(features_dir, snapshot_id)
    console.print_json(json.dumps(manifest))
    return manifest
