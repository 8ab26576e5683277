"""policy_version: a stable hash of the rules, so every artifact names the rules it obeyed."""

from __future__ import annotations

import hashlib
import json
from functools import cache

RULES_REVISION = 1  # bump when decision logic changes without a change in the data below


@cache
def policy_version() -> str:
    from policy.consent import DEFAULT_LOOKBACK_DAYS, DEFAULT_VALIDITY
    from policy.mcc import EXCLUDED_TIERS, MCC_TIERS
    from policy.purposes import BANNED_PURPOSES, OTHER_CONSENTED_PURPOSES, SERVED_PURPOSES

    rules = {
        "revision": RULES_REVISION,
        "served": sorted(SERVED_PURPOSES),
        "not_served": sorted(OTHER_CONSENTED_PURPOSES),
        "banned": sorted(BANNED_PURPOSES),
        "mcc": sorted((m.mcc, str(m.tier)) for m in MCC_TIERS),
        "excluded_tiers": sorted(str(t) for t in EXCLUDED_TIERS),
        "validity_days": DEFAULT_VALIDITY.days,
        "lookback_days": DEFAULT_LOOKBACK_DAYS,
        "min_age": 18,
    }
    digest = hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()
    return f"p1-{digest[:12]}"
