"""The feature job's inputs: contract-checked tables registered on one backend.

The only place the feature job reads source files: transactions are scanned by the engine
(features/intake.py), users and consents are checked in pandas (features/validate.py), and
the consent windows and user gates (features/eligibility.py) are evaluated when the job runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ibis.expr.types as ir
import pandas as pd

from features.backend import connect
from features.contract import (
    AMOUNT,
    CONSENTS,
    MCC,
    MERCHANT_ID,
    TRANSACTIONS,
    TS,
    TXN_ID,
    USER_ID,
    USERS,
)
from features.eligibility import consent_windows, user_gates
from features.erasures import read_erasures
from features.intake import scan_transactions
from features.io import file_digest, table_path
from features.validate import check_tables
from features.validate_report import ContractError, ValidationReport


@dataclass
class Sources:
    """Inputs registered on one backend, with the gates evaluated when the job runs."""

    con: Any
    transactions: ir.Table
    users: ir.Table
    windows: ir.Table
    gates: ir.Table
    pending_digests: dict[str, str] | Future[dict[str, str]]
    run_time: datetime
    n_erased: int
    input_check: dict[str, Any] = field(default_factory=dict)  # manifest field

    @property
    def digests(self) -> dict[str, str]:
        """Source file digests; computed beside the job, so the first read may wait for them."""
        if isinstance(self.pending_digests, Future):
            self.pending_digests = self.pending_digests.result()
        return self.pending_digests


def open_sources(
    data_dir: str | Path,
    erasures_dir: str | Path | None = None,
    run_time: datetime | None = None,
    engine: str = "duckdb",
    con: Any = None,
    quarantine_dir: str | Path | None = None,
) -> Sources:
    """Register transactions (scanned by the engine) and the small gate tables (from pandas).

    Every table passes the data contract first, so nothing foreign reaches a feature: users
    and consents in pandas (features/validate.py), transactions on the engine
    (features/intake.py: scanned, never loaded, so 50M rows fit in memory). Strict by default:
    any bad row raises ContractError naming table, row, column and rule. With quarantine_dir,
    bad rows go there with their reasons (as `offers validate --quarantine`) and the rest is
    used; a file unusable as a whole raises in both modes.
    """
    data_dir = Path(data_dir)
    qdir = None if quarantine_dir is None else Path(quarantine_dir)
    con = con if con is not None else connect(engine)
    # Hashing a large transactions file takes seconds; hashlib releases the GIL, so a thread
    # digests the sources while the engine scans them.
    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-digests")
    digests = hashing.submit(
        lambda: {t: file_digest(table_path(data_dir, t)) for t in (TRANSACTIONS, USERS, CONSENTS)}
    )
    hashing.shutdown(wait=False)
    scan = scan_transactions(con, data_dir, fresh_duckdb=connect)
    small_report, small = check_tables(data_dir, qdir, (USERS, CONSENTS))
    report = _combined(scan.report(qdir), small_report)
    if report.failed:
        raise ContractError(report)
    if qdir is not None:
        scan.quarantine(qdir)
    sources = register_sources(
        con,
        scan.good,
        small[USERS],
        small[CONSENTS],
        read_erasures(erasures_dir) if erasures_dir else {},
        run_time or datetime.now(UTC),
        digests,
    )
    sources.input_check = _input_check(report)
    return sources


def _combined(first: ValidationReport, second: ValidationReport) -> ValidationReport:
    return ValidationReport(
        first.data_dir,
        first.quarantine_dir,
        counts={**first.counts, **second.counts},
        summaries=first.summaries + second.summaries,
        notes=first.notes + second.notes,
    )


def _input_check(report: ValidationReport) -> dict[str, Any]:
    """What the contract check read, kept and set aside: the manifest's `input_check`."""
    check: dict[str, Any] = {
        "mode": "strict" if report.strict else "quarantine",
        "tables": {
            t: {"read": c.read, "kept": c.kept, "rejected": c.rejected}
            for t, c in report.counts.items()
        },
        "rejected_by_rule": {f"{s.table}/{s.rule}": s.count for s in report.summaries},
    }
    if not report.strict:
        check["quarantine_dir"] = str(Path(report.quarantine_dir).resolve())
    return check


def register_sources(
    con: Any,
    transactions: ir.Table | pd.DataFrame,
    users: pd.DataFrame,
    consents: pd.DataFrame,
    erased: Mapping[str, datetime],
    run_time: datetime,
    digests: dict[str, str] | Future[dict[str, str]] | None = None,
) -> Sources:
    """Sources from typed frames (transactions may already be a backend table)."""
    if isinstance(transactions, pd.DataFrame):
        columns = [TXN_ID, USER_ID, TS, AMOUNT, MERCHANT_ID, MCC]
        transactions = con.create_table("transactions", transactions[columns], overwrite=True)
    windows = consent_windows(consents)
    gates = user_gates(users, windows, run_time, erased)
    return Sources(
        con=con,
        transactions=transactions,
        users=con.create_table("users_ids", users[[USER_ID]].astype(str), overwrite=True),
        windows=con.create_table("consent_windows", windows, overwrite=True),
        gates=con.create_table("user_gates", gates, overwrite=True),
        pending_digests={} if digests is None else digests,
        run_time=run_time,
        n_erased=len(erased),
    )
