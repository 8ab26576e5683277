"""Ranking metrics over slates, vectorised (no per-slate Python loop), so 100k test slates cost
well under a second and the model and every baseline are scored by exactly the same code.

Conventions:
- a slate is a contiguous run of rows; `group` holds the slate sizes in row order;
- gains are the labels themselves (linear, as `sklearn.metrics.ndcg_score`), discounts
  1 / log2(rank + 1);
- ranking metrics average over slates with at least one positive (others carry no signal);
- tied scores are broken by a fixed pseudo-random key, never by row order: rows arrive in
  logged position order, and the logged position carries position bias, so breaking ties by it
  would hand a constant scorer the logging policy's quality;
- ROC-AUC is global over rows (a calibration-free view of "positives above negatives").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

NDCG_KS = (5, 10)
MAP_K = 10
RECALL_KS = (5, 10)
N_SLATES = "n_slates"
ROC_AUC = "roc_auc"


def metric_names(ks: Sequence[int] = NDCG_KS) -> list[str]:
    """The metric keys `evaluate` returns for the whole holdout, in display order."""
    return (
        [f"ndcg_at_{k}" for k in ks]
        + [f"map_at_{MAP_K}"]
        + [f"recall_at_{k}" for k in RECALL_KS]
        + [ROC_AUC, N_SLATES]
    )


def _slate_index(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    group = np.asarray(group, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(group)[:-1]]).astype(np.int64)
    return np.repeat(np.arange(len(group)), group), starts


def _ranks(
    keys: np.ndarray, slate: np.ndarray, starts: np.ndarray, tiebreak: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row order sorted by (slate, key desc, tiebreak) and each sorted row's 0-based rank."""
    order = np.lexsort((tiebreak, -keys, slate))
    rank = np.arange(len(order)) - starts[slate[order]]
    return order, rank


def per_slate(
    y: np.ndarray,
    scores: np.ndarray,
    group: np.ndarray,
    ks: Sequence[int] = NDCG_KS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-slate NDCG@k, MAP@10, recall@k and the slate's positive count (arrays of n_slates)."""
    y = np.asarray(y, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if not (len(y) == len(scores) == int(np.sum(group))):
        raise ValueError(
            f"{len(y)} labels, {len(scores)} scores and slates of {int(np.sum(group))} rows differ"
        )
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    n_slates = len(group)
    slate, starts = _slate_index(group)
    tiebreak = np.random.default_rng(seed).random(len(y))
    order, rank = _ranks(scores, slate, starts, tiebreak)
    ideal, ideal_rank = _ranks(y, slate, starts, np.zeros(len(y)))
    gain, ideal_gain = y[order], y[ideal]
    slate_sorted = slate[order]
    discount = 1.0 / np.log2(rank + 2.0)
    ideal_discount = 1.0 / np.log2(ideal_rank + 2.0)
    relevant = (gain > 0).astype(np.float64)
    n_pos = np.bincount(slate, weights=(y > 0).astype(np.float64), minlength=n_slates)

    out: dict[str, np.ndarray] = {"n_pos": n_pos}
    for k in sorted({*ks, *RECALL_KS}):
        top = rank < k
        dcg = np.bincount(slate_sorted, weights=gain * discount * top, minlength=n_slates)
        idcg = np.bincount(
            slate[ideal], weights=ideal_gain * ideal_discount * (ideal_rank < k), minlength=n_slates
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            if k in ks:
                out[f"ndcg_at_{k}"] = np.where(idcg > 0, dcg / idcg, np.nan)
            if k in RECALL_KS:
                hits = np.bincount(slate_sorted, weights=relevant * top, minlength=n_slates)
                out[f"recall_at_{k}"] = np.where(n_pos > 0, hits / n_pos, np.nan)

    # AP@k: mean over the first k ranks of precision@i at each relevant rank, / min(k, n_pos).
    cum = np.cumsum(relevant)
    before = np.concatenate([[0.0], cum])[starts]  # hits in earlier slates
    hits_so_far = cum - before[slate_sorted]
    precision = hits_so_far / (rank + 1.0)
    ap_sum = np.bincount(
        slate_sorted, weights=precision * relevant * (rank < MAP_K), minlength=n_slates
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out[f"map_at_{MAP_K}"] = np.where(n_pos > 0, ap_sum / np.minimum(n_pos, MAP_K), np.nan)
    return out


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    chosen = values[mask]
    return float(np.mean(chosen)) if len(chosen) else float("nan")


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Global ROC-AUC; NaN when the rows hold only one class (undefined, not 0.5)."""
    positive = np.asarray(y) > 0
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, scores))


def evaluate(
    y: np.ndarray,
    scores: np.ndarray,
    group: np.ndarray,
    segments: Mapping[str, np.ndarray] | None = None,
    ks: Sequence[int] = NDCG_KS,
    seed: int = 0,
) -> dict[str, float]:
    """Holdout metrics; with segments (name -> bool per slate) also `<name>_<metric>` keys."""
    per = per_slate(y, scores, group, ks, seed)
    has_pos = per["n_pos"] > 0
    slate, _ = _slate_index(group)

    def block(mask: np.ndarray, prefix: str) -> dict[str, float]:
        rows = mask[slate]
        result = {
            f"{prefix}{name}": _mean(values, mask & has_pos)
            for name, values in per.items()
            if name != "n_pos"
        }
        result[f"{prefix}{ROC_AUC}"] = roc_auc(np.asarray(y)[rows], np.asarray(scores)[rows])
        result[f"{prefix}{N_SLATES}"] = float(np.sum(mask & has_pos))
        return result

    metrics = block(np.ones(len(group), dtype=bool), "")
    for name, mask in (segments or {}).items():
        mask = np.asarray(mask, dtype=bool)
        if len(mask) != len(group):
            raise ValueError(f"segment {name!r}: {len(mask)} flags for {len(group)} slates")
        metrics.update(block(mask, f"{name}_"))
    order = metric_names(ks)
    return {k: metrics[k] for k in order} | {k: v for k, v in metrics.items() if k not in order}
