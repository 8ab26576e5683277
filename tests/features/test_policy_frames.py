"""Typed contract frames become exactly the policy objects they describe."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import (
    BIRTH_DATE,
    CONSENT_ID,
    COUNTRY,
    EXPIRES_AT,
    GRANTED_AT,
    LOOKBACK_DAYS,
    MARKETING_OBJECTION_AT,
    PURPOSES,
    REVOKED_AT,
    USER_ID,
)
from features.policy_frames import consents_by_user, user_facts
from policy import OFFER_RANKING, Consent, Reason, UserFacts, decide

TS = "datetime64[us, UTC]"


def ts(*values: str | None) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values), utc=True, format="ISO8601")).astype(TS)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def typed_consents() -> pd.DataFrame:
    return pd.DataFrame(
        {
            CONSENT_ID: pd.Series(["c1", "c2", "c3"], dtype="str"),
            USER_ID: pd.Series(["u1", "u1", "u2"], dtype="str"),
            PURPOSES: pd.Series(
                [[OFFER_RANKING], [OFFER_RANKING, "fraud_alert"], ["fraud_alert"]], dtype=object
            ),
            GRANTED_AT: ts("2025-01-01T00:00:00Z", "2025-03-01T10:30:00.000001Z", "2025-02-02"),
            EXPIRES_AT: ts(None, "2025-09-01T00:00:00Z", None),
            REVOKED_AT: ts(None, "2025-04-01T08:00:00Z", None),
            LOOKBACK_DAYS: np.array([365, 90, 30], dtype="int64"),
        }
    )


EXPECTED_CONSENTS = {
    "u1": [
        Consent("c1", "u1", frozenset({OFFER_RANKING}), utc(2025, 1, 1), None, None, 365),
        Consent(
            "c2",
            "u1",
            frozenset({OFFER_RANKING, "fraud_alert"}),
            utc(2025, 3, 1, 10, 30, 0, 1),
            utc(2025, 9, 1),
            utc(2025, 4, 1, 8),
            90,
        ),
    ],
    "u2": [Consent("c3", "u2", frozenset({"fraud_alert"}), utc(2025, 2, 2), None, None, 30)],
}


def typed_users() -> pd.DataFrame:
    return pd.DataFrame(
        {
            USER_ID: pd.Series(["u1", "u2", "u3"], dtype="str"),
            BIRTH_DATE: pd.Series([date(1990, 5, 17), None, date(2008, 2, 29)], dtype=object),
            MARKETING_OBJECTION_AT: ts(None, "2025-02-01T12:00:00Z", None),
            COUNTRY: pd.Series(["DE", None, "FR"], dtype="str"),
        }
    )


def test_consents_by_user_exact() -> None:
    got = consents_by_user(typed_consents())
    assert got == EXPECTED_CONSENTS
    c2 = got["u1"][1]
    for t in (c2.granted_at, c2.expires_at, c2.revoked_at):
        assert type(t) is datetime and t.tzinfo is UTC
    assert got["u1"][0].expires_at is None and got["u1"][0].revoked_at is None
    assert type(c2.lookback_days) is int
    assert type(c2.consent_id) is str and type(c2.user_id) is str


def test_consents_survive_a_parquet_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "consents.parquet"
    typed_consents().to_parquet(path)
    back = pd.read_parquet(path)
    assert isinstance(back[PURPOSES].iloc[0], np.ndarray)  # pyarrow hands lists back as arrays
    assert consents_by_user(back) == EXPECTED_CONSENTS


def test_naive_timestamps_mean_utc_and_other_zones_are_converted() -> None:
    frame = typed_consents()
    frame[GRANTED_AT] = frame[GRANTED_AT].dt.tz_localize(None)
    frame[REVOKED_AT] = frame[REVOKED_AT].dt.tz_convert("Europe/Berlin")
    assert consents_by_user(frame) == EXPECTED_CONSENTS


def test_missing_lookback_defaults_to_365() -> None:
    frame = typed_consents().drop(columns=[LOOKBACK_DAYS])
    assert {c.lookback_days for cs in consents_by_user(frame).values() for c in cs} == {365}


def test_empty_consents() -> None:
    assert consents_by_user(typed_consents().iloc[:0]) == {}


def test_a_consent_without_grant_time_is_refused_not_invented() -> None:
    frame = typed_consents()
    frame.loc[1, GRANTED_AT] = pd.NaT
    with pytest.raises(ValueError, match="c2"):
        consents_by_user(frame)


def test_user_facts_exact() -> None:
    erased = {
        "u2": datetime(2025, 5, 1, 14, tzinfo=timezone(timedelta(hours=2))),
        "u3": pd.Timestamp("2025-06-01T00:00:00"),  # naive: UTC
        "ghost": utc(2025, 1, 1),  # erased and gone from users: stays unknown
    }
    got = user_facts(typed_users(), erased)
    assert got == {
        "u1": UserFacts("u1", date(1990, 5, 17), None, None),
        "u2": UserFacts("u2", None, utc(2025, 2, 1, 12), utc(2025, 5, 1, 12)),
        "u3": UserFacts("u3", date(2008, 2, 29), None, utc(2025, 6, 1)),
    }
    assert type(got["u2"].marketing_objection_at) is datetime
    assert type(got["u3"].erased_at) is datetime
    assert user_facts(typed_users()) == {
        uid: UserFacts(f.user_id, f.birth_date, f.marketing_objection_at) for uid, f in got.items()
    }


def test_birth_dates_given_as_timestamps_become_dates() -> None:
    frame = typed_users()
    frame[BIRTH_DATE] = pd.Series(pd.to_datetime(["1990-05-17", None, "2008-02-29"]))
    facts = user_facts(frame)
    assert facts["u1"].birth_date == date(1990, 5, 17)
    assert type(facts["u1"].birth_date) is date
    assert facts["u2"].birth_date is None


def test_duplicate_users_are_refused() -> None:
    frame = pd.concat([typed_users(), typed_users().iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="u1"):
        user_facts(frame)


def test_the_objects_decide_as_the_frames_say() -> None:
    consents = consents_by_user(typed_consents())
    facts = user_facts(typed_users())

    def reason(uid: str, at: datetime) -> Reason:
        return decide(OFFER_RANKING, at, consents.get(uid, []), facts.get(uid)).reason

    assert reason("u1", utc(2025, 3, 15)) is Reason.OK
    assert reason("u1", utc(2025, 4, 1, 8)) is Reason.CONSENT_REVOKED  # the latest, c2, revoked
    assert reason("u2", utc(2025, 3, 1)) is Reason.PURPOSE_NOT_IN_SCOPE
    assert reason("u3", utc(2025, 3, 1)) is Reason.NO_CONSENT
    assert reason("nobody", utc(2025, 3, 1)) is Reason.NO_CONSENT
