"""policy_version: a stable hash of the rules, so every artifact names the rules it obeyed."""

from __future__ import annotations

import hashlib
import json
from functools import cache

RULES_REVISION = 3  # bump when decision logic changes without a change in the data below
# 2: the latest authorisation decides consent state; times normalised to UTC
# 3: banned and not-served purposes recognised in any case, spacing or separator


@cache
def policy_version() -> str:
    """Read lazily (never at import) so that tests can change a rule and clear the cache."""
    from policy.consent import ADULT_AGE, DEFAULT_LOOKBACK_DAYS, DEFAULT_VALIDITY
    from policy.decision import LEGAL_REFS, Reason
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
        "min_age": ADULT_AGE,
        "reasons": [r.value for r in Reason],  # the decision table's order
        "legal_refs": {r.value: list(refs) for r, refs in LEGAL_REFS.items()},
    }
    digest = hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()
    return f"p1-{digest[:12]}"
