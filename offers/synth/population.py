"""The users and consents tables: ages, countries, objections and consent life cycles."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
from offers.synth.columns import DAY, NULL, STRING_DTYPE, YEAR_DAYS, ids, utc
from offers.synth.world import People
from policy.purposes import OFFER_RANKING

# --- users ---
MINOR_SHARE = 0.03  # users under 18 at the end of the period
UNKNOWN_BIRTH_SHARE = 0.02  # users without a birth date
OBJECTION_SHARE = 0.05  # users who object to direct marketing (GDPR art. 21) at some time
MINOR_AGE_YEARS = (13.0, 17.9)  # age range of minors at the end of the period
ADULT_MIN_AGE_YEARS = 18.1  # youngest adult at the end of the period (clear of the boundary)
ADULT_AGE_GAMMA = (2.0, 11.0)  # years above the minimum: Gamma(shape, scale), mean 22
MAX_AGE_YEARS = 95.0  # oldest user

# --- consents ---
CONSENT_MIX = {  # consent life cycle: share of users
    "never": 0.10,  # no consent row at all
    "other_only": 0.10,  # consent without offer_ranking (balance display, fraud alerts)
    "renew": 0.50,  # offer_ranking, re-authorised before each anniversary
    "expire": 0.12,  # offer_ranking once, left to expire
    "revoke": 0.10,  # offer_ranking, revoked mid-period (after 0 or 1 renewals)
    "reauth": 0.08,  # offer_ranking, lapses, then re-authorised after a gap
}
BALANCE_DISPLAY = "balance_display"  # one of policy.purposes.OTHER_CONSENTED_PURPOSES
FRAUD_ALERT = "fraud_alert"  # one of policy.purposes.OTHER_CONSENTED_PURPOSES
RANKING_PURPOSE_SETS = (  # (purposes, share) for users who consent to offer_ranking
    ((OFFER_RANKING,), 0.40),
    ((OFFER_RANKING, FRAUD_ALERT), 0.20),
    ((OFFER_RANKING, BALANCE_DISPLAY), 0.20),
    ((OFFER_RANKING, FRAUD_ALERT, BALANCE_DISPLAY), 0.20),
)
OTHER_PURPOSE_SETS = (  # (purposes, share) for users who consent to other purposes only
    ((BALANCE_DISPLAY,), 0.6),
    ((FRAUD_ALERT, BALANCE_DISPLAY), 0.4),
)
FIRST_GRANT_MAX_DAYS = 240  # first consents are granted within this many days of the start
VALIDITY_DAYS = ((365, 0.85), (180, 0.10), (90, 0.05))  # (validity, share) per consent row
EXPIRES_NULL_SHARE = 0.5  # 365-day rows written with expires_at null (the default)
CONSENT_LOOKBACK = ((365, 0.80), (180, 0.12), (90, 0.08))  # (lookback_days, share) per user
RENEW_LEAD_MAX_DAYS = 30  # a renewal comes up to this many days before expiry
REAUTH_GAP_DAYS = (10, 120)  # a lapsed consent is re-authorised after this many days
REVOKE_POSITION = (0.05, 0.95)  # where in the active window a revocation falls
KINDS = tuple(CONSENT_MIX)  # a user's life cycle is its index here


def users_frame(
    rng: np.random.Generator, people: People, t0: pd.Timestamp, days: int
) -> pd.DataFrame:
    """Ages (a few minors, a few unknown), countries and marketing objections."""
    n = people.n
    order = rng.permutation(n)
    n_minor, n_unknown = round(MINOR_SHARE * n), round(UNKNOWN_BIRTH_SHARE * n)
    minor, unknown = order[:n_minor], order[n_minor : n_minor + n_unknown]
    age = ADULT_MIN_AGE_YEARS + rng.gamma(*ADULT_AGE_GAMMA, n)
    age = np.minimum(age, MAX_AGE_YEARS)
    age[minor] = rng.uniform(*MINOR_AGE_YEARS, n_minor)
    end_day = (t0 + pd.Timedelta(days=days)).to_datetime64().astype("datetime64[D]")
    birth = (end_day - np.round(age * YEAR_DAYS).astype("timedelta64[D]")).astype(object)
    birth[unknown] = None
    objector = rng.permutation(n)[: round(OBJECTION_SHARE * n)]
    objection = np.full(n, NULL, dtype=np.int64)
    objection[objector] = rng.integers(0, days * DAY, len(objector))
    return pd.DataFrame(
        {
            USER_ID: ids("u", np.arange(n), n),
            BIRTH_DATE: pd.Series(birth, dtype=object),
            MARKETING_OBJECTION_AT: utc(objection, t0),
            COUNTRY: pd.Series(people.country, dtype=STRING_DTYPE),
        }
    )


def consents_frame(rng: np.random.Generator, n: int, t0: pd.Timestamp, days: int) -> pd.DataFrame:
    """Consent rows per life cycle; a chain step at a time, vectorised over users."""
    kind, purpose_idx, lookback, revoke_step = _user_choices(rng, n)
    user, granted, expires, revoked = _chains(rng, kind, revoke_step, days)
    purpose_sets = [s for s, _ in RANKING_PURPOSE_SETS] + [s for s, _ in OTHER_PURPOSE_SETS]
    return pd.DataFrame(
        {
            CONSENT_ID: ids("c", np.arange(len(user)), len(user)),
            USER_ID: ids("u", user, n),
            PURPOSES: pd.Series([list(purpose_sets[i]) for i in purpose_idx[user]], dtype=object),
            GRANTED_AT: utc(granted, t0),
            EXPIRES_AT: utc(expires, t0),
            REVOKED_AT: utc(revoked, t0),
            LOOKBACK_DAYS: pd.Series(lookback[user], dtype=np.int64),
        }
    )


def _user_choices(
    rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per user: life cycle, purpose set, look-back and the step at which a revoker revokes."""
    counts = np.round(np.array([CONSENT_MIX[k] for k in KINDS]) * n).astype(np.int64)
    counts[KINDS.index("renew")] += n - counts.sum()
    kind = np.empty(n, dtype=np.int64)
    kind[rng.permutation(n)] = np.repeat(np.arange(len(KINDS)), counts)

    n_ranking = len(RANKING_PURPOSE_SETS)
    purpose_idx = rng.choice(n_ranking, n, p=[p for _, p in RANKING_PURPOSE_SETS])
    other = kind == KINDS.index("other_only")
    purpose_idx[other] = n_ranking + rng.choice(
        len(OTHER_PURPOSE_SETS), int(other.sum()), p=[p for _, p in OTHER_PURPOSE_SETS]
    )
    lookback = np.array([d for d, _ in CONSENT_LOOKBACK])[
        rng.choice(len(CONSENT_LOOKBACK), n, p=[p for _, p in CONSENT_LOOKBACK])
    ]
    revoke_step = rng.integers(0, 2, n)  # revoking users renew 0 or 1 times first
    return kind, purpose_idx, lookback, revoke_step


def _chains(
    rng: np.random.Generator, kind: np.ndarray, revoke_step: np.ndarray, days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Consent rows (user, granted, expires, revoked) in seconds, ordered by user then grant."""
    end = days * DAY
    alive = kind != KINDS.index("never")
    grant = rng.integers(0, FIRST_GRANT_MAX_DAYS * DAY, len(kind))
    rows: list[tuple[np.ndarray, ...]] = []
    step = 0
    while True:
        alive &= grant < end
        who = np.flatnonzero(alive)
        if len(who) == 0:
            break
        g = grant[who]
        validity = np.array([d for d, _ in VALIDITY_DAYS])[
            rng.choice(len(VALIDITY_DAYS), len(who), p=[p for _, p in VALIDITY_DAYS])
        ]
        expiry = g + validity * DAY
        null_expiry = (validity == 365) & (rng.random(len(who)) < EXPIRES_NULL_SHARE)
        kw = kind[who]
        revoke = (kw == KINDS.index("revoke")) & (revoke_step[who] == step)
        window_end = np.minimum(expiry, end)
        at = g + (rng.uniform(*REVOKE_POSITION, len(who)) * (window_end - g)).astype(np.int64)
        rows.append((who, g, np.where(null_expiry, NULL, expiry), np.where(revoke, at, NULL)))

        lead = rng.integers(0, RENEW_LEAD_MAX_DAYS * DAY, len(who))
        gap = rng.integers(REAUTH_GAP_DAYS[0] * DAY, REAUTH_GAP_DAYS[1] * DAY, len(who))
        lapse = (kw == KINDS.index("reauth")) & (step == 0)
        grant[who] = np.where(lapse, expiry + gap, expiry - lead)
        stop = revoke | (kw == KINDS.index("expire"))
        alive[who[stop]] = False
        step += 1

    user, granted, expires, revoked = (np.concatenate(c) for c in zip(*rows, strict=True))
    order = np.lexsort((granted, user))
    return user[order], granted[order], expires[order], revoked[order]
