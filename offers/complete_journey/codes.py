"""Products onto merchants and pseudo-MCCs: named sensitive categories, every other one hashed."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from features.contract import (
    MCC,
    MERCHANT_ID,
)
from offers.complete_journey.source import hash_int
from policy.mcc import MCC_TIERS

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
        slot = hash_int(name) % len(free)
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


def product_table(products: pd.DataFrame) -> pd.DataFrame:
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


def dominant(frame: pd.DataFrame, key: str, value: str, weight: str | None = None) -> pd.Series:
    """The `value` with most rows (or most `weight`) per `key`; ties go to the smallest value."""
    grouped = frame.groupby([key, value])
    counts = (grouped[weight].sum() if weight else grouped.size()).rename("n").reset_index()
    counts = counts.sort_values([key, "n", value], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates(key).set_index(key)[value]


def merchant_mccs(lines: pd.DataFrame, products: pd.DataFrame) -> pd.Series:
    """merchant_id -> the pseudo-MCC of most of its sales (all households, the whole year);
    a manufacturer nobody bought from: the pseudo-MCC of most of its catalogued products.

    By catalogue count alone the store brand (mfr-69), whose many health products share one
    code, would turn its 253 coupons from every aisle into pharmacy offers.
    """
    sold = lines[["product_id", "sales_value"]].merge(products, on="product_id", how="inner")
    by_spend = dominant(sold, MERCHANT_ID, MCC, weight="sales_value")
    by_count = dominant(products, MERCHANT_ID, MCC)
    return by_spend.combine_first(by_count)
