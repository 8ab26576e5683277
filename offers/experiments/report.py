"""`offers experiment report NAME`: read the logged exposures, compute, write, log to MLflow.

Reads (the I/O edge): the definition (OFFERS_HOME/experiments/NAME.json), the exposures table
of DATA_DIR through the data contract, the consents and the erasure register (a user erased or
withdrawn when the report runs leaves the analysis, counted, as they leave training sets), the audit log (which model version served each arm), and for off-policy estimates a
candidate model from the registry. Writes the per-user table to
OFFERS_HOME/experiments/NAME/users.parquet (the notebook reads it; erasure sweeps it) and one
MLflow run through features.tracking. The numbers come from offers.experiments.analysis.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.appendlog import BadLine
from features.contract import ARM, CONSENTS, EXPERIMENT, EXPOSURES, SHOWN_AT, SLATE_ID, USER_ID
from features.eligibility import consent_windows, withdrawn_users
from features.erasures import read_erasures
from features.validate import load_tables
from offers.experiments.analysis import (
    DEFAULT_RESAMPLES,
    Estimate,
    ReportError,
    arm_table,
    lift,
    off_policy,
    per_user,
    sample_ratio_mismatch,
)
from serving.arms import arm_rankings
from serving.audit import AuditLog
from serving.experiments import (
    CHALLENGER_ARM,
    CHAMPION_ARM,
    HOLDOUT_ARM,
    Experiment,
    experiments_dir,
    find_experiment,
)
from serving.outputs import write_output
from serving.scorer import Scorer
from serving.state import ModelLoader

USERS_FILE = "users.parquet"
log = logging.getLogger(__name__)


@dataclass
class ExperimentReport:
    experiment: Experiment
    arms: pd.DataFrame
    lifts: dict[str, tuple[Estimate, Estimate]]  # name -> (per user, incremental)
    srm: dict[str, float]
    left_out_users: int  # erased or withdrawn when the report ran
    off_policy: dict[str, Estimate] = field(default_factory=dict)
    candidate: str = ""
    users_file: Path | None = None
    run_id: str = ""

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow: `<arm>.<column>`, `lift.<name>[.low|.high]`, `srm_p_value`."""
        out: dict[str, float] = {"srm_p_value": self.srm["p_value"]}
        for arm, row in self.arms.iterrows():
            out.update({f"{arm}.{col}": float(v) for col, v in row.items()})
        for name, (per, inc) in self.lifts.items():
            for key, e in ((f"lift.{name}", per), (f"incremental.{name}", inc)):
                out.update({key: e.value, f"{key}.low": e.low, f"{key}.high": e.high})
        for name, e in self.off_policy.items():
            out.update({f"{name}.{self.candidate}": e.value, f"{name}.{self.candidate}.low": e.low,
                        f"{name}.{self.candidate}.high": e.high})  # fmt: skip
        return out


def comparisons(arms: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Every arm against the holdout, and the challenger against the champion."""
    out = {f"{a}_vs_{HOLDOUT_ARM}": (a, HOLDOUT_ARM) for a in arms if a != HOLDOUT_ARM}
    if HOLDOUT_ARM not in arms:
        out = {}
    if CHALLENGER_ARM in arms and CHAMPION_ARM in arms:
        out[f"{CHALLENGER_ARM}_vs_{CHAMPION_ARM}"] = (CHALLENGER_ARM, CHAMPION_ARM)
    return out


def logged_rows(home: Path, data_dir: Path, name: str) -> tuple[pd.DataFrame, int]:
    """The experiment's exposure rows (validated), without users erased or withdrawn now (and
    how many of those there were)."""
    frames = load_tables(data_dir, tables=(CONSENTS, EXPOSURES))
    exposures = frames[EXPOSURES]
    logged = exposures[exposures[EXPERIMENT] == name]
    if logged.empty:
        raise ReportError(f"no exposures of experiment {name!r} in {data_dir}/{EXPOSURES}")
    now = datetime.now(UTC)
    gone_ids = set(read_erasures(home / "erasures")) | withdrawn_users(
        consent_windows(frames[CONSENTS]), now
    )
    gone = logged[USER_ID].isin(list(gone_ids))
    return logged.loc[~gone].reset_index(drop=True), int(logged.loc[gone, USER_ID].nunique())


def experiment_report(
    home: Path,
    data_dir: Path,
    name: str,
    candidate: str | None = None,
    on_arms: Sequence[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    model_loader: ModelLoader | None = None,
) -> ExperimentReport:
    """The report's numbers (no MLflow: see `log_report`); writes the per-user table."""
    experiment = find_experiment(home, name)
    logged, left_out = logged_rows(home, data_dir, name)
    users = per_user(logged)
    rng = np.random.default_rng(seed)
    lifts = {
        key: lift(users, arm, base, rng, resamples)
        for key, (arm, base) in comparisons(experiment.arms).items()
    }
    report = ExperimentReport(
        experiment,
        arm_table(users, experiment.arms),
        lifts,
        sample_ratio_mismatch(users, experiment.shares),
        left_out,
    )
    if candidate:
        traffic = logged[logged[ARM].isin(list(on_arms or experiment.arms))]
        rankings = candidate_rankings(home, data_dir, candidate, traffic, model_loader)
        report.off_policy = off_policy(traffic, rankings, rng, resamples)
        report.candidate = candidate
    report.users_file = _write_users(home, name, users)
    return report


def candidate_rankings(
    home: Path,
    data_dir: Path,
    alias: str,
    logged: pd.DataFrame,
    model_loader: ModelLoader | None = None,
) -> dict[str, list[str]]:
    """The candidate model's full ranking for every logged slate, over the offers active at its
    shown_at (the published snapshot's features; requests logged without a candidate list)."""
    audit = AuditLog(home / "audit")  # nothing is decided here: no record is written
    scorer = Scorer(home, data_dir, alias, model_loader=model_loader, audit=audit,
                    allow_past_now=True)  # fmt: skip
    slates = logged.drop_duplicates(SLATE_ID)
    out: dict[str, list[str]] = {}
    for at, group in slates.groupby(SHOWN_AT, sort=True):
        ranked = arm_rankings(scorer, scorer.state, group[USER_ID].tolist(), at.to_pydatetime(),
                              popular=False)  # fmt: skip
        out.update(zip(group[SLATE_ID], ranked, strict=True))
    return out


def _write_users(home: Path, name: str, users: pd.DataFrame) -> Path:
    """Recorded and written aside, then renamed (serving.outputs): erasure reaches it."""
    path = experiments_dir(home) / name / USERS_FILE
    write_output(users, path, home)
    return path


def served_versions(home: Path, name: str) -> dict[str, str]:
    """Which model version served each arm, from the audit records (the last one seen)."""
    versions: dict[str, str] = {}

    def torn(bad: BadLine) -> None:  # a torn line costs only itself (serving.audit)
        log.warning("audit: %s skipped while looking up served versions", bad)

    for record in AuditLog(home / "audit").records(on_bad=torn):
        if record.get("experiment") == name and record.get("arm") != HOLDOUT_ARM:
            versions[record["arm"]] = str(record["model"]["version"])
    return versions


def log_report(home: Path, report: ExperimentReport) -> str:
    """The report's aggregates in MLflow, beside the served versions' offline metrics."""
    from features import tracking

    exp = report.experiment
    params: dict[str, Any] = {
        "experiment": exp.name, "start": exp.start.isoformat(), "end": exp.end.isoformat(),
        "exploration": exp.exploration, "users_left_out": report.left_out_users,
        **{f"share.{a}": s for a, s in exp.shares.items()},
    }  # fmt: skip
    versions = served_versions(home, exp.name)
    report.run_id = tracking.log_online_report(home, exp.name, report.metrics(), params, versions)
    return report.run_id
