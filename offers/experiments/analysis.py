"""The numbers of an experiment report, from logged exposures (pure: frames in, numbers out).

Why bootstrap over users: the user is the randomisation unit (serving.experiments assigns by
user id), and one user's slates are correlated; resampling slates would understate the
intervals. Each arm's users are resampled on their own (a stratified bootstrap).

Definitions (per arm): `users` with at least one logged slate, `slates`, `exposures` (shown
offers), `redemptions` (exposures with a redemption), `redemption_rate` = redemptions /
exposures, `redemptions_per_user`. Lift of arm A over arm B = redemptions per user in A minus
in B; incremental redemptions of A = that lift x A's users (what A's users redeemed beyond
what the same number of B's users would have).

Off-policy (IPS, SNIPS) of a candidate ranking: item-position inverse propensity scoring. A
logged offer at position r counts, weighted 1 / propensity, when the candidate ranks the same
offer at r; unbiased when an offer's redemption depends only on the user, the offer, the time
and its position (not on its neighbours), and every candidate slate has a logged propensity > 0
(serving.experiments' exploration guarantees it). The value is expected redemptions per slate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import chi2

from features.contract import ARM, OFFER_ID, POSITION, PROPENSITY, REDEEMED_AT, SLATE_ID, USER_ID

SLATES = "slates"
EXPOSURES_N = "exposures"
REDEMPTIONS = "redemptions"
REDEEMED = "redeemed"
DEFAULT_RESAMPLES = 2000
LEVEL = 0.95


class ReportError(ValueError):
    """Logged rows that cannot be analysed as one experiment (a user in two arms, say)."""


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def per_user(logged: pd.DataFrame) -> pd.DataFrame:
    """One row per user: arm, slates, exposures, redemptions. A user in two arms is refused."""
    arms = logged.groupby(USER_ID, sort=True)[ARM].nunique()
    if (arms > 1).any():
        users = arms.index[arms > 1].tolist()
        raise ReportError(f"users logged in more than one arm: {users[:5]} ({len(users)} users)")
    grouped = logged.assign(**{REDEEMED: logged[REDEEMED_AT].notna()}).groupby(USER_ID, sort=True)
    return pd.DataFrame(
        {
            ARM: grouped[ARM].first(),
            SLATES: grouped[SLATE_ID].nunique(),
            EXPOSURES_N: grouped.size(),
            REDEMPTIONS: grouped[REDEEMED].sum().astype(np.int64),
        }
    ).reset_index()


def arm_table(users: pd.DataFrame, arms: Sequence[str]) -> pd.DataFrame:
    """Per arm: users, slates, exposures, redemptions, redemption rate, redemptions per user."""
    sums = users.groupby(ARM)[[SLATES, EXPOSURES_N, REDEMPTIONS]].sum()
    table = sums.reindex(list(arms), fill_value=0)
    table.insert(0, "users", users.groupby(ARM).size().reindex(list(arms), fill_value=0))
    table["redemption_rate"] = table[REDEMPTIONS] / table[EXPOSURES_N].where(table[EXPOSURES_N] > 0)
    table["redemptions_per_user"] = table[REDEMPTIONS] / table["users"].where(table["users"] > 0)
    return table


def _boot_means(values: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Means of `resamples` bootstrap samples of `values` (multinomial counts, vectorised)."""
    n = len(values)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
    return counts @ values / n


def _interval(value: float, draws: np.ndarray) -> Estimate:
    alpha = (1 - LEVEL) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return Estimate(float(value), float(low), float(high))


def lift(
    users: pd.DataFrame,
    arm: str,
    base: str,
    rng: np.random.Generator,
    resamples: int = DEFAULT_RESAMPLES,
) -> tuple[Estimate, Estimate]:
    """(lift in redemptions per user, incremental redemptions) of `arm` over `base`, 95% CIs."""
    y = {a: users.loc[users[ARM] == a, REDEMPTIONS].to_numpy(np.float64) for a in (arm, base)}
    for a, values in y.items():
        if len(values) < 2:
            raise ReportError(f"arm {a} has {len(values)} users: too few to compare")
    diff = y[arm].mean() - y[base].mean()
    draws = _boot_means(y[arm], rng, resamples) - _boot_means(y[base], rng, resamples)
    per_user_lift = _interval(diff, draws)
    n = len(y[arm])
    incremental = Estimate(diff * n, per_user_lift.low * n, per_user_lift.high * n)
    return per_user_lift, incremental


def sample_ratio_mismatch(users: pd.DataFrame, shares: Mapping[str, float]) -> dict[str, float]:
    """Chi-square test of the users per arm against the configured shares (p < 0.001: suspect
    the assignment or the logging, not the treatment)."""
    observed = np.array([(users[ARM] == a).sum() for a in shares], dtype=np.float64)
    expected = observed.sum() * np.array(list(shares.values()))
    stat = float(((observed - expected) ** 2 / np.where(expected > 0, expected, 1)).sum())
    return {"chi2": stat, "df": len(shares) - 1, "p_value": float(chi2.sf(stat, len(shares) - 1))}


# ------------------------------------------------------------------------------ off-policy


def matches(logged: pd.DataFrame, rankings: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Per logged row: does the candidate rank the logged offer at the logged position?"""
    out = np.zeros(len(logged), dtype=bool)
    slates, offers, positions = (logged[c].to_numpy() for c in (SLATE_ID, OFFER_ID, POSITION))
    for i, (slate, offer, position) in enumerate(zip(slates, offers, positions, strict=True)):
        ranked = rankings.get(slate)
        if ranked is None:
            raise ReportError(f"no candidate ranking for logged slate {slate!r}")
        out[i] = int(position) <= len(ranked) and ranked[int(position) - 1] == offer
    return out


def off_policy(
    logged: pd.DataFrame,
    rankings: Mapping[str, Sequence[str]],
    rng: np.random.Generator,
    resamples: int = DEFAULT_RESAMPLES,
) -> dict[str, Estimate]:
    """IPS and SNIPS (expected redemptions per slate) of the candidate, with 95% bootstrap
    intervals over users; `logged` holds user_id, slate_id, position, offer_id, propensity,
    redeemed_at of the slates to evaluate on."""
    if logged[PROPENSITY].isna().any():
        raise ReportError("off-policy estimates need a propensity on every logged row")
    w = matches(logged, rankings) / logged[PROPENSITY].to_numpy(np.float64)
    y = logged[REDEEMED_AT].notna().to_numpy(np.float64)
    users, user_idx = np.unique(logged[USER_ID].to_numpy(str), return_inverse=True)
    k = int(logged[POSITION].max())
    pos = logged[POSITION].to_numpy(np.int64) - 1
    wy, ww, cnt = (np.zeros((len(users), k)) for _ in range(3))
    np.add.at(wy, (user_idx, pos), w * y)
    np.add.at(ww, (user_idx, pos), w)
    np.add.at(cnt, (user_idx, pos), 1.0)
    n_slates = logged.groupby(USER_ID, sort=True)[SLATE_ID].nunique().to_numpy(np.float64)
    point = _ips_values(wy.sum(0), ww.sum(0), cnt.sum(0), n_slates.sum())
    counts = rng.multinomial(len(users), np.full(len(users), 1 / len(users)), size=resamples)
    boot = _ips_values(counts @ wy, counts @ ww, counts @ cnt, counts @ n_slates)
    return {
        "ips": _interval(float(point[0]), boot[0]),
        "snips": _interval(float(point[1]), boot[1]),
    }


def _ips_values(
    wy: np.ndarray, ww: np.ndarray, cnt: np.ndarray, n_slates: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """IPS = sum(w y) / slates; SNIPS = sum over positions r of (slates that have r) x
    sum(w y) / sum(w) at r, per slate. Sums per position on the last axis (a position no
    logged row matches adds 0)."""
    totals = wy.sum(axis=-1)
    ips = totals / n_slates
    with np.errstate(invalid="ignore", divide="ignore"):
        per_position = np.where(ww > 0, wy / ww, 0.0)
    snips = (per_position * cnt).sum(axis=-1) / n_slates
    return ips, snips
