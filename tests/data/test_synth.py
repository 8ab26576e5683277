"""Synthetic data: deterministic, realistic in the ways later stages rely on, contract-clean."""

from __future__ import annotations

import hashlib
import re
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from features.contract import (
    AMOUNT,
    ARM,
    BIRTH_DATE,
    CONSENT_ID,
    CONSENTS,
    ENDS_AT,
    EXPERIMENT,
    EXPIRES_AT,
    EXPOSURES,
    GRANTED_AT,
    LOOKBACK_DAYS,
    MARKETING_OBJECTION_AT,
    MCC,
    MERCHANT_ID,
    OFFER_ID,
    OFFERS,
    ORACLE,
    P_REDEEM,
    POSITION,
    PROPENSITY,
    PURPOSES,
    REDEEMED_AT,
    REVOKED_AT,
    SCHEMAS,
    SHOWN_AT,
    SLATE_ID,
    STARTS_AT,
    TABLES,
    TRANSACTIONS,
    TS,
    TXN_ID,
    USER_ID,
    USERS,
    Kind,
)
from offers.cli import app
from offers.synth import generate, write_synthetic
from policy.consent import is_minor
from policy.mcc import SENSITIVE_MCCS, mcc_tier
from policy.purposes import OFFER_RANKING, OTHER_CONSENTED_PURPOSES

N_USERS = 2000  # enough users for shares to sit within the tolerances below
START = pd.Timestamp("2024-01-01", tz="UTC")
DAYS = 730
END = START + pd.Timedelta(days=DAYS)
UTC_US = "datetime64[us, UTC]"


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    return generate(N_USERS, seed=7)


@pytest.fixture(scope="module")
def active_consent_users(data: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Consent rows covering offer_ranking, with the effective (defaulted) expiry."""
    c = data[CONSENTS]
    c = c[c[PURPOSES].map(lambda p: OFFER_RANKING in p)].copy()
    default = c[GRANTED_AT] + pd.Timedelta(days=365)
    c["effective"] = (
        c[EXPIRES_AT]
        .fillna(default)
        .where(c[EXPIRES_AT].isna() | (c[EXPIRES_AT] <= default), default)
    )
    return c


def test_same_seed_same_frames_other_seed_differs() -> None:
    a, b, c = generate(300, seed=1), generate(300, seed=1), generate(300, seed=2)
    assert set(a) == set(TABLES) | {ORACLE}
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    for name in (TRANSACTIONS, USERS, CONSENTS, OFFERS, EXPOSURES):
        assert not a[name].equals(c[name]), name


# sha256 of generate(300, seed=3), every table as CSV in name order, floats to 10 significant
# digits: a refactor that moves one random draw changes it. Full-precision floats made the pin
# depend on the CPU (NumPy's SIMD exp/log differ in the last bit between AVX-512 and AVX2
# machines), so the digest rounds below that noise.
PINNED_DIGEST = "9f1ef741297faac2a40add468107996dc0b14f9368210207ca95caaaf9bbf496"
FLOAT_FORMAT = "%.10g"


def test_output_pinned_by_digest() -> None:
    digest = hashlib.sha256()
    frames = generate(300, seed=3)
    for name in sorted(frames):
        digest.update(name.encode())
        digest.update(frames[name].to_csv(index=False, float_format=FLOAT_FORMAT).encode())
    assert digest.hexdigest() == PINNED_DIGEST


EXPERIMENT_COLUMNS = (EXPERIMENT, ARM, PROPENSITY)


def test_types(data: dict[str, pd.DataFrame]) -> None:
    for table in TABLES:
        frame = data[table]
        for col in SCHEMAS[table]:
            if col.name in EXPERIMENT_COLUMNS:
                continue  # written by the offer service in an experiment, never by synth
            assert col.name in frame.columns, (table, col.name)
            if col.kind is Kind.TIMESTAMP:
                assert str(frame[col.name].dtype) == UTC_US, (table, col.name)
            elif col.kind is Kind.STRING:
                assert pd.api.types.is_string_dtype(frame[col.name].dtype), (table, col.name)
    assert data[CONSENTS][LOOKBACK_DAYS].dtype == np.int64
    assert data[EXPOSURES][POSITION].dtype == np.int64
    birth = data[USERS][BIRTH_DATE]
    assert birth.dtype == object
    assert all(b is None or type(b) is date for b in birth)
    assert all(
        isinstance(p, list) and all(isinstance(x, str) for x in p) for p in data[CONSENTS][PURPOSES]
    )
    assert str(data[ORACLE][SHOWN_AT].dtype) == UTC_US
    patterns = {
        (USERS, USER_ID): r"u\d{6}",
        (TRANSACTIONS, TXN_ID): r"t\d{9}",
        (TRANSACTIONS, MERCHANT_ID): r"m\d{4}",
        (OFFERS, OFFER_ID): r"o\d{4}",
        (CONSENTS, CONSENT_ID): r"c\d{7}",
        (EXPOSURES, SLATE_ID): r"s\d{7}",
    }
    for (table, column), pattern in patterns.items():
        assert data[table][column].str.fullmatch(pattern).all(), (table, column)


def test_contract_rules_hold(data: dict[str, pd.DataFrame]) -> None:
    t, u, c, o, e = (data[n] for n in (TRANSACTIONS, USERS, CONSENTS, OFFERS, EXPOSURES))
    for frame, key in ((t, TXN_ID), (u, USER_ID), (c, CONSENT_ID), (o, OFFER_ID)):
        assert frame[key].is_unique, key
    for frame in (t, o):
        assert frame[MCC].str.fullmatch(r"\d{4}").all()
    assert np.isfinite(t[AMOUNT]).all() and (t[AMOUNT] != 0).all()
    assert (c[EXPIRES_AT].isna() | (c[EXPIRES_AT] > c[GRANTED_AT])).all()
    assert (c[REVOKED_AT].isna() | (c[REVOKED_AT] >= c[GRANTED_AT])).all()
    assert (o[ENDS_AT] > o[STARTS_AT]).all()
    known = set(u[USER_ID])
    for frame in (t, c, e, data[ORACLE]):
        assert frame[USER_ID].isin(known).all()
    assert e[OFFER_ID].isin(set(o[OFFER_ID])).all()
    for frame, cols in ((t, [TS]), (c, [GRANTED_AT]), (e, [SHOWN_AT])):
        for col in cols:
            assert (
                frame[col].notna().all()
                and (frame[col] >= START).all()
                and (frame[col] < END).all()
            )


def test_sensitive_share_and_every_tier(data: dict[str, pd.DataFrame]) -> None:
    mcc = data[TRANSACTIONS][MCC]
    sensitive = mcc.isin(SENSITIVE_MCCS)
    assert 0.03 <= sensitive.mean() <= 0.05
    tiers = {str(mcc_tier(m)) for m in mcc[sensitive].unique()}
    assert tiers == {"A", "B", "C"}


def test_spending_shape(data: dict[str, pd.DataFrame]) -> None:
    t = data[TRANSACTIONS]
    per_user_year = len(t) / N_USERS / (DAYS / 365.25)
    assert 40 <= per_user_year <= 60  # TXNS_PER_USER_YEAR = 50 (+ ~2% refunds)
    refunds = t[t[AMOUNT] < 0]
    assert 0.01 <= len(refunds) / len(t) <= 0.03
    # every refund follows a purchase by the same user at the same merchant
    first_buy = t[t[AMOUNT] > 0].groupby([USER_ID, MERCHANT_ID])[TS].min()
    joined = refunds.join(first_buy.rename("first"), on=[USER_ID, MERCHANT_ID])
    assert (joined["first"] < joined[TS]).all()
    weekend = t[TS].dt.day_of_week >= 5
    assert weekend.mean() > 2 / 7 + 0.01  # weekly rhythm
    # Zipf: within a category a few merchants take most of the trade
    grocery = t.loc[t[MCC] == "5411", MERCHANT_ID].value_counts(normalize=True)
    assert grocery.iloc[0] > 5 * grocery.median()


def test_consent_mix(data: dict[str, pd.DataFrame], active_consent_users: pd.DataFrame) -> None:
    u, c = data[USERS], data[CONSENTS]

    def share(users: pd.Series) -> float:
        return users.nunique() / N_USERS

    assert 0.77 <= share(active_consent_users[USER_ID]) <= 0.83
    assert 0.08 <= 1 - share(c[USER_ID]) <= 0.12  # never consent
    only_balance = c[c[PURPOSES].map(lambda p: p == ["balance_display"])]
    assert share(only_balance[USER_ID]) > 0.02
    assert set().union(*c[PURPOSES].map(set)) <= {OFFER_RANKING} | OTHER_CONSENTED_PURPOSES
    assert 0.05 <= share(c.loc[c[REVOKED_AT].notna(), USER_ID]) <= 0.15
    # re-authorisation: a new row, granted after the previous one lapsed
    r = active_consent_users.sort_values([USER_ID, GRANTED_AT])
    prev_end = r.groupby(USER_ID)["effective"].shift()
    assert share(r.loc[r[GRANTED_AT] > prev_end, USER_ID]) > 0.03
    # expiry: users whose last offer_ranking consent lapsed unrevoked inside the period
    last = r.groupby(USER_ID).tail(1)
    lapsed = last[(last["effective"] < END) & last[REVOKED_AT].isna()]
    assert share(lapsed[USER_ID]) > 0.05
    assert c[EXPIRES_AT].isna().any() and c[EXPIRES_AT].notna().any()
    lookback = c[LOOKBACK_DAYS].value_counts(normalize=True)
    assert lookback[365] > 0.7 and {90, 180} <= set(lookback.index)
    assert 0.04 <= u[MARKETING_OBJECTION_AT].notna().mean() <= 0.06


def test_minors_and_unknown_ages(data: dict[str, pd.DataFrame]) -> None:
    birth = data[USERS][BIRTH_DATE]
    end = END.to_pydatetime() - timedelta(microseconds=1)
    minors = sum(is_minor(b, end) for b in birth.dropna())
    assert 0.02 <= minors / N_USERS <= 0.04
    assert 0.01 <= birth.isna().mean() <= 0.03


def test_offers(data: dict[str, pd.DataFrame]) -> None:
    o, t = data[OFFERS], data[TRANSACTIONS]
    assert 100 <= len(o) <= 300
    assert o[MERCHANT_ID].isin(set(t[MERCHANT_ID])).all()
    assert 1 <= o[MCC].isin(SENSITIVE_MCCS).sum() <= 0.05 * len(o)
    weeks = (o[ENDS_AT] - o[STARTS_AT]).dt.days / 7
    assert weeks.between(2, 8).all()
    assert o["reward"].between(1, 20).all()
    assert o[MCC].nunique() >= 15


def test_slates(data: dict[str, pd.DataFrame]) -> None:
    e, o = data[EXPOSURES], data[OFFERS].set_index(OFFER_ID)
    sizes = e.groupby(SLATE_ID).size()
    assert sizes.between(5, 20).all()
    slates_per_user = e.groupby(USER_ID)[SLATE_ID].nunique()
    assert 4 <= slates_per_user.mean() <= 8
    assert not e.duplicated([SLATE_ID, OFFER_ID]).any()
    assert (
        e.groupby(SLATE_ID)[POSITION].agg(lambda p: sorted(p) == list(range(1, len(p) + 1)))
    ).all()
    assert e.groupby(SLATE_ID)[[USER_ID, SHOWN_AT]].nunique().eq(1).all().all()
    active = (e[SHOWN_AT] >= e[OFFER_ID].map(o[STARTS_AT])) & (
        e[SHOWN_AT] < e[OFFER_ID].map(o[ENDS_AT])
    )
    assert active.all()
    assert e[OFFER_ID].map(o[MCC]).isin(SENSITIVE_MCCS).mean() < 0.03  # rarely shown
    # every consent state is shown offers: filtering is the pipeline's job
    consenting = set(data[CONSENTS][USER_ID])
    assert not set(e[USER_ID]) <= consenting


def test_oracle_matches_exposures(data: dict[str, pd.DataFrame]) -> None:
    e, q = data[EXPOSURES], data[ORACLE]
    key = [USER_ID, OFFER_ID, SHOWN_AT]
    assert list(q.columns) == [*key, P_REDEEM]
    assert not q.duplicated(key).any()
    merged = e.merge(q, on=key, how="outer", indicator=True, validate="one_to_one")
    assert (merged["_merge"] == "both").all() and len(merged) == len(e)
    assert q[P_REDEEM].between(0, 1).all()


def test_redemption_rate_and_signal(data: dict[str, pd.DataFrame]) -> None:
    e, q = data[EXPOSURES], data[ORACLE]
    redeemed = e[REDEEMED_AT].notna()
    assert 0.05 <= redeemed.mean() <= 0.15
    p = q[P_REDEEM].to_numpy()
    assert p[redeemed].mean() > 2 * p[~redeemed].mean()
    by_position = redeemed.groupby(e[POSITION]).mean()
    assert by_position.loc[1] > by_position.loc[10]  # position bias


def _redeemed_within_window(frames: dict[str, pd.DataFrame]) -> int:
    e = frames[EXPOSURES]
    ends = e[OFFER_ID].map(frames[OFFERS].set_index(OFFER_ID)[ENDS_AT])
    r = e[REDEEMED_AT].notna()
    assert (e.loc[r, REDEEMED_AT] >= e.loc[r, SHOWN_AT]).all()
    assert (e.loc[r, REDEEMED_AT] <= ends[r]).all()
    return int(r.sum())


def test_redeemed_within_shown_and_offer_end(data: dict[str, pd.DataFrame]) -> None:
    assert _redeemed_within_window(data) > 0  # and there were redemptions to check


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 150))
def test_redeemed_within_window_any_seed(seed: int, n_users: int) -> None:
    _redeemed_within_window(generate(n_users, seed=seed))


def test_write_and_cli(tmp_path) -> None:
    counts = write_synthetic(tmp_path / "a", n_users=120, seed=3)
    for name, n in counts.items():
        assert len(pd.read_parquet(tmp_path / "a" / f"{name}.parquet")) == n
    back = pd.read_parquet(tmp_path / "a" / f"{CONSENTS}.parquet")
    assert isinstance(back[PURPOSES].iloc[0][0], str)
    result = CliRunner().invoke(
        app, ["synth", "--out", str(tmp_path / "b"), "--users", "120", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    for name, n in counts.items():
        assert re.search(rf"^{name}\s+{n:,}$", result.output, re.MULTILINE), result.output
