"""Privacy commands: explain a policy decision, erase a user, read the audit log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from offers.cli.common import (
    console,
)
from offers.settings import load_settings


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
    from features.contract import CONSENTS, USER_ID, USERS
    from features.erasures import erased_since_always, read_erasures
    from features.policy_frames import consents_by_user, user_facts
    from features.validate import ContractError, load_tables
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
