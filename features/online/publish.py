"""Materialise the published feature snapshot into Redis, then switch servers to it atomically.

Why this order (features.online.layout has the key layout): the store is registered first, so
erasure reaches a half-written namespace; every user value and the population blocks are
written in pipelines under a new namespace; `meta` and `alive` come last, so a namespace is
never read before it is whole; one SET of `current` is the switch; the old namespaces are
marked dead (`alive` deleted first, which servers notice and reload on) and their keys
unlinked. Users in the erasure register are never written, and are deleted once more after
the switch, since an erasure may land while the job runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from features.erasures import read_erasures
from features.online.layout import Keys, columns_version, encode_base, encode_user
from features.online.stores import connect, register_store
from features.snapshot import load_snapshot
from features.vector import BLOCKS, PAIR_BLOCKS, FeatureSource

PIPELINE_BATCH = 2000  # values per pipeline round trip
SCAN_BATCH = 5000
MANIFEST_FACTS = (
    "snapshot_id",
    "cutoff",
    "policy_version",
    "half_life_days",
    "source_digests",
    "content_hash",
    "feature_set",
    "built_at",
)


class OnlinePublishError(RuntimeError):
    """The snapshot cannot be materialised as the online store's layout needs."""


def publish_online(
    url: str,
    home: Path,
    prefix: str,
    grace_s: float = 0.0,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The published snapshot into the store at `url`; returns what was written and switched.

    Old namespaces are dropped `grace_s` seconds after the switch (servers that look at the
    pointer meanwhile reload without a request ever waiting; the others reload on the spot).
    """
    step = on_step or (lambda _text: None)
    home = Path(home)
    tables, manifest = load_snapshot(home / "features")
    source = FeatureSource(tables)
    users, cutoff_ns = _pair_users(source, manifest)
    keys, colver = Keys(prefix), columns_version()
    ns = keys.namespace(manifest["snapshot_id"], colver)
    ref = register_store(home, url, prefix)  # before any key: erasure must know of the store
    client = connect(url)
    client.sadd(keys.namespaces, ns)
    erased = set(read_erasures(home / "erasures"))
    step(f"writing {len(users):,} users under {ns} in {ref.label}")
    written = _write_users(client, ns, source, users, erased)
    client.set(Keys.base(ns), encode_base({b: getattr(source, b) for b in BLOCKS}))
    meta = _meta(manifest, source, colver, cutoff_ns, written)
    client.set(Keys.meta(ns), json.dumps(meta))
    client.set(Keys.alive(ns), manifest["snapshot_id"])
    previous = client.set(keys.current, ns, get=True)  # the switch: one atomic command
    step(f"switched {keys.current} to {ns}")
    late = _delete_erased(client, ns, set(read_erasures(home / "erasures")))
    wait_seconds(grace_s)
    removed = {old: _drop_namespace(client, keys, old) for old in _others(client, keys, ns)}
    return {
        "store": ref.label,
        "namespace": ns,
        "previous": previous.decode() if previous else None,
        "snapshot_id": manifest["snapshot_id"],
        "columns_version": colver,
        "users_written": written,
        "users_skipped_erased": len(set(users) & erased),
        "erased_after_write": late,
        "old_namespaces_removed": removed,
    }


def _pair_users(source: FeatureSource, manifest: dict[str, Any]) -> tuple[list[str], int]:
    """User ids in pair-code order; a published snapshot has one cutoff, or it is refused."""
    cutoffs = {c for _, c in source.pair_code_}
    if len(cutoffs) > 1:
        raise OnlinePublishError(
            f"snapshot {manifest['snapshot_id']} holds {len(cutoffs)} cutoffs; "
            "an online store serves one"
        )
    users = [u for u, _ in source.pair_code_]
    cutoff_ns = next(iter(cutoffs)) if cutoffs else 0
    return users, int(cutoff_ns)


def user_rows(source: FeatureSource, n_pairs: int) -> Iterator[dict[str, Any]]:
    """Per pair code, in order: block -> (item codes, value rows) sliced from sorted keys."""
    bounds = {}
    for name in PAIR_BLOCKS:
        block = getattr(source, name)
        first = block.keys // np.int64(block.n_items + 1)
        codes = np.arange(n_pairs + 1, dtype=np.int64)
        bounds[name] = (block, np.searchsorted(first, codes, side="left"))
    for p in range(n_pairs):
        rows = {}
        for name, (block, edge) in bounds.items():
            lo, hi = int(edge[p]), int(edge[p + 1])
            items = block.keys[lo:hi] - np.int64(p) * np.int64(block.n_items + 1)
            rows[name] = (items, block.values[lo:hi])
        yield rows


def _write_users(
    client: Any, ns: str, source: FeatureSource, users: list[str], erased: set[str]
) -> int:
    pipe, pending, written = client.pipeline(transaction=False), 0, 0
    for user, rows in zip(users, user_rows(source, len(users)), strict=True):
        if user in erased:
            continue
        pipe.set(Keys.user(ns, user), encode_user(ns, rows))
        pending += 1
        if pending >= PIPELINE_BATCH:
            pipe.execute()
            written, pending = written + pending, 0
    pipe.execute()
    return written + pending


def _meta(
    manifest: dict[str, Any], source: FeatureSource, colver: str, cutoff_ns: int, users: int
) -> dict[str, Any]:
    """What a server checks (as it checks a snapshot's manifest) and the namespace's codes."""
    return {
        **{k: manifest.get(k) for k in MANIFEST_FACTS},
        "columns_version": colver,
        "columns": {name: list(cols) for name, cols in BLOCKS.items()},
        "n_items": {name: int(getattr(source, name).n_items) for name in BLOCKS},
        "cutoff_ns": cutoff_ns,
        "merchants": list(source.merchant_code_),
        "mccs": list(source.mcc_code_),
        "as_of_ns": [int(t) for t in source.as_of_code_],
        "users": users,
        "published_at": datetime.now(UTC).isoformat(),
    }


def _delete_erased(client: Any, ns: str, erased: set[str]) -> int:
    """Erasures recorded while the job ran: their values go now that the switch is made."""
    users = sorted(erased)
    deleted = 0
    for i in range(0, len(users), PIPELINE_BATCH):
        pipe = client.pipeline(transaction=False)
        for user in users[i : i + PIPELINE_BATCH]:
            pipe.delete(Keys.user(ns, user))
        deleted += int(sum(pipe.execute()))
    return deleted


def _others(client: Any, keys: Keys, ns: str) -> list[str]:
    return sorted(n.decode() for n in client.smembers(keys.namespaces) if n.decode() != ns)


def _drop_namespace(client: Any, keys: Keys, ns: str) -> int:
    """`alive` first (servers reading it reload), then every value; the set entry last."""
    client.delete(Keys.alive(ns))
    removed = int(client.unlink(Keys.meta(ns), Keys.base(ns)))
    batch: list[bytes] = []
    for key in client.scan_iter(match=Keys.user_pattern(ns), count=SCAN_BATCH):
        batch.append(key)
        if len(batch) >= SCAN_BATCH:
            removed += int(client.unlink(*batch))
            batch = []
    if batch:
        removed += int(client.unlink(*batch))
    client.srem(keys.namespaces, ns)
    return removed


def wait_seconds(seconds: float) -> None:
    """The grace before old namespaces are dropped (servers switch on their next look)."""
    if seconds > 0:
        time.sleep(seconds)
