"""The register of online stores published from an OFFERS_HOME, and erasure in them.

Why a register: erasure must reach every copy of a user's rows, and a Redis the feature job
wrote to is one. `publish-online` records the store here *before* it writes a key, so a job
that dies half-way still leaves a store that `offers erase` knows of. The register holds the
URL without its password (a secret has no place under OFFERS_HOME); erasure takes the password
from OFFERS_ONLINE_STORE when that names the same store.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from features.online.layout import DEFAULT_PREFIX, ONLINE_STORE_ENV, Keys

ONLINE_DIR = "online"  # under OFFERS_HOME
STORES_FILE = "stores.json"
CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 10.0


class OnlineStoreError(RuntimeError):
    """An online store that cannot be reached or read as this code expects."""


@dataclass(frozen=True)
class StoreRef:
    url: str  # without a password
    prefix: str = DEFAULT_PREFIX

    @property
    def label(self) -> str:
        return f"{self.url} (prefix {self.prefix})"


def redact(url: str) -> str:
    """The URL without user and password: what the register, logs and receipts show."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise OnlineStoreError(f"online store {redact_any(url)!r}: not a redis:// or rediss:// URL")
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def redact_any(url: str) -> str:
    return url.split("@", 1)[-1] if "@" in url else url


def connect(url: str) -> Any:
    """A redis client with bounded timeouts (an unreachable store fails in seconds, loudly)."""
    import redis

    try:
        return redis.Redis.from_url(
            _with_secret(url),
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=COMMAND_TIMEOUT_S,
        )
    except ValueError as exc:
        raise OnlineStoreError(f"online store {redact_any(url)!r}: {exc}") from exc


def _with_secret(url: str) -> str:
    """A registered (password-less) URL gets the password of OFFERS_ONLINE_STORE's same store."""
    configured = os.environ.get(ONLINE_STORE_ENV, "")
    if "@" in url or not configured or "@" not in configured:
        return url
    return configured if redact(configured) == redact(url) else url


def register_path(home: Path) -> Path:
    return Path(home) / ONLINE_DIR / STORES_FILE


def registered_stores(home: Path) -> list[StoreRef]:
    path = register_path(home)
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [StoreRef(r["url"], r.get("prefix", DEFAULT_PREFIX)) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise OnlineStoreError(f"{path}: unreadable register of online stores ({exc})") from exc


def register_store(home: Path, url: str, prefix: str) -> StoreRef:
    """Add the store to the register (atomically: aside, then rename); idempotent."""
    ref = StoreRef(redact(url), prefix)
    known = registered_stores(home)
    if ref in known:
        return ref
    path = register_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"url": s.url, "prefix": s.prefix} for s in [*known, ref]]
    rows[-1]["registered_at"] = datetime.now(UTC).isoformat()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return ref


def delete_user_keys(client: Any, keys: Keys, user_ids: list[str]) -> int:
    """Delete the users' values in every namespace of the store: the number of keys deleted."""
    namespaces = sorted(n.decode() for n in client.smembers(keys.namespaces))
    if not namespaces or not user_ids:
        return 0
    pipe = client.pipeline(transaction=False)
    for ns in namespaces:
        for user in user_ids:
            pipe.delete(Keys.user(ns, user))
    return int(sum(pipe.execute()))


def erase_in_store(ref: StoreRef, user_id: str) -> int:
    """Keys deleted for the user in one registered store; OnlineStoreError when unreachable."""
    import redis

    try:
        return delete_user_keys(connect(ref.url), Keys(ref.prefix), [user_id])
    except redis.RedisError as exc:
        raise OnlineStoreError(
            f"online store {ref.label}: unreachable or failing ({exc}); "
            "the user's keys may remain there"
        ) from exc
