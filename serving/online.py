"""Features from the online store: one round trip per request instead of a snapshot in memory.

Why this shape: a worker holding the whole snapshot grows with the users; here it holds only
the namespace's code tables and population blocks (read at load), and each request reads the
allowed users' values with ONE `MGET` of [pointer, NS:alive, NS:u:<user>...]. MGET is atomic on
a Redis server, so the values, the namespace's liveness and the pointer are one instant's:
- NS alive: the values are NS's (each value names its namespace, checked on decode), the
  state's code tables are NS's too, so a response mixes no snapshots; if the pointer has moved
  on, `switched` is set and the ReloadWatcher loads the new namespace;
- NS no longer alive (publish dropped it): OnlineSnapshotGone, the Scorer reloads and answers
  from the new namespace, all of it.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from features.online.layout import Keys, columns_version, decode_base, decode_user
from features.online.stores import OnlineStoreError, connect, redact
from features.vector import BLOCKS, PAIR_BLOCKS, FeatureSource, KeyedBlock

if TYPE_CHECKING:
    from policy import Decision
    from serving.scorer import Scorer
    from serving.state import ServingState

T = TypeVar("T")


class OnlineSnapshotGone(RuntimeError):
    """The namespace this state was loaded from is gone from the store: reload, then answer."""


class OnlineMismatchError(RuntimeError):
    """The online store holds features this code or model cannot serve: refuse to start."""


def _empty_pair_blocks(n_items: dict[str, int]) -> dict[str, KeyedBlock]:
    return {
        name: KeyedBlock.presorted(np.empty(0, np.int64), np.empty((0, len(cols))), n_items[name])
        for name, cols in PAIR_BLOCKS.items()
    }


class OnlineFeatures:
    """One namespace of one store: its code tables in memory, users' rows fetched per request."""

    def __init__(self, url: str, keys: Keys, ns: str, meta: dict[str, Any], base: bytes):
        self.url, self.keys, self.ns, self.meta = url, keys, ns, meta
        self.cutoff_ns = int(meta["cutoff_ns"])
        self.n_items = {k: int(v) for k, v in meta["n_items"].items()}
        self.widths = {name: len(cols) for name, cols in PAIR_BLOCKS.items()}
        self.merchant_code = {m: i for i, m in enumerate(meta["merchants"])}
        self.mcc_code = {m: i for i, m in enumerate(meta["mccs"])}
        self.as_of_code = {int(t): i for i, t in enumerate(meta["as_of_ns"])}
        self.population = decode_base(base, self.n_items)
        self.base = self._source({}, _empty_pair_blocks(self.n_items))
        self.switched = threading.Event()  # the pointer names another namespace now
        self._client = connect(url)

    @classmethod
    def open(cls, url: str, prefix: str) -> OnlineFeatures:
        """The namespace `current` names, checked whole; a clear error when there is none."""
        import redis

        keys, where = Keys(prefix), redact(url)
        try:
            client = connect(url)
            ns = client.get(keys.current)
            if ns is None:
                raise OnlineMismatchError(
                    f"online store {where} has no published snapshot under prefix {prefix!r}: "
                    f"run `offers features publish-online --to {where}`"
                )
            ns = ns.decode()
            meta, base, alive = client.mget(Keys.meta(ns), Keys.base(ns), Keys.alive(ns))
        except redis.RedisError as exc:
            raise OnlineStoreError(f"online store {where}: unreachable ({exc})") from exc
        if meta is None or base is None or alive is None:
            raise OnlineSnapshotGone(f"online store {where}: namespace {ns} is incomplete or gone")
        features = cls(url, keys, ns, json.loads(meta), base)
        check_columns(features.meta, where)
        return features

    def fetch(self, users: Sequence[str]) -> FeatureSource:
        """The users' rows (one MGET) as a source assembly reads like the snapshot's."""
        import redis

        keys = [self.keys.current, Keys.alive(self.ns), *(Keys.user(self.ns, u) for u in users)]
        try:
            current, alive, *values = self._client.mget(keys)
        except redis.RedisError as exc:
            raise OnlineStoreError(f"online store {redact(self.url)}: {exc}") from exc
        if alive is None:
            self.switched.set()
            raise OnlineSnapshotGone(f"namespace {self.ns} was dropped from {redact(self.url)}")
        if current is None or current.decode() != self.ns:
            self.switched.set()  # still whole: answer from it, the watcher reloads
        return self._request_source(users, values)

    def poll(self) -> bool:
        """Has the pointer moved on? (the watcher's look, off the request path)."""
        import redis

        try:
            current = self._client.get(self.keys.current)
        except redis.RedisError as exc:
            raise OnlineStoreError(f"online store {redact(self.url)}: {exc}") from exc
        if current is None or current.decode() != self.ns:
            self.switched.set()
        return self.switched.is_set()

    def _request_source(self, users: Sequence[str], values: list[bytes | None]) -> FeatureSource:
        pair_code: dict[tuple[str, int], int] = {}
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {b: [] for b in PAIR_BLOCKS}
        for user, value in zip(users, values, strict=True):
            if value is None or (user, self.cutoff_ns) in pair_code:
                continue  # no history in this snapshot (or asked twice)
            code = len(pair_code)
            pair_code[(user, self.cutoff_ns)] = code
            for name, (items, rows) in decode_user(value, self.ns, self.widths).items():
                stride = np.int64(self.n_items[name] + 1)
                parts[name].append((np.int64(code) * stride + items, rows))
        blocks = {
            name: KeyedBlock.presorted(
                np.concatenate([k for k, _ in got]) if got else np.empty(0, np.int64),
                np.vstack([v for _, v in got]) if got else np.empty((0, self.widths[name])),
                self.n_items[name],
            )
            for name, got in parts.items()
        }
        return self._source(pair_code, blocks)

    def _source(
        self, pair_code: dict[tuple[str, int], int], pair_blocks: dict[str, KeyedBlock]
    ) -> FeatureSource:
        return FeatureSource.from_parts(
            pair_code,
            self.merchant_code,
            self.mcc_code,
            self.as_of_code,
            {**pair_blocks, **self.population},
        )


def check_columns(meta: dict[str, Any], where: str) -> None:
    """The store's feature columns (names and order) must be the ones this code assembles."""
    mine = {name: list(cols) for name, cols in BLOCKS.items()}
    if meta.get("columns_version") != columns_version() or meta.get("columns") != mine:
        raise OnlineMismatchError(
            f"online store {where} holds snapshot {meta.get('snapshot_id')} with feature columns "
            f"version {meta.get('columns_version')}, this code assembles {columns_version()}: "
            "republish with `offers features publish-online`, or deploy matching code"
        )


def with_users_features(
    state: ServingState, user_ids: Sequence[str], decisions: Sequence[Decision]
) -> ServingState:
    """The state a request ranks on: as loaded (embedded), or with `source` holding the
    allowed users' rows of the state's own namespace (online; never a read for a denied user).
    """
    if state.online is None:
        return state
    allowed = [u for u, d in zip(user_ids, decisions, strict=True) if d.allowed]
    if not allowed:
        return state
    return dataclasses.replace(state, source=state.online.fetch(allowed))


def on_current_state(scorer: Scorer, attempt: Callable[[ServingState], T]) -> T:
    """`attempt` on the scorer's state; if its online snapshot was dropped meanwhile, once
    more on the state reloaded from the new one (decisions included: nothing mixes)."""
    state = scorer.state
    try:
        return attempt(state)
    except OnlineSnapshotGone:
        scorer.reload(unless_replaced=state)
        return attempt(scorer.state)
