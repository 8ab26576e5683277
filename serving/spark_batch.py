"""Batch scoring on Spark: the local batch's output, with users spread over Spark tasks.

Why it is shaped like this:

* The same decision and ranking code. Each task scores its users through `Scorer.rank_many`
  (policy decision, `features.vector.assemble`, LightGBM, reasons) on a `ServingState` built by
  `serving.state.load_state`; nothing of policy or assembly is re-implemented here.
* The registry is read once, on the driver. Executors need no MLflow access: the champion's
  Booster travels as its model string in a broadcast variable, and `load_state` receives it
  through its `model_loader` hook, so every check it makes (feature columns, policy version)
  runs on the executor too. The snapshot, catalogue, consents and erasures are read by each
  Python worker once (cached per batch, so several partitions in one worker load once) from
  OFFERS_HOME and the data folder, which on a cluster must be shared storage at the same path.
  A task refuses to score if it finds another snapshot than the driver did (a build published
  mid-batch), so one batch never mixes snapshots.
* Audit records are written by the driver. Executors on other machines cannot append to the
  driver's audit file (and a half-finished task that Spark retries would write its records
  twice), so each task returns one audit record per user decision with its rows, and the
  driver writes them (one group commit) once the job has succeeded, before the output file.
* `now` is checked once, on the driver, when the batch starts (not in the past, not before the
  snapshot's cutoff); tasks then score in replay mode, so a batch that runs longer than the
  allowed clock skew does not fail halfway with the same `now` every user was decided at.

The output is one Parquet file with the local path's columns, dtypes and row order (users in
order, offers by rank), written aside and renamed; rows are collected to the driver through
Arrow, which is fine for top-k rows per user on a large driver.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import pandas as pd

from features.contract import USER_ID
from features.tracking import CHAMPION, RegisteredRanker
from features.vector import FEATURE_COLUMNS
from policy import OFFER_RANKING
from serving.audit import AuditLog
from serving.batch import (
    ALLOW,
    CHUNK_USERS,
    COLD_START,
    DECISION,
    OUTPUT_COLUMNS,
    REASON_CODE,
    REQUEST_ID,
    BatchReport,
    BatchStart,
    batch_report,
    output_frame,
    result_rows,
    start_batch,
)
from serving.outputs import write_output
from serving.scorer import Scorer
from serving.state import ModelLoader, ServingState, load_state

POS = "_pos"  # the user's place in the batch: output order is the local path's
AUDIT = "_audit"  # the user's audit record (JSON) on the first row of each user
SPARK_SCHEMA = (
    "user_id string, decision string, reason_code string, rank bigint, offer_id string, "
    "score double, cold_start boolean, request_id string, _pos bigint, _audit string"
)


@dataclass(frozen=True)
class _Plan:
    """What a task needs besides its users; small and picklable (the Booster is broadcast)."""

    batch_id: str
    home: str
    data_dir: str
    model_alias: str
    model_name: str
    model_version: str
    policy_version: str
    snapshot_id: str
    k: int
    now: datetime
    chunk_users: int


class _CollectedAudit:
    """Stands in for AuditLog inside a task: keeps the records for the driver to write."""

    sync = "driver"

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        self.records.append(dict(record))
        return record

    def append_many(self, records: Any) -> list[dict[str, Any]]:
        batch = [dict(r) for r in records]
        self.records.extend(batch)
        return batch

    def close(self) -> None:
        """Nothing to release: the records leave with the task's rows."""


# One state per Python worker and batch: Spark reuses workers across a batch's partitions.
_STATE: dict[str, ServingState] = {}


def _task_state(plan: _Plan, model_string: Any) -> ServingState:
    cached = _STATE.get(plan.batch_id)
    if cached is not None:
        return cached

    def broadcast_loader(home: Path, alias: str) -> RegisteredRanker:
        # half_life_days unknown here: the driver checked it against the snapshot
        return RegisteredRanker(
            booster=lgb.Booster(model_str=model_string.value),
            name=plan.model_name,
            version=plan.model_version,
            alias=alias,
            run_id="",
            feature_columns=list(FEATURE_COLUMNS),
            snapshot_id=None,
            policy_version=plan.policy_version,
        )

    state = load_state(Path(plan.home), Path(plan.data_dir), plan.model_alias, broadcast_loader)
    if state.snapshot_id != plan.snapshot_id:
        raise RuntimeError(
            f"snapshot {state.snapshot_id} was published while batch {plan.batch_id} ran on "
            f"{plan.snapshot_id}: refusing to mix snapshots in one batch; run it again"
        )
    _STATE.clear()
    _STATE[plan.batch_id] = state
    return state


def _score_partition(
    plan: _Plan, model_string: Any, batches: Iterator[pd.DataFrame]
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: the partition's users, chunk by chunk, through Scorer.rank_many."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    state = _task_state(plan, model_string)
    audit = _CollectedAudit()
    scorer = Scorer(
        plan.home, plan.data_dir, plan.model_alias, audit=audit, state=state, allow_past_now=True
    )
    for batch in batches:
        users = batch[USER_ID].astype(str).tolist()
        positions = batch[POS].astype("int64").tolist()
        for start in range(0, len(users), plan.chunk_users):
            chunk = users[start : start + plan.chunk_users]
            audit.records.clear()
            results = scorer.rank_many(chunk, OFFER_RANKING, plan.k, plan.now)
            place = {
                r.request_id: p
                for r, p in zip(results, positions[start : start + len(chunk)], strict=True)
            }
            record = {r[REQUEST_ID]: json.dumps(r) for r in audit.records}
            cols = result_rows(results)
            ids = cols[REQUEST_ID]
            # the record rides on the user's first row (denied users have exactly one row)
            firsts = [i == 0 or ids[i - 1] != rid for i, rid in enumerate(ids)]
            yield output_frame({c: cols[c] for c in OUTPUT_COLUMNS}).assign(
                **{
                    POS: [place[rid] for rid in ids],
                    AUDIT: [record[rid] if f else None for rid, f in zip(ids, firsts, strict=True)],
                }
            )


def score_batch_spark(
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
    spark_master: str | None = None,
) -> BatchReport:
    """`serving.batch.score_batch` on Spark: same arguments, same file, same audit records.

    `n_jobs` is the number of Spark partitions of users; `spark_master` is used only when
    this process has no Spark session yet (default local[2], or spark-submit's --master).
    """
    home, out = Path(home).resolve(), Path(out)
    data_dir = Path(data_dir).resolve()
    # `now` is checked here, once for the batch: tasks score in replay mode
    start = start_batch(
        home, data_dir, k, now, user_ids, n_jobs, model_alias, model_loader, allow_past_now
    )

    plan = _Plan(
        batch_id=uuid.uuid4().hex,
        home=str(home),
        data_dir=str(data_dir),
        model_alias=model_alias,
        model_name=start.state.model_name,
        model_version=start.state.model_version,
        policy_version=start.state.policy_version,
        snapshot_id=start.state.snapshot_id,
        k=k,
        now=start.now,
        chunk_users=chunk_users,
    )
    rows = _run_on_spark(plan, start, spark_master)
    audit = AuditLog(start.parent.audit.dir, sync=audit_sync or start.parent.audit.sync)
    try:
        audit.append_many(json.loads(r) for r in rows[AUDIT].dropna())
    finally:
        audit.close()
    frame = output_frame({c: rows[c].tolist() for c in OUTPUT_COLUMNS})
    write_output(frame, out, home)  # recorded under OFFERS_HOME first: erasure reaches it

    return batch_report(start, out, _decisions(frame), len(frame))


def _run_on_spark(plan: _Plan, start: BatchStart, spark_master: str | None) -> pd.DataFrame:
    """Every user's rows and audit records, in batch order; the Booster travels as a broadcast."""
    from features.spark import spark_session

    spark = spark_session(spark_master)
    users = start.users
    model_string = spark.sparkContext.broadcast(start.state.booster.model_to_string())
    try:
        frame = pd.DataFrame({POS: range(len(users)), USER_ID: pd.Series(users, dtype=object)})
        scored = (
            spark.createDataFrame(frame, schema=f"{POS} bigint, {USER_ID} string")
            .repartitionByRange(start.n_parts, POS)
            .mapInPandas(
                lambda batches: _score_partition(plan, model_string, batches), SPARK_SCHEMA
            )
        )
        return scored.toArrow().to_pandas().sort_values(POS, kind="stable")
    finally:
        model_string.unpersist()


def _decisions(frame: pd.DataFrame) -> Counter:
    """Per user decision: cold_start, allow or the deny reason (what the local path counts)."""
    first = frame.drop_duplicates(REQUEST_ID)
    return Counter(
        COLD_START if cold else (ALLOW if decision == ALLOW else reason)
        for cold, decision, reason in zip(
            first[COLD_START], first[DECISION], first[REASON_CODE], strict=True
        )
    )
