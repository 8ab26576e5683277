"""The Scorer: policy first, then features from the published snapshot, then the champion model.

Why it is shaped like this: every request must be decided by `policy.decide` at request time
(a consent that lapsed after the snapshot was built is denied), and nothing slow may sit on the
request path. So `Scorer` resolves the registered model, the snapshot, the offer catalogue, the
users' consents and the erasure register once (at start and on `reload()`) into one immutable
`ServingState`, swapped atomically; a request only reads that state, runs numpy and LightGBM
with one thread, and appends one audit record.

Features come from the published snapshot as of its cutoff (through `features.vector.assemble`,
the function training uses), and offers must be active at the request's `now`.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd

from features import definitions as fd
from features.contract import CONSENTS, MCC, OFFERS, USER_ID, USERS
from features.erasures import REGISTER, erased_since_always, read_erasures
from features.job import load_snapshot
from features.policy_frames import consents_by_user, user_facts
from features.tables import FeatureTables
from features.validate import load_tables
from features.vector import FEATURE_COLUMNS, FeatureSource, OfferArrays, assemble
from policy import SENSITIVE_MCCS, Consent, Decision, UserFacts, as_utc, decide, policy_version
from serving.audit import EVENT, EVENT_DECISION, AuditLog, new_request_id
from serving.explain import (
    PATH,
    REASON_POPULAR,
    SHAP,
    PathExplainer,
    ReasonWriter,
    shap_contributions,
)
from serving.sources import check_sources

log = logging.getLogger(__name__)

CHAMPION = "champion"
LEAF_SCORE_MAX_ROWS = 4096  # beyond: predict, then leaves of the top k only (batch chunks)
SERVING_DIR = "serving"  # under OFFERS_HOME: coordination between server workers
RELOAD_MARKER = "reload-requested"
Signature = tuple[int, int, int] | None
HALF_LIFE_PARAM = "half_life_days"  # run param of training, field of the snapshot manifest
MAX_K = 100
CHANNEL_API = "api"
CHANNEL_BATCH = "batch"
CHANNEL_IN_PROCESS = "in_process"
# A request's `now` may lag the server clock by this much (client clocks drift). Further in the
# past only in replay mode: a past decision time would otherwise undo a withdrawal.
CLOCK_SKEW = timedelta(minutes=5)
# The decision times the system answers for: [NOW_MIN, NOW_MAX) in UTC. Far inside the
# nanosecond range every array here uses (1677..2262); outside it a `now` is a client's bug,
# refused (RequestError, HTTP 422) before anything is decided, never a crash.
NOW_MIN = datetime(1970, 1, 1, tzinfo=UTC)
NOW_MAX = datetime(2200, 1, 1, tzinfo=UTC)
_M_POP = FEATURE_COLUMNS.index(fd.MERCHANT_POPULARITY)
_C_POP = FEATURE_COLUMNS.index(fd.MCC_POPULARITY)


class RequestError(ValueError):
    """A request the Scorer cannot answer as asked (HTTP 422): nothing was decided."""


class NowOutOfRangeError(RequestError):
    """A `now` outside NOW_MIN..NOW_MAX: nothing is decided and nothing is recorded."""


def decision_time(now: datetime | None) -> datetime:
    """`now` in UTC (naive means UTC; None means the clock), refused outside the range.

    Checked before any conversion: converting `0001-01-01T00:00:00+01:00` to UTC overflows.
    """
    if now is None:
        return datetime.now(UTC)
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    if not NOW_MIN <= aware < NOW_MAX:
        raise NowOutOfRangeError(
            f"now {now.isoformat()} is out of range: decision times must be from "
            f"{NOW_MIN.isoformat()} up to (not including) {NOW_MAX.isoformat()}"
        )
    return as_utc(aware)


class ModelMismatchError(RuntimeError):
    """The registered model does not fit this code's features or policy: refuse to serve."""


class RegisteredModel(Protocol):
    """What `features.tracking.load_registered_model` hands back (the only registry reader)."""

    booster: lgb.Booster
    name: str
    version: str
    feature_columns: list[str]
    policy_version: str | None


ModelLoader = Callable[[Path, str], RegisteredModel]


@dataclass(frozen=True)
class RankedOffer:
    offer_id: str
    score: float
    rank: int
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "score": self.score,
            "rank": self.rank,
            "reasons": self.reasons,
        }


@dataclass(frozen=True)
class RankResult:
    """One decision and, on allow, the ranked offers; `to_dict` is the HTTP body."""

    request_id: str
    user_id: str
    purpose: str
    now: datetime
    decision: Decision
    offers: list[RankedOffer] = field(default_factory=list)
    cold_start: bool = False
    model_name: str = ""
    model_version: str = ""
    snapshot_id: str = ""
    excluded_sensitive: int = 0
    excluded_inactive: int = 0

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def reason_code(self) -> str:
        return self.decision.reason_code

    @property
    def policy_version(self) -> str:
        return self.decision.policy_version

    def to_dict(self) -> dict[str, Any]:
        """Allow: the ranking; deny: decision, reason, legal refs and policy version only."""
        base = {
            "decision": self.decision.decision,
            "reason_code": self.reason_code,
            "legal_refs": list(self.decision.legal_refs),
            "policy_version": self.policy_version,
            "request_id": self.request_id,
        }
        if not self.allowed:
            return base
        return {
            **base,
            "offers": [o.to_dict() for o in self.offers],
            "cold_start": self.cold_start,
            "model": {"name": self.model_name, "version": self.model_version},
            "snapshot_id": self.snapshot_id,
        }

    def audit_record(self, channel: str) -> dict[str, Any]:
        """The spec's audit fields; never an MCC, a merchant or an amount."""
        consent = self.decision.consent
        return {
            EVENT: EVENT_DECISION,
            "request_id": self.request_id,
            "decided_at": self.now.isoformat(),
            "channel": channel,
            "user_id": self.user_id,
            "purpose": self.purpose,
            "decision": self.decision.decision,
            "reason_code": self.reason_code,
            "legal_refs": list(self.decision.legal_refs),
            "consent_id": consent.consent_id,
            "consent_state": consent.status.value,
            "consent_expires_at": consent.expires_at.isoformat() if consent.expires_at else None,
            "policy_version": self.policy_version,
            "feature_snapshot_id": self.snapshot_id,
            "model": {"name": self.model_name, "version": self.model_version},
            "offer_ids": [o.offer_id for o in self.offers],
            "n_excluded_sensitive": self.excluded_sensitive,
            "cold_start": self.cold_start,
        }


@dataclass(frozen=True)
class ServingState:
    """Everything a request reads, loaded together and replaced together."""

    booster: lgb.Booster
    model_name: str
    model_version: str
    model_alias: str
    explainer: PathExplainer
    reasons: ReasonWriter
    source: FeatureSource
    snapshot_id: str
    cutoff: datetime
    cutoff_ns: int
    offers: OfferArrays
    offer_index: dict[str, int]
    sensitive: np.ndarray  # bool per catalogue row
    consents: dict[str, list[Consent]]
    users: dict[str, UserFacts]
    policy_version: str
    loaded_at: datetime
    watched: tuple[Signature, ...] = ()  # the erasure register and reload marker as read
    leaf_scores: bool = False  # leaf sums equal Booster.predict here (checked at load)

    def describe(self) -> dict[str, Any]:
        return {
            "model": {
                "name": self.model_name,
                "version": self.model_version,
                "alias": self.model_alias,
            },
            "snapshot_id": self.snapshot_id,
            "snapshot_cutoff": self.cutoff.isoformat(),
            "policy_version": self.policy_version,
            "offers": len(self.offers),
            "loaded_at": self.loaded_at.isoformat(),
        }


@dataclass(frozen=True)
class RegistryModel:
    """A registered version with the lineage serving checks (half-life: a run param)."""

    booster: lgb.Booster
    name: str
    version: str
    feature_columns: list[str]
    policy_version: str | None
    half_life_days: float | None


def _default_loader(home: Path, alias: str) -> RegisteredModel:
    from features.tracking import load_registered_model, version_info

    ranker = load_registered_model(home, alias)
    half_life = version_info(home, ranker.version)["run_params"].get(HALF_LIFE_PARAM)
    return RegistryModel(
        booster=ranker.booster,
        name=ranker.name,
        version=ranker.version,
        feature_columns=list(ranker.feature_columns),
        policy_version=ranker.policy_version,
        half_life_days=float(half_life) if half_life else None,
    )


def load_state(
    home: Path,
    data_dir: Path,
    model_alias: str = CHAMPION,
    model_loader: ModelLoader | None = None,
    allow_data_mismatch: bool | None = None,
) -> ServingState:
    """Model, snapshot, catalogue, consents and erasures; fails loudly on any mismatch.

    `allow_data_mismatch` (None: OFFERS_ALLOW_DATA_MISMATCH) turns a snapshot built from other
    users or consents files than `data_dir` into a warning.
    """
    home = Path(home)
    # Taken before anything is read: an erasure landing mid-load makes the watcher load again,
    # so the erased user's snapshot rows cannot survive in memory.
    watched = tuple(signature(p) for p in watched_paths(home))
    model = (model_loader or _default_loader)(home, model_alias)
    columns = list(model.feature_columns)
    if columns != list(FEATURE_COLUMNS):
        raise ModelMismatchError(
            f"model {model.name} v{model.version} was trained on features {columns}, "
            f"this code assembles {list(FEATURE_COLUMNS)}: retrain or deploy matching code"
        )
    if model.booster.num_feature() != len(FEATURE_COLUMNS):
        raise ModelMismatchError(
            f"booster expects {model.booster.num_feature()} features, not {len(FEATURE_COLUMNS)}"
        )
    current_policy = policy_version()
    if model.policy_version != current_policy:
        raise ModelMismatchError(
            f"model {model.name} v{model.version} was trained under policy "
            f"{model.policy_version}, the rules now are {current_policy}: retrain and promote"
        )
    tables, manifest = load_snapshot(home / "features")
    check_sources(manifest, Path(data_dir), allow_data_mismatch)  # the snapshot's own sources?
    if manifest.get("policy_version") != current_policy:
        raise ModelMismatchError(
            f"snapshot {manifest['snapshot_id']} was built under policy "
            f"{manifest.get('policy_version')}, the rules now are {current_policy}: rebuild it"
        )
    trained = getattr(model, HALF_LIFE_PARAM, None)
    built = manifest.get(HALF_LIFE_PARAM)
    if trained is not None and built is not None and float(built) != trained:
        raise ModelMismatchError(
            f"snapshot {manifest['snapshot_id']} has decayed spend with a {built}-day half-life, "
            f"model v{model.version} was trained with {trained}: rebuild the snapshot to match"
        )
    cutoff = as_utc(pd.Timestamp(manifest["cutoff"]).to_pydatetime())
    frames = load_tables(Path(data_dir), tables=(USERS, CONSENTS, OFFERS))
    erased = read_erasures(home / "erasures")
    offers_frame = frames[OFFERS]
    offers = OfferArrays.from_frame(offers_frame)
    source = FeatureSource(tables)
    reasons = ReasonWriter(FEATURE_COLUMNS)
    explainer = PathExplainer(model.booster, len(FEATURE_COLUMNS)).project(reasons.projection)
    probe = _probe_matrix(source, tables, offers, _ns(cutoff))
    return ServingState(
        booster=model.booster,
        model_name=str(model.name),
        model_version=str(model.version),
        model_alias=model_alias,
        explainer=explainer,
        reasons=reasons,
        source=source,
        snapshot_id=str(manifest["snapshot_id"]),
        cutoff=cutoff,
        cutoff_ns=_ns(cutoff),
        offers=offers,
        offer_index={oid: i for i, oid in enumerate(offers.offer_id.tolist())},
        sensitive=offers_frame[MCC].astype(str).isin(SENSITIVE_MCCS).to_numpy(),
        consents=consents_by_user(frames[CONSENTS]),
        users=user_facts(frames[USERS], erased_since_always(erased)),
        policy_version=current_policy,
        loaded_at=datetime.now(UTC),
        watched=watched,
        leaf_scores=explainer.exact_on(model.booster, probe),
    )


def _probe_matrix(
    source: FeatureSource, tables: FeatureTables, offers: OfferArrays, cutoff_ns: int
) -> np.ndarray:
    """Real rows of this snapshot (up to 20 users x 25 offers) to check leaf sums against."""
    users = list(pd.unique(tables.user[USER_ID].astype(str)))[:20] or [""]
    n_off = min(len(offers), 25)
    if n_off == 0:
        return np.empty((0, len(FEATURE_COLUMNS)))
    idx = np.tile(np.arange(n_off), len(users))
    user_col = np.repeat(np.array(users, dtype=object), n_off)
    return assemble(source, user_col, np.full(len(idx), cutoff_ns), offers.take(idx))


def watched_paths(home: Path) -> tuple[Path, Path]:
    """Files whose change makes every worker reload: the erasure register, the reload marker."""
    return (home / "erasures" / REGISTER, home / SERVING_DIR / RELOAD_MARKER)


def signature(path: Path) -> Signature:
    """(inode, mtime, size): the register only grows; the marker is replaced on each request."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _ns(t: datetime) -> int:
    return int(pd.Timestamp(t).value)


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
        self.audit = audit if audit is not None else AuditLog(self.home / "audit")
        self._reload_lock = threading.Lock()
        # A given state (batch workers) skips loading: it was loaded once by the parent.
        self.state = state or load_state(self.home, self.data_dir, model_alias, model_loader)

    def reload(self) -> ServingState:
        """Re-resolve the alias, snapshot, data and erasures; requests in flight keep the old."""
        with self._reload_lock:
            # A running server takes new consents (a withdrawal) before the snapshot is rebuilt:
            # refusing them would keep it deciding on the old ones. The start-up check refuses.
            state = load_state(self.home, self.data_dir, self.model_alias, self.model_loader, True)
            self.state = state
        log.info("scorer reloaded: %s", state.describe())
        return state

    def request_reload(self) -> ServingState:
        """Reload here, and ask every other worker on this OFFERS_HOME to reload too.

        `POST /v1/reload` reaches one worker of `offers serve --workers N`; the marker it
        replaces is what the other workers' ReloadWatchers see.
        """
        marker = watched_paths(self.home)[1]
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f".{marker.name}.{uuid.uuid4().hex}")
        tmp.write_text(f"{datetime.now(UTC).isoformat()} pid {os.getpid()}\n", encoding="utf-8")
        os.replace(tmp, marker)
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
        state = self.state
        now = decision_time(now)
        idx = self._candidate_idx(state, candidates)
        self._check_request(state, k, now)
        decision = decide(purpose, now, state.consents.get(user_id, ()), state.users.get(user_id))
        result = self._rank_decided(state, [user_id], [decision], purpose, idx, k, now)[0]
        self.audit.append(result.audit_record(self.channel))
        return result

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

    def rank_many(
        self,
        user_ids: Sequence[str],
        purpose: str,
        k: int = 10,
        now: datetime | None = None,
        channel: str = CHANNEL_BATCH,
    ) -> list[RankResult]:
        """Batch: the same decision and ranking per user, one model call for the lot."""
        state = self.state
        now = decision_time(now)
        self._check_request(state, k, now)
        decisions = self.decide_many(user_ids, purpose, now, state)
        results = self._rank_decided(state, list(user_ids), decisions, purpose, None, k, now)
        self.audit.append_many(r.audit_record(channel) for r in results)
        return results

    def _check_request(self, state: ServingState, k: int, now: datetime) -> None:
        if not 1 <= k <= MAX_K:
            raise RequestError(f"k must be between 1 and {MAX_K}, not {k}")
        if now < state.cutoff:
            raise RequestError(
                f"now {now.isoformat()} is before the feature snapshot's cutoff "
                f"{state.cutoff.isoformat()}: its features would come from the future"
            )
        if not self.allow_past_now and now < datetime.now(UTC) - CLOCK_SKEW:
            raise RequestError(
                f"now {now.isoformat()} is in the past: a past decision time could undo a "
                "withdrawal, so it is accepted only in replay mode (allow_past_now)"
            )

    @staticmethod
    def _candidate_idx(state: ServingState, candidates: Sequence[str] | None) -> np.ndarray | None:
        if candidates is None:
            return None
        unknown = [c for c in candidates if c not in state.offer_index]
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise RequestError(f"unknown candidate offer ids: {shown}{more}")
        if len(set(candidates)) != len(candidates):
            dupes = sorted(c for c, n in Counter(candidates).items() if n > 1)
            raise RequestError(f"candidate offer ids repeated: {dupes[:10]}")
        return np.fromiter((state.offer_index[c] for c in candidates), np.int64, len(candidates))

    @staticmethod
    def _slate(state: ServingState, idx: np.ndarray | None, now_ns: int) -> _Slate:
        """Active at now and never a sensitive MCC (spec/policy.md), counting what was dropped."""
        if idx is None:
            idx = np.arange(len(state.offers))
        sensitive = state.sensitive[idx]
        active = (state.offers.starts_ns[idx] <= now_ns) & (now_ns < state.offers.ends_ns[idx])
        keep = active & ~sensitive
        return _Slate(idx[keep], int(sensitive.sum()), int((~active & ~sensitive).sum()))

    def _rank_decided(
        self,
        state: ServingState,
        user_ids: list[str],
        decisions: list[Decision],
        purpose: str,
        idx: np.ndarray | None,
        k: int,
        now: datetime,
    ) -> list[RankResult]:
        slate = self._slate(state, idx, _ns(now))
        common = {
            "purpose": purpose,
            "now": now,
            "model_name": state.model_name,
            "model_version": state.model_version,
            "snapshot_id": state.snapshot_id,
        }
        results: list[RankResult | None] = [None] * len(user_ids)
        warm: list[int] = []
        cold: list[int] = []
        for i, (user, decision) in enumerate(zip(user_ids, decisions, strict=True)):
            if not decision.allowed:
                results[i] = RankResult(new_request_id(), user, decision=decision, **common)
            elif state.source.has_history(user, state.cutoff_ns):
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
            ranked = self._model_rank(state, [user_ids[i] for i in warm], slate.idx, k)
            for i, offers in zip(warm, ranked, strict=True):
                results[i] = RankResult(
                    new_request_id(), user_ids[i], decision=decisions[i], offers=offers,
                    **common, **extra,
                )  # fmt: skip
        return [r for r in results if r is not None]

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

    def _model_rank(
        self, state: ServingState, users: list[str], idx: np.ndarray, k: int
    ) -> list[list[RankedOffer]]:
        """One assembled matrix and one predict for every user; top k each; reasons for those."""
        n_off = len(idx)
        if n_off == 0:
            return [[] for _ in users]
        n_users = len(users)
        offers = state.offers.take(np.tile(idx, n_users))
        user_col = np.repeat(np.array(users, dtype=object), n_off)
        X = assemble(state.source, user_col, np.full(n_users * n_off, state.cutoff_ns), offers)
        explainer, leaves = state.explainer, None
        if state.leaf_scores and self.explain == PATH and len(X) <= LEAF_SCORE_MAX_ROWS:
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


class ReloadWatcher:
    """Reloads a Scorer when the erasure register or the reload marker changes.

    Why: `POST /v1/reload` reaches one worker of `offers serve --workers N`, and an erasure must
    reach them all, and soon. From a background thread (never the request path) the watcher
    stats two small files every `interval_s` seconds and runs the same full reload, which also
    drops an erased user's in-memory feature rows. A failed reload keeps the old state, is
    logged once per change and retried every tick.
    """

    def __init__(self, scorer: Scorer, interval_s: float) -> None:
        self.scorer = scorer
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._failed: tuple[Signature, ...] | None = None
        self._thread = threading.Thread(target=self._run, name="erasure-watcher", daemon=True)

    def check(self) -> bool:
        """Reload when the register differs from what the state read; True when it did."""
        now = tuple(signature(p) for p in watched_paths(self.scorer.home))
        if now == self.scorer.state.watched:
            return False
        try:
            self.scorer.reload()
        except (LookupError, OSError, ValueError, RuntimeError):
            if now != self._failed:  # log once per change, retry every tick
                log.exception("watched reload failed; retrying every %.1f s", self.interval_s)
            self._failed = now
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def start(self) -> ReloadWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
