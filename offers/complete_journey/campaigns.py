"""Campaign coupons as offers, a receipt of a campaign as a slate, redemptions as labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import (
    ENDS_AT,
    MCC,
    MERCHANT_ID,
    OFFER_ID,
    OFFERS,
    REDEEMED_AT,
    REWARD,
    SHOWN_AT,
    SLATE_ID,
    STARTS_AT,
    TITLE,
    USER_ID,
)
from offers.complete_journey.codes import dominant
from offers.complete_journey.source import ImportReport, utc


def _two_digits(numbers: pd.Series) -> pd.Series:
    """Zero-padded text (an empty column stays a string column)."""
    return numbers.astype(int).astype(str).str.zfill(2)


def offer_id(campaign_id: int | pd.Series, coupon_upc: int | pd.Series) -> str | pd.Series:
    """`cj-c<campaign, 2 digits>-<upc>`: a coupon in a campaign (a UPC can recur across them)."""
    if isinstance(campaign_id, pd.Series):
        return "cj-c" + _two_digits(campaign_id) + "-" + coupon_upc.astype(str)
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
    merchant = dominant(known, "key", MERCHANT_ID)
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
            STARTS_AT: utc(offers["start_date"]).to_numpy(),
            ENDS_AT: (utc(offers["end_date"]) + pd.Timedelta(days=1)).to_numpy(),
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
            + _two_digits(slates["campaign_id"]),
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
            REDEEMED_AT: utc(redemptions["redemption_date"]),
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
            STARTS_AT: utc(out["start_date"]),
            ENDS_AT: utc(out["end_date"]) + pd.Timedelta(days=1),
            "households": out["households"].astype(int),
        }
    ).sort_values("campaign_id", kind="stable")
