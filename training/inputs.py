"""The contract tables training reads, and the policy's verdict on each row it might use.

Shared by the training set (training/dataset.py) and `predict` (training/predict.py): both
read the same validated tables and apply the same rules, first failing rule wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import (
    CONSENTS,
    EXPOSURES,
    OFFER_ID,
    OFFERS,
    ORACLE,
    P_REDEEM,
    SHOWN_AT,
    TRANSACTIONS,
    USER_ID,
    USERS,
)
from features.erasures import erased_since_always, is_erased, read_erasures
from features.io import MissingTableError, file_digest, table_path
from features.policy_frames import consents_by_user, user_facts
from features.validate import load_tables
from policy import OFFER_RANKING, SENSITIVE_MCCS, Reason, decide

KEPT = Reason.OK.value
REASON_WITHDRAWN = "WITHDRAWN_OR_ERASED_AT_RUN"  # consent withdrawn or user erased as of the run
REASON_SENSITIVE = "SENSITIVE_MCC_OFFER"  # offer from a sensitive-tier merchant category


@dataclass
class Inputs:
    users: pd.DataFrame
    consents: pd.DataFrame
    offers: pd.DataFrame
    exposures: pd.DataFrame | None
    oracle: pd.DataFrame | None
    digests: dict[str, str]


def load_inputs(data_dir: str | Path, with_exposures: bool = True) -> Inputs:
    """Typed, validated contract tables (features.validate); transactions stay on disk."""
    data_dir = Path(data_dir)
    wanted = (USERS, CONSENTS, OFFERS) + ((EXPOSURES,) if with_exposures else ())
    tables = load_tables(data_dir, tables=wanted)
    oracle = None
    if with_exposures:
        try:
            oracle_path = table_path(data_dir, ORACLE)
        except MissingTableError:
            oracle_path = None
        if oracle_path is not None:
            oracle = pd.read_parquet(oracle_path, columns=[USER_ID, OFFER_ID, SHOWN_AT, P_REDEEM])
    digests = {t: file_digest(table_path(data_dir, t)) for t in (TRANSACTIONS, *wanted)}
    return Inputs(
        users=tables[USERS],
        consents=tables[CONSENTS],
        offers=tables[OFFERS],
        exposures=tables.get(EXPOSURES),
        oracle=oracle,
        digests=digests,
    )


def read_erasures_if_any(erasures_dir: str | Path | None) -> dict[str, datetime]:
    return read_erasures(erasures_dir) if erasures_dir else {}


# ------------------------------------------------------------------------------- policy


def policy_reasons(
    user_ids: np.ndarray,
    shown_at: pd.Series,
    offer_mcc: np.ndarray,
    users: pd.DataFrame,
    consents: pd.DataFrame,
    erased: Mapping[str, datetime],
    run_time: datetime,
) -> np.ndarray:
    """Reason per row: KEPT, or why the row may not be used (first failing rule wins).

    Order: withdrawn or erased as of the run (final), then the policy decision at shown_at
    (its reason code), then a sensitive-MCC offer.
    """
    by_user = consents_by_user(consents)
    facts = user_facts(users, erased_since_always(erased))  # recorded: erased at every instant
    user_ids = np.asarray(user_ids, dtype=object)
    stamps = pd.Series(shown_at).reset_index(drop=True)

    withdrawn: dict[str, bool] = {}
    for user in pd.unique(user_ids):
        at_run = decide(OFFER_RANKING, run_time, by_user.get(user, ()), facts.get(user))
        withdrawn[user] = is_erased(erased, user) or (at_run.reason is Reason.CONSENT_REVOKED)

    pair_codes, pair_keys = pd.factorize(
        pd.MultiIndex.from_arrays([user_ids, stamps.to_numpy()]), sort=False
    )
    pair_reason = np.empty(len(pair_keys), dtype=object)
    for i, (user, ts) in enumerate(pair_keys):
        if withdrawn[user]:
            pair_reason[i] = REASON_WITHDRAWN
            continue
        when = pd.Timestamp(ts).to_pydatetime()
        decision = decide(OFFER_RANKING, when, by_user.get(user, ()), facts.get(user))
        pair_reason[i] = decision.reason.value
    reasons = pair_reason[pair_codes] if len(pair_codes) else np.array([], dtype=object)
    sensitive = np.isin(np.asarray(offer_mcc, dtype=object).astype(str), sorted(SENSITIVE_MCCS))
    return np.where((reasons == KEPT) & sensitive, REASON_SENSITIVE, reasons)
