"""What a run leaves for people: metrics table, feature-importance plot, model card, and the
synthetic input example. Kept apart from train.py so training reads top to bottom.

Nothing here may carry a customer row or a user id: the input example is made up from round
numbers, the plot and tables hold aggregates only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features import definitions as fd
from features.vector import FEATURE_COLUMNS, feature_docs
from policy import BANNED_PURPOSES, OFFER_RANKING

MODEL = "model"
COUNT_PREFIX = "n_"  # n_slates, n_rows, n_positive, ...: counts, shown as integers
TABLE_METRICS = (
    "ndcg_at_5",
    "ndcg_at_10",
    "map_at_10",
    "recall_at_5",
    "recall_at_10",
    "roc_auc",
    "n_slates",
)

# Made-up, plausible values per feature (never computed from data): the model's input example.
_AFFINITY_EXAMPLE = {
    "n_30d": 1.0,
    "n_90d": 3.0,
    "n_365d": 10.0,
    "spend_30d": 25.0,
    "spend_90d": 80.0,
    "spend_365d": 300.0,
    "days_since_last": 12.0,
    "decayed_spend": 40.0,
    "share_365d": 0.05,
    "trend": 0.1,
}
_OTHER_EXAMPLE = {
    "u_active_days_365d": 90.0,
    "u_spend_365d": 6000.0,
    "u_n_txn_365d": 150.0,
    "u_n_merchants_365d": 40.0,
    "u_entropy_365d": 3.0,
    fd.MERCHANT_POPULARITY: 0.02,
    fd.MCC_POPULARITY: 0.3,
    "o_reward": 5.0,
    "o_days_left": 21.0,
    "o_days_since_start": 7.0,
    "o_mcc": 5411.0,
}


def synthetic_input_example(columns: Sequence[str] = FEATURE_COLUMNS) -> pd.DataFrame:
    """Two made-up rows (a regular at the merchant, and a stranger to it); no customer's data."""
    regular = {}
    for name in columns:
        base = name.removeprefix(fd.USER_MERCHANT_PREFIX).removeprefix(fd.USER_MCC_PREFIX)
        regular[name] = _AFFINITY_EXAMPLE.get(base, _OTHER_EXAMPLE.get(name, 0.0))
    stranger = dict(regular)
    for name in columns:
        if name.startswith(fd.USER_MERCHANT_PREFIX):
            stranger[name] = 365.0 if name.endswith("days_since_last") else 0.0
    return pd.DataFrame([regular, stranger], columns=list(columns)).astype("float64")


def metrics_frame(results: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Rows: the model then each baseline; columns: the headline test metrics."""
    frame = pd.DataFrame({name: dict(values) for name, values in results.items()}).T
    return frame[[c for c in TABLE_METRICS if c in frame.columns]]


def is_count(name: str) -> bool:
    """Counts (`n_slates`, `n_rows`, ...) print as integers, never as `0.0000`."""
    return name.startswith(COUNT_PREFIX)


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    def cell(column: str, v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return "n/a"
            return f"{v:,.0f}" if is_count(column) else f"{v:.{digits}f}"
        return str(v)

    columns = [str(c) for c in frame.columns]
    header = "| " + " | ".join(["", *columns]) + " |"
    rule = "|" + "|".join(["---"] * (len(frame.columns) + 1)) + "|"
    body = [
        "| "
        + " | ".join([str(idx)] + [cell(c, v) for c, v in zip(columns, row, strict=True)])
        + " |"
        for idx, row in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]
    return "\n".join([header, rule, *body])


def gap_closed(frame: pd.DataFrame, metric: str = "ndcg_at_10") -> float | None:
    """Share of the popularity-to-oracle gap the model closes (None without an oracle)."""
    if "oracle" not in frame.index or "popularity" not in frame.index:
        return None
    pop, orc, model = (float(frame.loc[r, metric]) for r in ("popularity", "oracle", MODEL))
    return (model - pop) / (orc - pop) if orc != pop else None


def importance_figure(importance: Mapping[str, float], top: int = 25) -> Any:
    """Horizontal bars of gain importance; matplotlib's Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    items = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top]
    names = [k for k, _ in items][::-1]
    values = np.array([v for _, v in items][::-1], dtype=float)
    total = float(sum(importance.values())) or 1.0
    fig = Figure(figsize=(8, 0.3 * len(items) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(names, values / total)
    ax.set_xlabel("share of total gain")
    ax.set_title("Feature importance (gain)")
    fig.tight_layout()
    return fig


def model_card(
    *,
    run_id: str,
    experiment: str,
    windows: Mapping[str, str],
    splits: Mapping[str, Mapping[str, float]],
    exclusions: Mapping[str, int],
    metrics: pd.DataFrame,
    gap: float | None,
    best_iteration: int,
    policy_version: str,
    pairs_id: str,
    git_sha: str | None,
    params: Mapping[str, str],
    importance: Mapping[str, float],
) -> str:
    """The model card in markdown: what it is for, what it saw, how it compares, what it must not do."""
    header = [
        "# Model card: offer-ranker",
        "",
        f"- MLflow run: `{run_id}` (experiment `{experiment}`)",
        f"- policy version: `{policy_version}`; feature rows (point in time): `{pairs_id}`",
        f"- code: `{git_sha or 'unknown'}`",
        f"- model: LightGBM `{params.get('selected_objective', 'lambdarank')}`, native Booster, "
        f"{best_iteration} trees; settings and rounds chosen on time-ordered validation folds, "
        "then refit on every labelled exposure up to the run's end (test metrics below are "
        "the same settings fit before the test window)",
        "",
    ]
    return "\n".join(
        header
        + _card_use()
        + _card_data(windows, splits, exclusions)
        + _card_metrics(metrics, gap)
        + _card_features(importance)
        + list(_LIMITATIONS)
    )


def _card_use() -> list[str]:
    return [
        "## Intended use",
        "",
        f"Ranking partner offers for a customer in the bank's app, purpose `{OFFER_RANKING}` only,",
        "and only while that customer holds an active consent for it. Every request passes the",
        "policy decision first (spec/policy.md); offers from sensitive merchant categories are",
        "never ranked.",
        "",
        "## Banned uses",
        "",
        "Whatever any consent says, this model and its scores must never serve:",
        "",
        *[f"- `{p}`" for p in sorted(BANNED_PURPOSES)],
        "",
        "nor produce lists of users for a merchant or an offer (an advertising audience).",
        "",
    ]


def _card_data(
    windows: Mapping[str, str],
    splits: Mapping[str, Mapping[str, float]],
    exclusions: Mapping[str, int],
) -> list[str]:
    return [
        "## Data windows (by shown_at, UTC)",
        "",
        f"- train: {windows['train_start']} to {windows['train_end']} (labels after the end censored)",
        f"- validation: {windows['train_end']} to {windows['valid_end']}",
        f"- test: {windows['valid_end']} to {windows['test_end']}",
        "",
        markdown_table(pd.DataFrame(splits).T),
        "",
        "## Exposures excluded (by reason; first failing rule wins)",
        "",
        "| reason | exposures |",
        "|---|---|",
        *[f"| {reason} | {count} |" for reason, count in exclusions.items()],
        "",
    ]


def _card_metrics(metrics: pd.DataFrame, gap: float | None) -> list[str]:
    lines = [
        "## Test metrics: model vs baselines",
        "",
        "Ranking metrics average over test slates with at least one redemption; ties are broken",
        "by a fixed pseudo-random key.",
        "",
        markdown_table(metrics),
        "",
    ]
    if gap is not None:
        lines += [f"Share of the popularity-to-oracle NDCG@10 gap closed: **{gap:.1%}**.", ""]
    return lines


def _card_features(importance: Mapping[str, float]) -> list[str]:
    docs = feature_docs()
    top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:10]
    total = float(sum(importance.values())) or 1.0
    return [
        "## Most important features (gain)",
        "",
        "| feature | share of gain | meaning |",
        "|---|---|---|",
        *[f"| {n} | {v / total:.1%} | {docs.get(n, '')} |" for n, v in top],
        "",
    ]


_LIMITATIONS = (
    "## Limitations",
    "",
    "- Labels come from logged slates: the logged position influences redemption, and the",
    "  model does not see it, so part of the label variance is out of its reach by design.",
    "- Users without consented history get population-level features only.",
    "- Metrics on small test windows are noisy; compare runs on the same window (`offers promote`).",
    "",
)
