"""The Scorer: policy first, then features from the published snapshot, then the champion model.

Why it is shaped like this: every request must be decided by `policy.decide` at request time
(a consent that lapsed after the snapshot was built is denied), and nothing slow may sit on the
request path. So `Scorer` resolves the registered model, the snapshot, the offer catalogue, the
users' consents and the erasure register once (at start and on `reload()`) into one immutable
`ServingState`, swapped atomically; a request only reads that state, runs numpy and LightGBM
with one thread, and appends one audit record.

Features come from the published snapshot as of its cutoff (through `features.vector.assemble`,
the function training uses), and offers must be active at the request's `now`.

Reads top to bottom: `Scorer.rank` / `rank_many` (after serving.requests' checks) and the steps
they take in call order (candidates, decision, slate, cold-start popularity or the model,
reasons).
Loading and its checks live in serving.state, the HTTP body schema in serving.results.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from features import definitions as fd
from features.instants import instant_ns
from features.tracking import CHAMPION
from features.vector import FEATURE_COLUMNS, assemble
from policy import Decision, decide
from serving.arms import ArmStates, load_arms, rank_in_experiment
from serving.audit import AuditLog, new_request_id
from serving.explain import PATH, REASON_POPULAR, SHAP, shap_contributions
from serving.online import on_current_state, with_users_features
from serving.requests import candidate_index, check_request, decision_time
from serving.results import RankedOffer, RankResult
from serving.state import ModelLoader, ServingState, load_state, mark_reload
from serving.state import ModelMismatchError as ModelMismatchError  # offers.cli imports it here

log = logging.getLogger(__name__)

LEAF_SCORE_MAX_ROWS = 4096  # beyond: scores, then leaves of the top k only (batch chunks)
CHANNEL_API = "api"
CHANNEL_BATCH = "batch"
CHANNEL_IN_PROCESS = "in_process"
_M_POP = FEATURE_COLUMNS.index(fd.MERCHANT_POPULARITY)
_C_POP = FEATURE_COLUMNS.index(fd.MCC_POPULARITY)


@dataclass(frozen=True)
class _Slate:
    """The candidates one request may rank: catalogue rows, and what was filtered out."""

    idx: np.ndarray
    excluded_sensitive: int
    excluded_inactive: int


class Scorer:
    """Rank offers for one consenting user; the in-process API the HTTP app and batch share."""

    def __init__(
        self,
        home: str | Path,
        data_dir: str | Path,
        model_alias: str = CHAMPION,
        *,
        audit: AuditLog | None = None,
        model_loader: ModelLoader | None = None,
        explain: str = PATH,
        channel: str = CHANNEL_IN_PROCESS,
        state: ServingState | None = None,
        allow_past_now: bool = False,
        online: str | None = None,
    ) -> None:
        if explain not in (PATH, SHAP):
            raise ValueError(f"explain={explain!r} is not {PATH!r} or {SHAP!r}")
        self.home = Path(home)
        self.data_dir = Path(data_dir)
        self.model_alias = model_alias
        self.model_loader = model_loader
        self.explain = explain
        self.channel = channel
        self.allow_past_now = allow_past_now
        self.online = online  # a redis:// URL: features per request from that store
        self.audit = audit if audit is not None else AuditLog(self.home / "audit")
        self._reload_lock = threading.Lock()
        # A given state (batch workers) skips loading: it was loaded once by the parent.
        self.state = state or load_state(
            self.home, self.data_dir, model_alias, model_loader, online=online
        )
        self.arms = self._load_arms(self.state)

    def _load_arms(self, state: ServingState) -> ArmStates:
        """Experiments (serving.arms); in replay mode past ones too, since `now` may be past."""
        now = None if self.allow_past_now else datetime.now(UTC)
        return load_arms(self.home, state, self.model_loader, now)

    def reload(self, unless_replaced: ServingState | None = None) -> ServingState:
        """Re-resolve the alias, snapshot, data and erasures; requests in flight keep the old.

        `unless_replaced`: skip when the state is no longer that one (another thread reloaded).
        """
        with self._reload_lock:
            if unless_replaced is not None and self.state is not unless_replaced:
                return self.state
            # A running server takes new consents (a withdrawal) before the snapshot is rebuilt:
            # refusing them would keep it deciding on the old ones. The start-up check refuses.
            state = load_state(
                self.home, self.data_dir, self.model_alias, self.model_loader, True, self.online
            )
            arms = self._load_arms(state)
            self.state, self.arms = state, arms
        log.info("scorer reloaded: %s", state.describe())
        return state

    def request_reload(self) -> ServingState:
        """Reload here, and ask every other worker on this OFFERS_HOME to reload too.

        `POST /v1/reload` reaches one worker of `offers serve --workers N`; the marker it
        replaces is what the other workers' ReloadWatchers see.
        """
        mark_reload(self.home)
        return self.reload()

    # ------------------------------------------------------------------ requests

    def rank(
        self,
        user_id: str,
        purpose: str,
        k: int = 10,
        candidates: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> RankResult:
        """Decide, then (on allow) rank; one audit record either way.

        Raises RequestError, before anything is decided, for a bad k, unknown or repeated
        candidate ids, a `now` out of range (NowOutOfRangeError), before the snapshot's cutoff
        (features would see the future), or (outside replay mode) in the past.
        """
        now = decision_time(now)

        def attempt(state: ServingState) -> RankResult:
            idx = candidate_index(state, candidates)
            check_request(state, k, now, self.allow_past_now)
            user = state.users.get(user_id)
            decision = decide(purpose, now, state.consents.get(user_id, ()), user)
            return self._decided([user_id], [decision], purpose, idx, k, now, state)[0]

        result = on_current_state(self, attempt)
        self.audit.append(result.audit_record(self.channel))
        return result

    def rank_many(
        self,
        user_ids: Sequence[str],
        purpose: str,
        k: int = 10,
        now: datetime | None = None,
        channel: str = CHANNEL_BATCH,
    ) -> list[RankResult]:
        """Batch: the same decision and ranking per user, one model call for the lot."""
        now = decision_time(now)

        def attempt(state: ServingState) -> list[RankResult]:
            check_request(state, k, now, self.allow_past_now)
            decisions = self.decide_many(user_ids, purpose, now, state)
            return self._decided(list(user_ids), decisions, purpose, None, k, now, state)

        results = on_current_state(self, attempt)
        self.audit.append_many(r.audit_record(channel) for r in results)
        return results

    def decide_many(
        self,
        user_ids: Sequence[str],
        purpose: str,
        now: datetime,
        state: ServingState | None = None,
    ) -> list[Decision]:
        state = state or self.state
        return [
            decide(purpose, now, state.consents.get(u, ()), state.users.get(u)) for u in user_ids
        ]

    # ---------------------------------------------------------- the request path, in call order

    def _decided(
        self,
        user_ids: list[str],
        decisions: list[Decision],
        purpose: str,
        idx: np.ndarray | None,
        k: int,
        now: datetime,
        state: ServingState,
    ) -> list[RankResult]:
        """Ranked as decided: by arm while an experiment runs (serving.arms), else as always."""
        arms = self.arms
        experiment = arms.active(now)
        if experiment is None:
            return self._rank_decided(state, user_ids, decisions, purpose, idx, k, now)
        return rank_in_experiment(
            self, state, arms, experiment, user_ids, decisions, purpose, idx, k, now
        )

    def _rank_decided(
        self,
        state: ServingState,
        user_ids: list[str],
        decisions: list[Decision],
        purpose: str,
        idx: np.ndarray | None,
        k: int,
        now: datetime,
        popular_only: bool = False,
    ) -> list[RankResult]:
        """Deny, cold-start popularity or the model; `popular_only`: popularity for all (the
        experiments' holdout arm)."""
        now_ns = instant_ns(now)
        slate = self._slate(state, idx, now_ns)
        common = {
            "purpose": purpose,
            "now": now,
            "model_name": state.model_name,
            "model_version": state.model_version,
            "snapshot_id": state.snapshot_id,
        }
        state = with_users_features(state, user_ids, decisions)  # online: one round trip
        pairs = self._user_pairs(state, user_ids, decisions, popular_only)
        results: list[RankResult | None] = [None] * len(user_ids)
        warm: list[int] = []
        cold: list[int] = []
        for i, (user, decision) in enumerate(zip(user_ids, decisions, strict=True)):
            if not decision.allowed:
                results[i] = RankResult(new_request_id(), user, decision=decision, **common)
            elif pairs[i] >= 0:
                warm.append(i)
            else:
                cold.append(i)
        extra = {
            "excluded_sensitive": slate.excluded_sensitive,
            "excluded_inactive": slate.excluded_inactive,
        }
        if cold:
            offers = self._popular(state, slate.idx, k)
            for i in cold:
                results[i] = RankResult(
                    new_request_id(), user_ids[i], decision=decisions[i], offers=offers,
                    cold_start=True, **common, **extra,
                )  # fmt: skip
        if warm:
            users = [user_ids[i] for i in warm]
            ranked = self._model_rank(state, users, slate.idx, k, now_ns, pairs[warm])
            for i, offers in zip(warm, ranked, strict=True):
                results[i] = RankResult(
                    new_request_id(), user_ids[i], decision=decisions[i], offers=offers,
                    **common, **extra,
                )  # fmt: skip
        return [r for r in results if r is not None]

    @staticmethod
    def _user_pairs(
        state: ServingState, user_ids: list[str], decisions: list[Decision], popular_only: bool
    ) -> np.ndarray:
        """Each allowed user's row in the snapshot (-1: none, so cold start); never looked up
        for a denied user, nor when popularity ranks everyone. Assembly reuses them."""
        out = np.full(len(user_ids), -1, dtype=np.int64)
        allowed = [i for i, d in enumerate(decisions) if d.allowed]
        if allowed and not popular_only:
            cutoffs = np.full(len(allowed), state.cutoff_ns, dtype=np.int64)
            out[allowed] = state.source.pair_codes([user_ids[i] for i in allowed], cutoffs)
        return out

    @staticmethod
    def _slate(state: ServingState, idx: np.ndarray | None, now_ns: int) -> _Slate:
        """Active at now and never a sensitive MCC (spec/policy.md), counting what was dropped."""
        if idx is None:
            idx = np.arange(len(state.offers))
        sensitive = state.sensitive[idx]
        active = (state.offers.starts_ns[idx] <= now_ns) & (now_ns < state.offers.ends_ns[idx])
        keep = active & ~sensitive
        return _Slate(idx[keep], int(sensitive.sum()), int((~active & ~sensitive).sum()))

    rank_decided = _rank_decided  # for serving.arms (experiments), which ranks by arm
    slate_of = _slate

    @staticmethod
    def _popular(state: ServingState, idx: np.ndarray, k: int) -> list[RankedOffer]:
        """Cold start: merchant popularity among consenting users, then category popularity."""
        if len(idx) == 0:
            return []
        X = assemble(
            state.source,
            [""] * len(idx),
            np.full(len(idx), state.cutoff_ns),
            state.offers.take(idx),
        )
        m_pop, c_pop = X[:, _M_POP], X[:, _C_POP]
        order = np.lexsort((np.arange(len(idx)), -c_pop, -m_pop))[:k]
        return [
            RankedOffer(str(state.offers.offer_id[idx[j]]), float(m_pop[j]), r, [REASON_POPULAR])
            for r, j in enumerate(order, start=1)
        ]

    @staticmethod
    def request_matrix(
        state: ServingState,
        users: Sequence[str],
        idx: np.ndarray,
        now_ns: int,
        pairs: np.ndarray | None = None,
    ) -> np.ndarray:
        """The rows the model scores: every user x every offer in `idx`, user-major.

        History and population features come from the snapshot (as of its cutoff); the
        offer-window features are measured at `now`, when the offer is shown, as training
        measures them at shown_at. `pairs`: the users' snapshot rows, when already looked up;
        the offers' codes come from the state's catalogue, coded once at load."""
        n_users, n_off = len(users), len(idx)
        rows = np.tile(idx, n_users)
        user_col = np.repeat(np.array(users, dtype=object), n_off)
        cutoffs = np.full(n_users * n_off, state.cutoff_ns)
        return assemble(
            state.source, user_col, cutoffs, state.offers.take(rows), at=now_ns,
            pairs=None if pairs is None else np.repeat(pairs, n_off),
            codes=state.offer_codes and state.offer_codes.rows_of(state.offers, rows),
        )  # fmt: skip

    def _model_rank(
        self,
        state: ServingState,
        users: list[str],
        idx: np.ndarray,
        k: int,
        now_ns: int,
        pairs: np.ndarray | None = None,
    ) -> list[list[RankedOffer]]:
        """One assembled matrix and one predict for every user; top k each; reasons for those."""
        n_off = len(idx)
        if n_off == 0:
            return [[] for _ in users]
        n_users = len(users)
        X = self.request_matrix(state, users, idx, now_ns, pairs)
        explainer, leaves, forest = state.explainer, None, state.compiled.forest
        if forest is not None and len(X) <= LEAF_SCORE_MAX_ROWS:
            # One native call: every row's leaves give its score, and the top k's their reasons.
            leaves, scores = forest.leaves_and_scores(X)
            scores = scores.reshape(n_users, n_off)
        elif forest is not None:
            scores = forest.predict(X).reshape(n_users, n_off)  # the top k's leaves again below
        elif state.leaf_scores and self.explain == PATH and len(X) <= LEAF_SCORE_MAX_ROWS:
            # One call into LightGBM gives both the scores and the reasons (see serving.explain).
            leaves = explainer.leaves(state.booster, X)
            scores = explainer.scores(leaves).reshape(n_users, n_off)
        else:
            scores = state.booster.predict(X, num_threads=1).reshape(n_users, n_off)
        k = min(k, n_off)
        # Stable: equal scores keep catalogue (or candidate) order.
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        rows = (np.arange(n_users)[:, None] * n_off + top).ravel()
        Xt = X[rows]
        if self.explain == SHAP:
            compact = state.reasons.compact(shap_contributions(state.booster, Xt))
        elif leaves is not None:
            compact = explainer.compact_of(leaves[rows])
        elif forest is not None:
            compact = explainer.compact_of(forest.leaves(Xt))
        else:
            compact = explainer.compact_of(explainer.leaves(state.booster, Xt))
        out: list[list[RankedOffer]] = []
        offer_ids = state.offers.offer_id
        for u in range(n_users):
            ranked = []
            for r in range(k):
                row = u * k + r
                j = top[u, r]
                ranked.append(
                    RankedOffer(
                        str(offer_ids[idx[j]]),
                        float(scores[u, j]),
                        r + 1,
                        state.reasons.reasons_compact(compact[row], Xt[row]),
                    )
                )
            out.append(ranked)
        return out
