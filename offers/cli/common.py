"""What every command shares: the error contract (exit 2), instants, progress lines, help texts.

Commands import their heavy dependencies (LightGBM, MLflow, DuckDB, uvicorn) inside the
function, so `offers --help` and a typo answer at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import pandas as pd
import typer
from rich.console import Console

console = Console()


class UserError(Exception):
    """An expected mistake (no model yet, a typo in a file, an unknown id): one line, exit 2."""


USER_ERROR_EXIT = 2


def is_expected(exc: BaseException) -> bool:
    """Mistakes a user can fix from the message alone; anything else is a bug: full traceback."""
    if isinstance(exc, KeyError | IndexError):  # LookupErrors that mean a bug, not a user
        return False
    if isinstance(exc, UserError | FileNotFoundError | LookupError):
        return True
    from features.online.stores import OnlineStoreError
    from features.validate import ContractError
    from serving.online import OnlineMismatchError, OnlineSnapshotGone
    from serving.scorer import ModelMismatchError
    from serving.sources import DataMismatchError

    return isinstance(
        exc,
        ContractError
        | ModelMismatchError
        | DataMismatchError
        | OnlineStoreError
        | OnlineMismatchError
        | OnlineSnapshotGone,
    )


class Commands(typer.core.TyperGroup):
    """Every command runs inside this: an expected error becomes `error: ...` on stderr, exit 2."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if not is_expected(exc):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=USER_ERROR_EXIT) from exc


def parse_instant(text: str | None, what: str) -> datetime | None:
    """ISO 8601; naive means UTC."""
    if text is None:
        return None
    try:
        stamp = pd.Timestamp(text)
        utc = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        return utc.to_pydatetime()
    except (ValueError, OverflowError) as exc:  # `0001-01-01T00:00+01:00` is in year 0 in UTC
        raise typer.BadParameter(f"{what}: {text!r} is not an ISO 8601 instant ({exc})") from exc


SPARK_MASTER_HELP = "Spark master URL (default local[2]; under spark-submit, its --master)."


QUARANTINE_HELP = "Set bad input rows aside in QDIR/<table>.parquet (with reasons) and go on."


def progress_printer() -> Callable[[str], None]:
    """One line per step on stderr with the seconds since the command started (stdout stays data)."""
    started = time.perf_counter()
    err = Console(stderr=True, highlight=False)

    def step(text: str) -> None:
        err.print(f"[dim]{time.perf_counter() - started:6.1f} s  {text}[/dim]", soft_wrap=True)

    return step


DATA_MISMATCH_HELP = (
    "Only warn when the snapshot was built from other users or consents files than --data."
)

ONLINE_HELP = (
    "Read users' features from this Redis (redis://HOST:PORT/DB), one round trip per request, "
    "instead of the embedded snapshot (see `offers features publish-online`)."
)
