"""Feature tables in memory, as a snapshot or point-in-time source hands them to assembly."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pandas as pd

USER_MERCHANT = "user_merchant"
USER_MCC = "user_mcc"
USER = "user"
MERCHANT_POP = "merchant_pop"
MCC_POP = "mcc_pop"


@dataclass(frozen=True)
class FeatureTables:
    user_merchant: pd.DataFrame
    user_mcc: pd.DataFrame
    user: pd.DataFrame
    merchant_pop: pd.DataFrame
    mcc_pop: pd.DataFrame

    def as_dict(self) -> dict[str, pd.DataFrame]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def row_counts(self) -> dict[str, int]:
        return {name: len(frame) for name, frame in self.as_dict().items()}
