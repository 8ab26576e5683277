"""Why an offer ranks where it does: per-feature contributions grouped by feature family, in words.

Two attribution methods, both additive (contributions + bias = the raw model score):
- `PATH` (default): the change in a tree's expected value at each split on the path the row takes,
  credited to the split's feature ("Saabas" attributions). Precomputed per (tree, leaf) at load,
  so a request costs one `pred_leaf` call and a gather: about the price of the prediction itself.
  The same leaves also give the score (the sum of their outputs in tree order, as LightGBM adds
  them), so a small request needs a single call into LightGBM; `PathExplainer.exact_on` checks
  at load that these sums equal `Booster.predict` bit for bit, else serving calls predict.
- `SHAP`: LightGBM's `pred_contrib=True` (TreeSHAP). Exact Shapley values, but on a 300-tree,
  63-leaf model it costs ~15 ms per row, 10x the whole request budget; kept for audits and
  for the test that checks both methods tell the same story.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np

from features import definitions as fd
from features.vector import (
    OFFER_DAYS_LEFT,
    OFFER_DAYS_SINCE_START,
    OFFER_FEATURES,
    OFFER_MCC,
    OFFER_REWARD,
    UC_COLUMNS,
    UM_COLUMNS,
    USER_COLUMNS,
)

PATH = "path"
SHAP = "shap"
METHODS = (PATH, SHAP)
MAX_REASONS = 3

FAMILY_MERCHANT = "merchant"
FAMILY_CATEGORY = "category"
FAMILY_ACTIVITY = "activity"
FAMILY_POPULARITY = "popularity"
FAMILY_OFFER = "offer"
FAMILIES = (FAMILY_MERCHANT, FAMILY_CATEGORY, FAMILY_ACTIVITY, FAMILY_POPULARITY, FAMILY_OFFER)

# Features read by the reason texts (the model's own inputs, never raw transactions).
UM_N_90D = f"{fd.USER_MERCHANT_PREFIX}n_90d"
UM_N_365D = f"{fd.USER_MERCHANT_PREFIX}n_365d"
UC_N_90D = f"{fd.USER_MCC_PREFIX}n_90d"
UC_N_365D = f"{fd.USER_MCC_PREFIX}n_365d"
DAYS_PER_MONTH = 365.25 / 12
ENDS_SOON_DAYS = 7.0
NEW_OFFER_DAYS = 7.0

REASON_POPULAR = "popular with other customers"


def family_of(feature: str) -> str:
    if feature in UM_COLUMNS:
        return FAMILY_MERCHANT
    if feature in UC_COLUMNS:
        return FAMILY_CATEGORY
    if feature in USER_COLUMNS:
        return FAMILY_ACTIVITY
    if feature in (fd.MERCHANT_POPULARITY, fd.MCC_POPULARITY):
        return FAMILY_POPULARITY
    if feature in OFFER_FEATURES:
        return FAMILY_OFFER
    raise KeyError(f"feature {feature!r} belongs to no known family")


class PathExplainer:
    """Per-(tree, leaf) path contributions of a Booster, for a gather per request."""

    def __init__(self, booster: lgb.Booster, n_features: int) -> None:
        trees = booster.dump_model()["tree_info"]
        max_leaves = max(max(t["num_leaves"] for t in trees), 1)
        self.contrib = np.zeros((len(trees), max_leaves, n_features), dtype=np.float64)
        self.bias = 0.0
        for t, tree in enumerate(trees):
            root = tree["tree_structure"]
            root_value = root["internal_value"] if "split_feature" in root else root["leaf_value"]
            self.bias += root_value
            self._walk(t, root, np.zeros(n_features), root_value)
        self._tree_idx = np.arange(len(trees))
        self.leaf_output = np.zeros((len(trees), max_leaves), dtype=np.float64)
        for t, tree in enumerate(trees):
            for leaf in range(tree["num_leaves"]):
                self.leaf_output[t, leaf] = booster.get_leaf_output(t, leaf)
        self._leaf_offset = self._tree_idx * max_leaves

    def _walk(self, t: int, node: dict[str, Any], path: np.ndarray, value: float) -> None:
        stack = [(node, path, value)]
        while stack:
            node, path, value = stack.pop()
            if "split_feature" not in node:
                self.contrib[t, node.get("leaf_index", 0)] = path
                continue
            feature = node["split_feature"]
            for side in ("left_child", "right_child"):
                child = node[side]
                child_value = (
                    child["internal_value"] if "split_feature" in child else child["leaf_value"]
                )
                step = path.copy()
                step[feature] += child_value - value
                stack.append((child, step, child_value))

    def leaves(self, booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
        """rows x trees: the leaf each row reaches (one thread)."""
        out = booster.predict(X, pred_leaf=True, num_threads=1)
        return out.astype(np.int64).reshape(len(X), -1)

    def scores(self, leaves: np.ndarray) -> np.ndarray:
        """Raw scores: leaf outputs added tree by tree, in LightGBM's order (a sequential sum)."""
        outputs = self.leaf_output.ravel().take(leaves + self._leaf_offset)  # see project()
        return np.cumsum(outputs, axis=1)[:, -1]

    def exact_on(self, booster: lgb.Booster, X: np.ndarray) -> bool:
        """Do leaf sums reproduce `predict` exactly on X (no output transform, same trees)?"""
        if len(X) == 0 or booster.num_trees() != len(self._tree_idx):
            return False
        return bool(
            np.array_equal(self.scores(self.leaves(booster, X)), booster.predict(X, num_threads=1))
        )

    def contributions_of(self, leaves: np.ndarray) -> np.ndarray:
        """rows x features from the rows' leaves; each row sums, with `bias`, to its raw score."""
        return self.contrib[self._tree_idx, leaves].sum(axis=1)

    def contributions(self, booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
        return self.contributions_of(self.leaves(booster, X))

    def project(self, projection: np.ndarray) -> PathExplainer:
        """Precompute contributions already projected (features -> ReasonWriter's columns)."""
        self.compact = np.tensordot(self.contrib, projection, axes=1)
        n_trees, n_leaves = self.compact.shape[:2]
        # (tree, leaf) flattened: one `take` gathers the same rows twice as fast as indexing
        # with two arrays, and adds them in the same order (the same bits).
        self._compact_rows = self.compact.reshape(n_trees * n_leaves, -1)
        self._tree_offset = np.arange(n_trees) * n_leaves
        return self

    def compact_of(self, leaves: np.ndarray) -> np.ndarray:
        """rows x ReasonWriter columns: a third of the gather of per-feature contributions."""
        # Gathered trees-major, then added tree by tree: the same additions in the same order
        # as summing rows x trees over the trees, in under half the time (this runs per request).
        rows = self._compact_rows.take((leaves + self._tree_offset).T, axis=0)
        return np.add.reduce(rows, axis=0)


def shap_contributions(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """rows x features of TreeSHAP values (LightGBM's last column, the bias, dropped)."""
    return booster.predict(X, pred_contrib=True, num_threads=1)[:, :-1]


class ReasonWriter:
    """Turns one row's contributions and feature values into up to three sentences.

    It reads contributions in a compact form: one column per family (the family's sum), then
    one per offer feature (to say which one). `projection` maps per-feature contributions there.
    """

    def __init__(self, columns: tuple[str, ...]) -> None:
        families = [family_of(c) for c in columns]
        self.columns = columns
        self._col = {c: i for i, c in enumerate(columns)}
        self.projection = np.zeros((len(columns), len(FAMILIES) + len(OFFER_FEATURES)))
        for i, family in enumerate(families):
            self.projection[i, FAMILIES.index(family)] = 1.0
        for j, name in enumerate(OFFER_FEATURES):
            self.projection[self._col[name], len(FAMILIES) + j] = 1.0

    def compact(self, contrib: np.ndarray) -> np.ndarray:
        return contrib @ self.projection

    def family_scores(self, contrib: np.ndarray) -> dict[str, float]:
        """Per-family sums of one row's per-feature contributions."""
        return dict(zip(FAMILIES, self.compact(contrib)[: len(FAMILIES)].tolist(), strict=True))

    def reasons(self, contrib: np.ndarray, values: np.ndarray) -> list[str]:
        """From one row's per-feature contributions (see reasons_compact)."""
        return self.reasons_compact(self.compact(contrib), values)

    def reasons_compact(self, compact: np.ndarray, values: np.ndarray) -> list[str]:
        """Families that pushed the offer up, strongest first, each said once."""
        sums = compact[: len(FAMILIES)].tolist()
        ranked = sorted(
            ((s, f) for f, s in zip(FAMILIES, sums, strict=True) if s > 0), reverse=True
        )
        out: list[str] = []
        for _, family in ranked:
            text = self._text(family, compact, values)
            if text and text not in out:
                out.append(text)
            if len(out) == MAX_REASONS:
                break
        return out

    def _v(self, values: np.ndarray, name: str) -> float:
        v = values[self._col[name]]
        return 0.0 if np.isnan(v) else float(v)

    def _text(self, family: str, compact: np.ndarray, values: np.ndarray) -> str:
        if family == FAMILY_MERCHANT:
            return _habit("you shop at this merchant", "a merchant new to you",
                          self._v(values, UM_N_90D), self._v(values, UM_N_365D))  # fmt: skip
        if family == FAMILY_CATEGORY:
            return _habit("you spend in this category", "a category new to you",
                          self._v(values, UC_N_90D), self._v(values, UC_N_365D))  # fmt: skip
        if family == FAMILY_ACTIVITY:
            return "suits how you use your card"
        if family == FAMILY_POPULARITY:
            return REASON_POPULAR
        return self._offer_text(compact, values)

    def _offer_text(self, compact: np.ndarray, values: np.ndarray) -> str:
        offer = compact[len(FAMILIES) :]
        top = list(OFFER_FEATURES)[int(np.argmax(offer))]
        if top == OFFER_REWARD:
            return "a generous reward"
        if top == OFFER_DAYS_LEFT:
            soon = self._v(values, OFFER_DAYS_LEFT) <= ENDS_SOON_DAYS
            return "ends soon" if soon else "plenty of time left to use it"
        if (
            top == OFFER_DAYS_SINCE_START
            and self._v(values, OFFER_DAYS_SINCE_START) <= NEW_OFFER_DAYS
        ):
            return "a new offer"
        if top == OFFER_MCC:
            return "offers like this one are often used"
        return "a good time for this offer"


def _habit(subject: str, new: str, n_90d: float, n_365d: float) -> str:
    per_month = n_90d / (90 / DAYS_PER_MONTH)
    if per_month >= 8:
        return f"{subject} several times a week"
    if per_month >= 3:
        return f"{subject} about weekly"
    if per_month >= 0.8:
        return f"{subject} about monthly"
    if n_365d > 0:
        return f"{subject} now and then"
    return new
