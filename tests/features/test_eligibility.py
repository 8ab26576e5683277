"""The vectorised consent windows mean exactly what policy.consent_state means."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from frames import consents, users
from hypothesis import given, settings
from hypothesis import strategies as st

from features.eligibility import (
    ACTIVE_UNTIL,
    ADULT_FROM,
    USABLE_FROM,
    consent_windows,
    user_gates,
    withdrawn_users,
)
from features.policy_frames import consents_by_user
from policy import ConsentStatus, consent_state

BASE = pd.Timestamp("2024-01-01", tz="UTC")
PURPOSE_SETS = [["offer_ranking"], ["offer_ranking", "fraud_alert"], ["balance_display"]]


@st.composite
def consent_rows(draw):
    rows = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        granted = BASE + pd.Timedelta(days=draw(st.integers(min_value=0, max_value=600)))
        row = {
            "user_id": "u",
            "granted_at": granted,
            "purposes": draw(st.sampled_from(PURPOSE_SETS)),
            "lookback_days": draw(st.sampled_from([30, 90, 365])),
        }
        if draw(st.booleans()):
            row["expires_at"] = granted + pd.Timedelta(
                days=draw(st.integers(min_value=1, max_value=500))
            )
        if draw(st.booleans()):
            row["revoked_at"] = granted + pd.Timedelta(
                days=draw(st.integers(min_value=0, max_value=400))
            )
        rows.append(row)
    return rows


def _window_at(windows: pd.DataFrame, t: pd.Timestamp) -> pd.DataFrame:
    return windows[(windows.granted_at <= t) & (t < windows[ACTIVE_UNTIL])]


@settings(max_examples=300, deadline=None)
@given(consent_rows(), st.integers(min_value=-10, max_value=1200))
def test_windows_agree_with_the_policy_at_any_instant(rows, day):
    frame = consents(rows)
    t = BASE + pd.Timedelta(days=day, hours=3)
    state = consent_state(consents_by_user(frame).get("u", []), t.to_pydatetime())
    open_windows = _window_at(consent_windows(frame), t)
    assert len(open_windows) <= 1
    assert (len(open_windows) == 1) == (state.status is ConsentStatus.ACTIVE)
    if state.status is ConsentStatus.ACTIVE:
        assert open_windows[USABLE_FROM].iloc[0] == state.consent.earliest_usable_ts()


@settings(max_examples=300, deadline=None)
@given(consent_rows(), st.integers(min_value=-10, max_value=1200))
def test_withdrawn_means_the_policy_sees_a_revoked_latest_consent(rows, day):
    frame = consents(rows)
    run_time = (BASE + pd.Timedelta(days=day)).to_pydatetime()
    covering = [c for c in consents_by_user(frame).get("u", []) if "offer_ranking" in c.purposes]
    state = consent_state(covering, run_time)
    assert ("u" in withdrawn_users(consent_windows(frame), run_time)) == (
        state.status is ConsentStatus.REVOKED
    )


def test_gates_mark_adulthood_objection_and_erasure():
    frame = users(
        ["adult", "leap", "unknown", "erased"],
        birth={"adult": dt.date(2000, 5, 17), "leap": dt.date(2004, 2, 29), "unknown": None},
        objection={"adult": "2024-03-01T10:00:00"},
    )
    windows = consent_windows(consents([{"user_id": "adult", "granted_at": "2024-01-01"}]))
    run = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    gates = user_gates(frame, windows, run, erased={"erased": run}).set_index("user_id")
    assert gates.loc["adult", ADULT_FROM] == pd.Timestamp("2018-05-17", tz="UTC")
    assert gates.loc["leap", ADULT_FROM] == pd.Timestamp("2022-03-01", tz="UTC")
    assert pd.isna(gates.loc["unknown", ADULT_FROM])
    assert gates.loc["adult", "objection_at"] == pd.Timestamp("2024-03-01T10:00", tz="UTC")
    assert gates["withdrawn"].to_dict() == {
        "adult": False,
        "leap": False,
        "unknown": False,
        "erased": True,
    }


def test_a_recorded_erasure_withdraws_the_user_whatever_its_timestamp():
    """A job run as of an earlier instant (a backtest, a skewed clock) still leaves them out."""
    frame = users(
        ["early", "late"], birth={"early": dt.date(1980, 1, 1), "late": dt.date(1980, 1, 1)}
    )
    windows = consent_windows(
        consents([{"user_id": u, "granted_at": "2024-01-01"} for u in ("early", "late")])
    )
    run = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    erased = {"early": run - dt.timedelta(days=1), "late": run + dt.timedelta(days=30)}
    gates = user_gates(frame, windows, run, erased=erased).set_index("user_id")
    assert gates["withdrawn"].to_dict() == {"early": True, "late": True}
