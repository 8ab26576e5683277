"""Serving commands: the HTTP server and batch scoring, with their start-up checks."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from features.tracking import CHAMPION
from offers.cli.common import (
    DATA_MISMATCH_HELP,
    ONLINE_HELP,
    SPARK_MASTER_HELP,
    UserError,
    console,
    parse_instant,
)
from offers.settings import load_settings


def check_data(
    home: Path, data: Path, allow_data_mismatch: bool, online: str | None = None
) -> None:
    """Refuse (UserError) or warn when the published snapshot (or, `online`, the store's)
    came from other users or consents.

    The choice goes to the environment, where each later load (every server worker) reads it.
    """
    import os

    from serving.sources import DATA_MISMATCH_ENV, check_sources

    differ = check_sources(served_manifest(home, online), data, allow_data_mismatch)
    if differ:
        typer.echo(
            f"warning: the snapshot was built from other {' and '.join(differ)} files than {data}",
            err=True,
        )
    os.environ[DATA_MISMATCH_ENV] = "1" if allow_data_mismatch else "0"


def check_alias(home: Path, alias: str) -> None:
    """Before server workers start, where a missing model would end in a long traceback."""
    from features import tracking

    if tracking.alias_version(home, alias) is None:
        raise UserError(
            f"no model version has the alias {alias!r} (tracking URI {tracking.tracking_uri(home)}): "
            "run `offers train --data DIR`, then `offers promote`"
        )


def served_manifest(home: Path, online: str | None) -> dict[str, Any]:
    """The facts of the snapshot a server would read: the local one, or the online store's
    current namespace (its feature columns checked here, before any worker starts)."""
    if not online:
        from features.snapshot import read_manifest

        return read_manifest(home / "features")
    from features.online.layout import online_prefix
    from serving.online import OnlineFeatures

    return OnlineFeatures.open(online, online_prefix()).meta


def check_features(home: Path, data: Path, allow_data_mismatch: bool, online: str | None) -> None:
    """Before workers start: the snapshot (or the online store) fits --data; embedded, the
    mapped copy is written."""
    check_data(home, data, allow_data_mismatch, online)
    if not online:
        prepare_mapped_copy(home)


def prepare_mapped_copy(home: Path) -> None:
    """Write the snapshot's mapped copy once, in a short-lived process, before workers start:
    the workers then only map it, and nobody keeps the memory the build took."""
    import subprocess
    import sys

    from features.mapped import COPY_MAPPED, feature_copy_mode

    if feature_copy_mode() != COPY_MAPPED:
        return
    code = (
        "import sys; from pathlib import Path; from features.mapped import ensure_mapped; "
        "from features.snapshot import read_manifest; h = Path(sys.argv[1]); "
        "print(ensure_mapped(h, read_manifest(h / 'features')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(home)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise UserError(f"could not write the mapped feature copy: {done.stderr.strip()[-500:]}")


EXPIRED_HINT_SHARE = 0.5  # past this share of users denied CONSENT_EXPIRED, say why


def expired_hint(users: int, denied_by_reason: dict[str, int], now: str | None) -> str | None:
    """Why most users came back CONSENT_EXPIRED, when they did (synthetic consents lapse)."""
    from policy.decision import Reason

    expired = denied_by_reason.get(Reason.CONSENT_EXPIRED, 0)
    if not users or expired / users <= EXPIRED_HINT_SHARE:
        return None
    when = f"as of {now}" if now else "as of now"
    return (
        f"hint: {expired / users:.0%} of users were denied CONSENT_EXPIRED: most consents have "
        f"expired {when}; to replay a past instant pass --now TS --allow-past-now "
        "(after `make demo`: --now 2025-12-01T12:00:00Z)"
    )


def serve(
    data: Path = typer.Option(
        ..., envvar="OFFERS_DATA_DIR", help="Folder with users, consents and offers."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(
        1, min=1, help="Worker processes, forked after one load (they share its memory)."
    ),
    alias: str = typer.Option(CHAMPION, help="Registry alias to serve."),
    access_log: bool = typer.Option(False, help="Log every request line."),
    allow_past_now: bool = typer.Option(
        False,
        envvar="OFFERS_ALLOW_PAST_NOW",
        help="Replay mode: accept a past `now` (synthetic data).",
    ),
    allow_data_mismatch: bool = typer.Option(
        False, envvar="OFFERS_ALLOW_DATA_MISMATCH", help=DATA_MISMATCH_HELP
    ),
    online: str | None = typer.Option(None, envvar="OFFERS_ONLINE_STORE", help=ONLINE_HELP),
) -> None:
    """Serve POST /v1/rank (FastAPI on uvicorn); tokens from OFFERS_API_TOKENS(_FILE)."""
    import os

    from features.online.layout import ONLINE_STORE_ENV
    from serving.app import DATA_DIR_ENV, HOME_ENV, MODEL_ALIAS_ENV, REPLAY_ENV, read_tokens
    from serving.compiled import BACKGROUND, COMPILED_ENV
    from serving.limits import limits_from_env

    if not read_tokens():
        raise UserError("refusing to start: set OFFERS_API_TOKENS or OFFERS_API_TOKENS_FILE")
    try:
        limits = limits_from_env()  # OFFERS_MAX_BODY_BYTES, OFFERS_MAX_HEADER_BYTES
    except RuntimeError as exc:
        raise UserError(f"refusing to start: {exc}") from exc
    home = load_settings().home
    check_alias(home, alias)
    check_features(home, data, allow_data_mismatch, online)
    # The app factory (serving.app:app_from_env) finds everything in the environment.
    os.environ[ONLINE_STORE_ENV] = online or ""
    os.environ[HOME_ENV] = str(home)
    os.environ[DATA_DIR_ENV] = str(data.resolve())
    os.environ[MODEL_ALIAS_ENV] = alias
    os.environ[REPLAY_ENV] = "1" if allow_past_now else "0"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # A new model's forest compiles (minutes for 300 trees) while leaf sums serve: no slow start.
    os.environ.setdefault(COMPILED_ENV, BACKGROUND)
    run_server(host, port, workers, access_log, limits.max_header)


def run_server(host: str, port: int, workers: int, access_log: bool, max_header: int) -> None:
    """uvicorn on the app factory: one process, or a supervisor forking `workers`."""
    import uvicorn

    from serving import server
    from serving.prefork import STARTUP_FAILED, WorkerFailed, serve_forked

    config = uvicorn.Config(
        "serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        access_log=access_log,
        http=server.http_protocol(),  # httptools when installed, TCP_NODELAY (serving/server.py)
        loop=server.event_loop(),
        h11_max_incomplete_event_size=max_header,  # h11 only; httptools: serving/server.py
    )
    if workers > 1:  # load once, fork the workers: they share its memory (serving/prefork.py)
        try:
            serve_forked(config, workers)
        except WorkerFailed as exc:
            raise UserError(str(exc)) from exc
        return
    alone = uvicorn.Server(config)
    alone.run()
    if not alone.started:
        raise SystemExit(STARTUP_FAILED)


def score_batch_cmd(
    out: Path = typer.Option(..., help="Parquet file to write."),
    data: Path = typer.Option(
        ..., envvar="OFFERS_DATA_DIR", help="Folder with the contract tables."
    ),
    k: int = typer.Option(10, min=1, max=100, help="Offers per user."),
    jobs: int = typer.Option(2, min=1, help="Worker processes (one LightGBM thread each)."),
    now: str | None = typer.Option(
        None, help="Decision time (ISO 8601, naive = UTC); default now."
    ),
    alias: str = typer.Option(CHAMPION, help="Registry alias to score with."),
    allow_past_now: bool = typer.Option(
        False, envvar="OFFERS_ALLOW_PAST_NOW", help="Replay mode: accept a past --now."
    ),
    allow_data_mismatch: Annotated[
        bool, typer.Option(envvar="OFFERS_ALLOW_DATA_MISMATCH", help=DATA_MISMATCH_HELP)
    ] = False,
    engine: Annotated[
        str, typer.Option(help="local (joblib processes) or spark (--jobs partitions).")
    ] = "local",
    spark_master: Annotated[
        str | None, typer.Option(help=SPARK_MASTER_HELP, show_default="local[2]")
    ] = None,
):
    """Top k for every user, with the same policy decision and one audit record per user."""
    from serving.audit import AuditUnavailable
    from serving.requests import RequestError

    score_batch = _batch_scorer(engine, spark_master)
    home = load_settings().home
    check_data(home, data, allow_data_mismatch)
    try:
        report = score_batch(
            home,
            data,
            out,
            k,
            n_jobs=jobs,
            now=parse_instant(now, "--now"),
            model_alias=alias,
            allow_past_now=allow_past_now,
        )
    except RequestError as exc:  # a `--now` out of range or in the past: one line, exit 2
        raise UserError(f"--now: {exc}") from exc
    except AuditUnavailable as exc:  # no decision without its record: no output either
        typer.echo(f"{exc}; no output written: rerun when the audit log is writable", err=True)
        raise typer.Exit(code=3) from exc
    _print_batch(report, engine)
    hint = expired_hint(report.users, report.denied_by_reason, now)
    if hint:
        typer.echo(hint, err=True)
    return report


def _batch_scorer(engine: str, spark_master: str | None) -> Callable[..., Any]:
    """serving.batch.score_batch, or its Spark twin bound to the master (same arguments)."""
    if engine not in ("local", "spark"):
        raise typer.BadParameter(f"--engine: {engine!r} is not local or spark")
    if engine == "spark":
        from serving.spark_batch import score_batch_spark

        return partial(score_batch_spark, spark_master=spark_master)
    from serving.batch import score_batch

    return score_batch


def _print_batch(report, engine: str) -> None:  # report: serving.batch.BatchReport
    console.print(
        f"{report.users:,} users in {report.seconds:.2f} s: [bold]{report.users_per_s:,.0f} users/s[/bold] "
        f"({report.scoring_users_per_s:,.0f} users/s after {report.load_seconds:.1f} s loading; "
        f"{report.n_jobs} {'partitions' if engine == 'spark' else 'processes'}, {report.model}, snapshot {report.snapshot_id})"
    )
    console.print(
        f"allowed {report.allowed:,} (cold start {report.cold_start:,}); denied {report.denied_by_reason}; "
        f"{report.rows:,} rows -> {report.out}"
    )
