"""The `offers` command line. Each command is a plain function the tests call directly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
policy_app = typer.Typer(no_args_is_help=True, help="Inspect the policy.")
features_app = typer.Typer(no_args_is_help=True, help="Build and inspect feature snapshots.")
audit_app = typer.Typer(no_args_is_help=True, help="Read the audit log.")
app.add_typer(policy_app, name="policy")
app.add_typer(features_app, name="features")
app.add_typer(audit_app, name="audit")


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
    from features.erasures import read_erasures
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
    erased = read_erasures(load_settings().erasures_dir)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
