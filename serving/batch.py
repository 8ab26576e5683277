"""Batch scoring: every user's top k through the same policy decision and ranking as a request.

Why through the Scorer: a batch is many requests, so it must deny exactly whom a request would
deny and write one audit record per user decision. The parent loads the serving state once and
hands it to joblib worker processes (one part each, one LightGBM thread each); a worker scores
its users in chunks with one assembled matrix and one model call per chunk, and returns rows.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, parallel_config

from features.contract import OFFER_ID, USER_ID
from features.tracking import CHAMPION
from policy import OFFER_RANKING
from serving.audit import AuditLog
from serving.outputs import write_output
from serving.requests import check_request, decision_time
from serving.results import RankResult
from serving.scorer import Scorer
from serving.state import ModelLoader, ServingState

DECISION = "decision"
REASON_CODE = "reason_code"
RANK = "rank"
SCORE = "score"
COLD_START = "cold_start"
REQUEST_ID = "request_id"
ALLOW = "allow"
OUTPUT_COLUMNS = (USER_ID, DECISION, REASON_CODE, RANK, OFFER_ID, SCORE, COLD_START, REQUEST_ID)
CHUNK_USERS = 128  # users per model call: 128 x 500 offers x 33 features is ~17 MB


@dataclass(frozen=True)
class BatchReport:
    out: Path
    users: int
    allowed: int
    cold_start: int
    denied_by_reason: dict[str, int]
    rows: int
    seconds: float  # end to end, loading the model and data included
    load_seconds: float  # registry, snapshot and tables, once in the parent
    n_jobs: int
    model: str
    snapshot_id: str

    @property
    def users_per_s(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else float("inf")

    @property
    def scoring_users_per_s(self) -> float:
        """Throughput once loaded (worker start-up and the output write included)."""
        scoring = self.seconds - self.load_seconds
        return self.users / scoring if scoring > 0 else float("inf")


def result_rows(results: Sequence[RankResult]) -> dict[str, list]:
    """One row per ranked offer, one row (without an offer) per denied user."""
    cols: dict[str, list] = {c: [] for c in OUTPUT_COLUMNS}
    for r in results:
        ranked = r.offers if r.allowed else [None]
        for offer in ranked:
            cols[USER_ID].append(r.user_id)
            cols[DECISION].append(r.decision.decision)
            cols[REASON_CODE].append(r.reason_code)
            cols[RANK].append(None if offer is None else offer.rank)
            cols[OFFER_ID].append(None if offer is None else offer.offer_id)
            cols[SCORE].append(np.nan if offer is None else offer.score)
            cols[COLD_START].append(r.cold_start)
            cols[REQUEST_ID].append(r.request_id)
    return cols


def output_frame(cols: dict[str, list]) -> pd.DataFrame:
    """The output file's columns and dtypes, the same on every path."""
    frame = pd.DataFrame(cols, columns=list(OUTPUT_COLUMNS))
    return frame.astype({RANK: "Int64", SCORE: "float64", COLD_START: bool})


def _score_part(
    state: ServingState,
    home: Path,
    data_dir: Path,
    audit_dir: Path,
    audit_sync: str,
    allow_past_now: bool,
    user_ids: list[str],
    k: int,
    now: datetime,
    chunk_users: int,
) -> tuple[dict[str, list], Counter]:
    """One worker's users, chunk by chunk; its own audit descriptor, the parent's state."""
    audit = AuditLog(audit_dir, sync=audit_sync)
    scorer = Scorer(home, data_dir, audit=audit, state=state, allow_past_now=allow_past_now)
    cols: dict[str, list] = {c: [] for c in OUTPUT_COLUMNS}
    counts: Counter = Counter()
    try:
        for start in range(0, len(user_ids), chunk_users):
            results = scorer.rank_many(user_ids[start : start + chunk_users], OFFER_RANKING, k, now)
            for name, values in result_rows(results).items():
                cols[name].extend(values)
            counts.update(
                COLD_START if r.cold_start else (ALLOW if r.allowed else r.reason_code)
                for r in results
            )
    finally:
        audit.close()
    return cols, counts


@dataclass(frozen=True)
class BatchStart:
    """What the local and the Spark batch start from: one load, one request check, the users."""

    parent: Scorer  # loaded once; its state is what every part scores on
    users: list[str]
    n_parts: int
    now: datetime
    t0: float  # perf_counter at the start: the report's seconds count from here
    load_seconds: float

    @property
    def state(self) -> ServingState:
        return self.parent.state


def start_batch(
    home: Path,
    data_dir: Path,
    k: int,
    now: datetime | None,
    user_ids: Sequence[str] | None,
    n_jobs: int,
    model_alias: str,
    model_loader: ModelLoader | None,
    allow_past_now: bool,
) -> BatchStart:
    """Load the state once and check k and `now` once, before any part starts.

    Users default to every user in the users and consents tables.
    """
    t0 = time.perf_counter()
    now = decision_time(now)
    parent = Scorer(
        home, data_dir, model_alias, model_loader=model_loader, allow_past_now=allow_past_now
    )
    state = parent.state
    check_request(state, k, now, allow_past_now)
    load_seconds = time.perf_counter() - t0
    users = sorted(set(state.users) | set(state.consents)) if user_ids is None else list(user_ids)
    n_parts = max(1, min(n_jobs, len(users)))
    return BatchStart(parent, users, n_parts, now, t0, load_seconds)


def batch_report(start: BatchStart, out: Path, counts: Counter, rows: int) -> BatchReport:
    """The report both paths return; `counts`: per user cold_start, allow or the deny reason."""
    denied = {r: n for r, n in counts.items() if r not in (ALLOW, COLD_START)}
    return BatchReport(
        out=out,
        users=len(start.users),
        allowed=counts[ALLOW] + counts[COLD_START],
        cold_start=counts[COLD_START],
        denied_by_reason=dict(sorted(denied.items())),
        rows=rows,
        seconds=time.perf_counter() - start.t0,
        load_seconds=start.load_seconds,
        n_jobs=start.n_parts,
        model=f"{start.state.model_name} v{start.state.model_version}",
        snapshot_id=start.state.snapshot_id,
    )


def score_batch(
    home: str | Path,
    data_dir: str | Path,
    out: str | Path,
    k: int = 10,
    *,
    n_jobs: int = 2,
    now: datetime | None = None,
    user_ids: Sequence[str] | None = None,
    model_alias: str = CHAMPION,
    model_loader: ModelLoader | None = None,
    chunk_users: int = CHUNK_USERS,
    audit_sync: str | None = None,
    allow_past_now: bool = False,
) -> BatchReport:
    """Top k for every user (default: every user in the users and consents tables) to Parquet.

    The audit records of a chunk are written one by one and fsynced together (group commit);
    the output file is written aside and renamed, so a crash never leaves a partial file.
    """
    home, out, data_dir = Path(home), Path(out), Path(data_dir)
    start = start_batch(
        home, data_dir, k, now, user_ids, n_jobs, model_alias, model_loader, allow_past_now
    )
    parent, users, n_parts = start.parent, start.users, start.n_parts
    sync = audit_sync or parent.audit.sync
    parts = [p.tolist() for p in np.array_split(np.array(users, dtype=object), n_parts)]
    args = (start.state, home, data_dir, parent.audit.dir, sync, allow_past_now)
    if n_parts == 1:
        outputs = [_score_part(*args, users, k, start.now, chunk_users)]
    else:
        with parallel_config(backend="loky", inner_max_num_threads=1):
            outputs = Parallel(n_jobs=n_parts)(
                delayed(_score_part)(*args, part, k, start.now, chunk_users) for part in parts
            )
    cols: dict[str, list] = {c: [] for c in OUTPUT_COLUMNS}
    counts: Counter = Counter()
    for part_cols, part_counts in outputs:
        for name, values in part_cols.items():
            cols[name].extend(values)
        counts.update(part_counts)
    frame = output_frame(cols)
    write_output(frame, out, home)  # recorded under OFFERS_HOME first: erasure reaches it
    return batch_report(start, out, counts, len(frame))
