"""Consent and user gates as small frames, so the feature engine can join instead of loop.

These are vectorised restatements of `policy.consent` (effective expiry, revocation, lookback,
18th birthday); tests/features/test_eligibility.py checks them against the policy functions on
random data, so there is one meaning even where there are two spellings.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import pandas as pd

from features.contract import (
    BIRTH_DATE,
    CONSENT_ID,
    GRANTED_AT,
    LOOKBACK_DAYS,
    MARKETING_OBJECTION_AT,
    PURPOSES,
    REVOKED_AT,
    USER_ID,
)
from features.contract import EXPIRES_AT as _EXPIRES_AT
from policy import OFFER_RANKING, eighteenth_birthday
from policy.consent import DEFAULT_VALIDITY

# Columns of the prepared frames.
ACTIVE_UNTIL = "active_until"  # first instant the consent no longer holds (expiry or revocation)
USABLE_FROM = "usable_from"  # granted_at - lookback_days: oldest transaction the consent opens
ADULT_FROM = "adult_from"  # midnight UTC of the 18th birthday; null when the birth date is unknown
OBJECTION_AT = "objection_at"
WITHDRAWN = "withdrawn"  # withdrawn or erased when the job runs: final, whatever the cutoff

UTC = "UTC"


def consent_windows(consents: pd.DataFrame) -> pd.DataFrame:
    """One row per consent covering offer_ranking, with the span in which it is the one that counts.

    As in `policy.consent_state`, the latest covering authorisation decides: a consent holds
    from its grant until it expires, is revoked, or a newer covering consent is granted
    (ties on granted_at break on consent_id). At most one window is open at any instant.
    """
    covers = consents[PURPOSES].map(lambda purposes: OFFER_RANKING in purposes).astype(bool)
    rows = consents.loc[covers].sort_values([USER_ID, GRANTED_AT, CONSENT_ID], kind="stable")
    granted = rows[GRANTED_AT]
    default_expiry = granted + DEFAULT_VALIDITY
    expiry = rows[_EXPIRES_AT].fillna(default_expiry)
    expiry = expiry.where(expiry <= default_expiry, default_expiry)
    revoked = rows[REVOKED_AT]
    superseded = granted.groupby(rows[USER_ID], sort=False).shift(-1)
    ends = pd.concat([expiry, revoked, superseded], axis=1)
    active_until = ends.min(axis=1, skipna=True)
    lookback = pd.to_timedelta(rows[LOOKBACK_DAYS].astype("int64"), unit="D")
    frame = pd.DataFrame(
        {
            USER_ID: rows[USER_ID].astype(str),
            GRANTED_AT: granted,
            ACTIVE_UNTIL: active_until,
            USABLE_FROM: granted - lookback,
            REVOKED_AT: revoked,
        }
    )
    return frame.reset_index(drop=True).astype(
        {c: "datetime64[us, UTC]" for c in (GRANTED_AT, ACTIVE_UNTIL, USABLE_FROM, REVOKED_AT)}
    )


def withdrawn_users(windows: pd.DataFrame, run_time: datetime) -> set[str]:
    """Users whose latest offer_ranking consent granted by `run_time` was revoked by then."""
    granted = windows.loc[windows[GRANTED_AT] <= run_time]
    latest = granted.groupby(USER_ID, sort=False).tail(1)  # windows are sorted by grant
    revoked = latest[REVOKED_AT].notna() & (latest[REVOKED_AT] <= run_time)
    return set(latest.loc[revoked, USER_ID])


def user_gates(
    users: pd.DataFrame,
    windows: pd.DataFrame,
    run_time: datetime,
    erased: Mapping[str, datetime] | None = None,
) -> pd.DataFrame:
    """Per user: when they become adult, when they objected, and whether they are withdrawn."""
    erased = erased or {}
    births = users[BIRTH_DATE]
    adult_by_birth = {  # a few thousand distinct birth dates for any number of users
        d: None if d is None or pd.isna(d) else pd.Timestamp(eighteenth_birthday(d), tz=UTC)
        for d in births.dropna().unique()
    }
    adult = births.map(adult_by_birth)
    # A recorded erasure is final whatever its timestamp (policy.md, Erasure): one semantics with
    # explain, serving and training, even for a job run as of an earlier instant.
    withdrawn = withdrawn_users(windows, run_time) | set(erased)
    user_ids = users[USER_ID].astype(str)
    frame = pd.DataFrame(
        {
            USER_ID: user_ids,
            ADULT_FROM: pd.to_datetime(adult, utc=True),
            OBJECTION_AT: pd.to_datetime(users[MARKETING_OBJECTION_AT], utc=True),
            WITHDRAWN: user_ids.isin(withdrawn).astype(bool),
        }
    )
    return frame.reset_index(drop=True).astype(
        {ADULT_FROM: "datetime64[us, UTC]", OBJECTION_AT: "datetime64[us, UTC]"}
    )
