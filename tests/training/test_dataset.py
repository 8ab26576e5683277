"""Exposures -> lawful slates: labels, censoring, policy at shown_at, withdrawals, windows.

A tiny world written by hand (expected values worked out below), then invariants on the
1k-user synthetic set.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import contract as c
from features.erasures import record_erasure
from features.vector import FEATURE_COLUMNS
from policy import SENSITIVE_MCCS
from tests.support import frames as f
from tests.training.conftest import RUN_TIME
from training.config import TrainConfig
from training.dataset import REASON_OUTSIDE, build_dataset
from training.inputs import KEPT, REASON_SENSITIVE, REASON_WITHDRAWN
from training.splits import SPLITS, TEST, TRAIN, VALID, Windows, resolve_windows

CONFIG = TrainConfig(
    train_end="2025-06-01T00:00:00Z", valid_end="2025-08-01T00:00:00Z", test_end="2025-10-01"
)


def _offers() -> pd.DataFrame:
    rows = [  # offer, merchant, mcc, starts, ends
        ("o1", "m1", "5411", "2025-01-01", "2025-12-31"),
        ("o2", "m2", "5812", "2025-01-01", "2025-12-31"),
        ("o3", "m3", "5912", "2025-01-01", "2025-12-31"),  # pharmacy: sensitive
        ("o4", "m4", "5411", "2025-01-01", "2025-03-15"),
    ]
    frame = pd.DataFrame(rows, columns=[c.OFFER_ID, c.MERCHANT_ID, c.MCC, c.STARTS_AT, c.ENDS_AT])
    frame[c.TITLE] = "an offer"
    frame[c.REWARD] = 5.0
    for col in (c.STARTS_AT, c.ENDS_AT):
        frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[us, UTC]")
    return frame


def _exposures() -> pd.DataFrame:
    rows = [  # user, offer, shown_at, slate, redeemed_at
        # u1, train slate A
        ("u1", "o1", "2025-02-01 10:00", "A", "2025-02-10"),  # positive
        ("u1", "o2", "2025-02-01 10:00", "A", "2025-07-01"),  # after train end: censored
        ("u1", "o4", "2025-02-01 10:00", "A", "2025-04-01"),  # after the offer ended: negative
        ("u1", "o3", "2025-02-01 10:00", "A", None),  # sensitive offer: leaves
        # u1, no slate id: grouped by (user, shown_at)
        ("u1", "o1", "2025-03-01 09:00", None, None),
        ("u1", "o2", "2025-03-01 09:00", None, "2025-03-02"),
        # u1, validation slate B
        ("u1", "o1", "2025-06-15 12:00", "B", "2025-06-20"),  # positive
        ("u1", "o2", "2025-06-15 12:00", "B", "2025-08-15"),  # after validation end: censored
        # u1, test slate C
        ("u1", "o1", "2025-08-15 12:00", "C", "2025-08-10"),  # redeemed before shown: negative
        ("u1", "o2", "2025-08-15 12:00", "C", "2025-09-01"),  # positive (test labels uncensored)
        # u1, after the test window
        ("u1", "o1", "2025-11-01 12:00", "D", None),
        ("u2", "o1", "2025-02-01 10:00", "E", "2025-02-03"),  # no consent
        ("u2", "o2", "2025-02-01 10:00", "E", None),
        ("u3", "o1", "2025-02-01 10:00", "F", None),  # minor
        ("u4", "o1", "2025-02-01 10:00", "G", "2025-02-02"),  # revoked before the run
        ("u4", "o2", "2025-02-01 10:00", "G", None),
        ("u5", "o1", "2025-02-01 10:00", "H", "2025-02-02"),  # erased before the run
        ("u6", "o1", "2025-03-01 10:00", "I", None),  # before their consent
        ("u6", "o1", "2025-07-01 10:00", "J", "2025-07-02"),  # validation
        ("u6", "o2", "2025-07-01 10:00", "J", None),
    ]
    frame = pd.DataFrame(
        rows, columns=[c.USER_ID, c.OFFER_ID, c.SHOWN_AT, c.SLATE_ID, c.REDEEMED_AT]
    )
    for col in (c.SHOWN_AT, c.REDEEMED_AT):
        frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[us, UTC]")
    frame[c.POSITION] = frame.groupby([c.USER_ID, c.SHOWN_AT]).cumcount() + 1
    return frame


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    data, erasures = tmp_path / "data", tmp_path / "erasures"
    data.mkdir()
    txns = f.transactions(
        [
            ("u1", "2025-01-10", 20.0, "m1", "5411"),
            ("u1", "2025-01-20", 30.0, "m1", "5411"),
            ("u1", "2025-02-05", 40.0, "m1", "5411"),  # after slate A: counts only later
            ("u1", "2025-01-15", 15.0, "m2", "5812"),
            ("u1", "2025-01-16", 99.0, "m3", "5912"),  # sensitive: never a feature
            ("u4", "2025-01-10", 20.0, "m1", "5411"),
            ("u5", "2025-01-10", 20.0, "m2", "5812"),
            ("u6", "2025-06-01", 25.0, "m1", "5411"),
        ]
    )
    ids = ["u1", "u2", "u3", "u4", "u5", "u6"]
    users = f.users(ids, birth={"u3": dt.date(2010, 1, 1)})
    consents = f.consents(
        [
            {c.USER_ID: u, c.GRANTED_AT: "2024-12-01", c.PURPOSES: ["offer_ranking"]}
            for u in ("u1", "u3", "u5")
        ]
        + [
            {c.USER_ID: "u4", c.GRANTED_AT: "2024-12-01", c.REVOKED_AT: "2025-10-01"},
            {c.USER_ID: "u6", c.GRANTED_AT: "2025-05-01"},
        ]
    )
    for name, frame in {
        c.TRANSACTIONS: txns,
        c.USERS: users,
        c.CONSENTS: consents,
        c.OFFERS: _offers(),
        c.EXPOSURES: _exposures(),
    }.items():
        frame.to_parquet(data / f"{name}.parquet", index=False)
    record_erasure(erasures, "u5", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    return data, erasures


def test_exclusions_by_reason(tiny: tuple[Path, Path]) -> None:
    data, erasures = tiny
    built = build_dataset(data, CONFIG, erasures_dir=erasures, run_time=RUN_TIME)
    assert built.exclusions == {
        KEPT: 11,
        "MINOR": 1,
        "NO_CONSENT": 3,  # u2's slate and u6 before the grant
        REASON_OUTSIDE: 1,
        REASON_SENSITIVE: 1,
        REASON_WITHDRAWN: 3,  # u4 (revoked) and u5 (erased), whatever shown_at said
    }
    assert sum(built.exclusions.values()) == built.n_exposures == 20
    kept_users = {u for s in built.splits.values() for u in s.user_id}
    assert kept_users == {"u1", "u6"}
    offers = {o for s in built.splits.values() for o in s.offer_id}
    assert "o3" not in offers


def test_labels_windows_groups_and_censoring(tiny: tuple[Path, Path]) -> None:
    data, erasures = tiny
    built = build_dataset(data, CONFIG, erasures_dir=erasures, run_time=RUN_TIME)
    assert built.windows.train_end == pd.Timestamp("2025-06-01", tz="UTC")
    assert built.windows.test_end == pd.Timestamp("2025-10-01", tz="UTC")

    def labelled(split: str) -> dict[tuple[str, str, str], float]:
        s = built.splits[split]
        shown = pd.to_datetime(s.shown_at, utc=True).strftime("%m-%d")
        return dict(zip(zip(s.user_id, s.offer_id, shown, strict=True), s.y, strict=True))

    assert labelled(TRAIN) == {
        ("u1", "o1", "02-01"): 1.0,
        ("u1", "o2", "02-01"): 0.0,  # redeemed after the train window: censored
        ("u1", "o4", "02-01"): 0.0,  # redeemed after the offer's end
        ("u1", "o1", "03-01"): 0.0,
        ("u1", "o2", "03-01"): 1.0,
    }
    assert labelled(VALID) == {
        ("u1", "o1", "06-15"): 1.0,
        ("u1", "o2", "06-15"): 0.0,  # censored at the validation end
        ("u6", "o1", "07-01"): 1.0,
        ("u6", "o2", "07-01"): 0.0,
    }
    assert labelled(TEST) == {("u1", "o1", "08-15"): 0.0, ("u1", "o2", "08-15"): 1.0}
    assert built.splits[TRAIN].n_censored == 1 and built.splits[VALID].n_censored == 1
    assert sorted(built.splits[TRAIN].group.tolist()) == [2, 3]  # slate A, and (u1, 03-01)
    assert built.splits[VALID].group.tolist() == [2, 2]


def test_features_are_point_in_time_and_assembled(tiny: tuple[Path, Path]) -> None:
    data, erasures = tiny
    built = build_dataset(data, CONFIG, erasures_dir=erasures, run_time=RUN_TIME)
    n_365 = FEATURE_COLUMNS.index("um_n_365d")

    def at_merchant(split: str, user: str, offer: str) -> float:
        s = built.splits[split]
        row = np.flatnonzero((s.user_id == user) & (s.offer_id == offer))[0]
        return float(s.X[row, n_365])

    assert at_merchant(TRAIN, "u1", "o1") == 2.0  # the 02-05 purchase is after slate A
    assert at_merchant(VALID, "u1", "o1") == 3.0
    assert at_merchant(VALID, "u6", "o1") == 1.0
    assert built.splits[TRAIN].X.shape[1] == len(FEATURE_COLUMNS)
    # segments: history starts at the first (non-sensitive) purchase; under 30 days is "new"
    train = built.splits[TRAIN]
    shown = pd.to_datetime(train.shown_at, utc=True).strftime("%m-%d")
    new = dict(zip(shown, train.new_user, strict=True))
    assert new == {"02-01": True, "03-01": False}  # 22 and 50 days after 01-10
    assert not built.splits[VALID].new_user.any()  # u6: 30 days and 10 hours
    assert built.pairs_id.startswith("pit-")


def test_only_requested_splits_and_given_windows(tiny: tuple[Path, Path]) -> None:
    data, erasures = tiny
    windows = Windows.from_dict(
        {
            "train_start": "2025-01-01T00:00:00+00:00",
            "train_end": "2025-06-01T00:00:00+00:00",
            "valid_end": "2025-08-01T00:00:00+00:00",
            "test_end": "2025-10-01T00:00:00+00:00",
        }
    )
    built = build_dataset(
        data,
        TrainConfig(),
        erasures_dir=erasures,
        run_time=RUN_TIME,
        windows=windows,
        splits=(TEST,),
    )
    assert list(built.splits) == [TEST] and built.splits[TEST].n_rows == 2
    assert Windows.from_dict(windows.as_dict()) == windows
    with pytest.raises(ValueError, match="out of order"):
        Windows(
            *(
                pd.Timestamp(t, tz="UTC")
                for t in ("2025-02-01", "2025-01-01", "2025-03-01", "2025-04-01")
            )
        )


def test_default_windows_count_back_from_the_last_exposure() -> None:
    shown = pd.Series(pd.to_datetime(["2025-01-01 10:00", "2025-12-30 18:00"], utc=True))
    w = resolve_windows(shown, TrainConfig(test_days=30, valid_days=20, train_days=100))
    assert w.test_end == pd.Timestamp("2025-12-31", tz="UTC")
    assert w.valid_end == w.test_end - pd.Timedelta(days=30)
    assert w.train_end == w.valid_end - pd.Timedelta(days=20)
    assert w.train_start == w.train_end - pd.Timedelta(days=100)
    with pytest.raises(ValueError, match="no exposure"):
        resolve_windows(shown.iloc[:0], TrainConfig())


def test_synthetic_set_is_lawful_and_well_formed(synth_data, synth_dir: Path) -> None:
    data = synth_data
    assert data.exclusions[KEPT] > 0 and data.exclusions[REASON_WITHDRAWN] > 0
    assert data.exclusions[REASON_SENSITIVE] > 0
    assert sum(data.exclusions.values()) == data.n_exposures
    offers = pd.read_parquet(synth_dir / "offers.parquet")
    sensitive = set(offers.loc[offers[c.MCC].isin(sorted(SENSITIVE_MCCS)), c.OFFER_ID])
    total = 0
    for name in SPLITS:
        s = data.splits[name]
        lo, hi = data.windows.bounds(name)
        shown = pd.to_datetime(s.shown_at, utc=True)
        assert (shown >= lo).all() and (shown < hi).all()
        assert s.group.sum() == s.n_rows and (s.group > 0).all()
        for col in (s.user_id, s.shown_at):  # every slate is one user at one time
            assert (np.asarray(col) == np.repeat(s.per_slate(col), s.group)).all()
        assert set(np.unique(s.y)) <= {0.0, 1.0}
        assert s.oracle is not None and np.isfinite(s.oracle).all()
        assert not set(s.offer_id) & sensitive
        total += s.n_rows
    assert total == data.exclusions[KEPT]
