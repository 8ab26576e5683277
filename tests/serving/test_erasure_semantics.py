"""One erasure semantics everywhere (spec/policy.md "Erasure"): once recorded, an erasure holds
for every decision made afterwards, whatever instant it is asked about. The same cases (an
erased user and a control, instants before and after the erasure's own time) go through
`policy explain`, the Scorer, batch scoring, training-set construction and `predict`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import typer
from serving_world import World

from features import contract as c
from features import tracking
from features.erasures import read_erasures
from features.validate import load_tables
from features.vector import FEATURE_COLUMNS
from serving.batch import score_batch
from serving.erase import erase
from training.inputs import KEPT, policy_reasons
from training.predict import predict
from training.report import synthetic_input_example

ERASED_AT = datetime(2025, 6, 5, tzinfo=UTC)
BEFORE, AFTER = datetime(2025, 6, 2, 12, tzinfo=UTC), datetime(2025, 6, 10, 12, tzinfo=UTC)
# (user, instant) -> allowed, reason code of the policy decision (explain, Scorer, batch)
CASES = {
    ("u_ok", BEFORE): (False, "CONSENT_REVOKED"),  # erased: before the erasure's time too
    ("u_ok", AFTER): (False, "CONSENT_REVOKED"),
    ("u_expired", BEFORE): (True, "OK"),  # control, not erased: its consent ends 2025-06-09
    ("u_expired", AFTER): (False, "CONSENT_EXPIRED"),
}
OFFER = "o00"  # m_groc, 5411: an ordinary offer active at both instants


def _explain(world: World, user: str, at: datetime, capsys) -> tuple[bool, str]:
    from offers.cli import explain

    try:
        explain(world.data, user, "offer_ranking", at.isoformat())
        allowed = True
    except typer.Exit as exc:
        assert exc.exit_code == 1
        allowed = False
    fields = dict(
        line.split(":", 1) for line in capsys.readouterr().out.splitlines() if ":" in line
    )
    return allowed, fields["reason_code"].strip()


def _batch(world: World, at: datetime, out: Path) -> dict[str, tuple[bool, str]]:
    users = sorted({u for u, _ in CASES})
    score_batch(
        world.home, world.data, out, 3, n_jobs=1, now=at, user_ids=users,
        model_loader=world.loader, allow_past_now=True,
    )  # fmt: skip
    first = pd.read_parquet(out).drop_duplicates(c.USER_ID).set_index(c.USER_ID)
    return {u: (first.loc[u, "decision"] == "allow", first.loc[u, "reason_code"]) for u in users}


def _register(world: World) -> str:
    """The world's booster as a real registered version (MLflow under the world's home)."""
    with tracking.start_run(world.home) as run:
        logged = run.log_ranker(
            world.booster, FEATURE_COLUMNS, synthetic_input_example(FEATURE_COLUMNS)
        )
        run_id = run.run_id
    version = tracking.register_version(world.home, logged, run_id, {})
    return f"models:/{tracking.MODEL_NAME}/{version}"


def _rows() -> pd.DataFrame:
    users, instants = zip(*CASES, strict=True)
    return pd.DataFrame(
        {c.USER_ID: list(users), c.OFFER_ID: OFFER, c.SHOWN_AT: pd.to_datetime(instants, utc=True)}
    )


@pytest.mark.slow
def test_explain_scorer_batch_training_and_predict_agree_at_every_instant(
    world: World, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("OFFERS_HOME", str(world.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{world.home / 'mlflow.db'}")
    erase(world.home, world.data, "u_ok", at=ERASED_AT)
    erasures = world.home / "erasures"
    scorer = world.scorer()
    rows = _rows()
    frames = load_tables(world.data)
    training = policy_reasons(
        rows[c.USER_ID].to_numpy(dtype=object), rows[c.SHOWN_AT], ["5411"] * len(rows),
        frames[c.USERS], frames[c.CONSENTS], read_erasures(erasures),
        datetime.now(UTC),
    )  # fmt: skip
    rows.to_parquet(tmp_path / "rows.parquet", index=False)
    predicted = predict(
        world.data, tmp_path / "rows.parquet", tmp_path / "scores.parquet",
        home=world.home, erasures_dir=erasures, model=_register(world),
    )  # fmt: skip
    offline = pd.read_parquet(tmp_path / "scores.parquet")
    assert predicted.n_rows == len(CASES)

    for i, ((user, at), expected) in enumerate(CASES.items()):
        served = scorer.rank(user, "offer_ranking", now=at)
        batch = _batch(world, at, tmp_path / f"batch-{i}.parquet")[user]
        said = {
            "explain": _explain(world, user, at, capsys),
            "scorer": (served.decision.allowed, served.decision.reason_code),
            "batch": batch,
        }
        assert said == dict.fromkeys(said, expected), (user, at)
        allowed = expected[0]
        assert (training[i] == KEPT) is allowed, (user, at, training[i])
        assert (offline["reason"].iloc[i] == KEPT) is allowed, (user, at)
        assert pd.notna(offline["score"].iloc[i]) is allowed, (user, at)
