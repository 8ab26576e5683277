"""The online store's key layout and value codec: what `publish-online` writes, serving reads.

Why one module for both sides: the writer (features.online.publish) and the reader
(serving.online) must agree byte for byte, and erasure (features.online.stores) must know every
key that holds a user's rows.

Keys (PREFIX defaults to "offers"; NS = PREFIX:<snapshot id>:<columns version>):
- `PREFIX:current`      the namespace being served (one SET flips it: the atomic switch)
- `PREFIX:namespaces`   a set of every namespace present (erasure and clean-up read it)
- `NS:alive`            the snapshot id while NS is complete and not being deleted
- `NS:meta`             JSON: manifest facts the server checks, the columns, the code tables
- `NS:base`             the population blocks (no user's row)
- `NS:u:<user id>`      one user's rows of every per-user table (one GET per request)

A user value is `MAGIC, namespace, then per pair block: n rows (u32), item codes (i64),
values (f64, n x columns)`: it carries its namespace, so a value read under the wrong snapshot
is detected, never mixed in. Item codes index the namespace's own code tables (in `meta`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass

import numpy as np

from features.vector import BLOCKS, PAIR_BLOCKS, POPULATION_BLOCKS, KeyedBlock

DEFAULT_PREFIX = "offers"
ONLINE_STORE_ENV = "OFFERS_ONLINE_STORE"  # redis://HOST:PORT/DB: publish-online and serve
ONLINE_PREFIX_ENV = "OFFERS_ONLINE_PREFIX"  # the keys' prefix (default "offers")
USER_MAGIC = b"OFU1"
BASE_MAGIC = b"OFB1"
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


class OnlineValueError(ValueError):
    """A value in the online store that this code cannot read as written by publish-online."""


def online_prefix() -> str:
    """OFFERS_ONLINE_PREFIX, else "offers": several deployments may share one Redis."""
    return os.environ.get(ONLINE_PREFIX_ENV) or DEFAULT_PREFIX


def columns_version(blocks: dict[str, tuple[str, ...]] | None = None) -> str:
    """A short digest of the blocks' column names and order: part of every key's namespace."""
    text = json.dumps({k: list(v) for k, v in (blocks or BLOCKS).items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Keys:
    """Every key name of one store prefix and (optionally) one namespace."""

    prefix: str = DEFAULT_PREFIX

    @property
    def current(self) -> str:
        return f"{self.prefix}:current"

    @property
    def namespaces(self) -> str:
        return f"{self.prefix}:namespaces"

    def namespace(self, snapshot_id: str, colver: str) -> str:
        return f"{self.prefix}:{snapshot_id}:{colver}"

    @staticmethod
    def alive(ns: str) -> str:
        return f"{ns}:alive"

    @staticmethod
    def meta(ns: str) -> str:
        return f"{ns}:meta"

    @staticmethod
    def base(ns: str) -> str:
        return f"{ns}:base"

    @staticmethod
    def user(ns: str, user_id: str) -> str:
        return f"{ns}:u:{user_id}"

    @staticmethod
    def user_pattern(ns: str) -> str:
        return f"{ns}:u:*"


def encode_user(ns: str, rows: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """One user's rows: per pair block (in PAIR_BLOCKS order) item codes and value rows."""
    name = ns.encode()
    parts = [USER_MAGIC, _U16.pack(len(name)), name]
    for block in PAIR_BLOCKS:
        items, values = rows[block]
        parts += [
            _U32.pack(len(items)),
            np.ascontiguousarray(items, dtype="<i8").tobytes(),
            np.ascontiguousarray(values, dtype="<f8").tobytes(),
        ]
    return b"".join(parts)


def decode_user(
    value: bytes, ns: str, widths: dict[str, int]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """block -> (item codes, values n x width); refuses a value of another namespace."""
    if value[:4] != USER_MAGIC:
        raise OnlineValueError(f"online value is not a user value of this format ({value[:4]!r})")
    (n_name,) = _U16.unpack_from(value, 4)
    got = value[6 : 6 + n_name].decode()
    if got != ns:
        raise OnlineValueError(f"online value belongs to {got}, not {ns}: mixed snapshots")
    pos, out = 6 + n_name, {}
    for block in PAIR_BLOCKS:
        pos, out[block] = _read_rows(value, pos, widths[block])
    if pos != len(value):
        raise OnlineValueError(f"online value under {ns}: {len(value) - pos} trailing bytes")
    return out


def _read_rows(value: bytes, pos: int, width: int) -> tuple[int, tuple[np.ndarray, np.ndarray]]:
    (n,) = _U32.unpack_from(value, pos)
    pos += 4
    items = np.frombuffer(value, dtype="<i8", count=n, offset=pos)
    pos += 8 * n
    values = np.frombuffer(value, dtype="<f8", count=n * width, offset=pos).reshape(n, width)
    return pos + 8 * n * width, (items, values)


def encode_base(blocks: dict[str, KeyedBlock]) -> bytes:
    """The population blocks as they are (sorted keys, values): no user's row."""
    parts = [BASE_MAGIC]
    for name in POPULATION_BLOCKS:
        block = blocks[name]
        parts += [
            _U32.pack(len(block.keys)),
            np.ascontiguousarray(block.keys, dtype="<i8").tobytes(),
            np.ascontiguousarray(block.values, dtype="<f8").tobytes(),
        ]
    return b"".join(parts)


def decode_base(value: bytes, n_items: dict[str, int]) -> dict[str, KeyedBlock]:
    if value[:4] != BASE_MAGIC:
        raise OnlineValueError(f"online base value is not of this format ({value[:4]!r})")
    pos, out = 4, {}
    for name, columns in POPULATION_BLOCKS.items():
        pos, (keys, values) = _read_rows(value, pos, len(columns))
        out[name] = KeyedBlock.presorted(keys, values, n_items[name])
    return out
