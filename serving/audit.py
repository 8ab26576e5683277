"""The audit log: one JSON line per decision, append-only, in daily files under OFFERS_HOME/audit.

Why a file and not a table: it is the compliance record (12 CFR 1033.441, GDPR art. 7(1)); it
must survive every other store being rebuilt or erased, be readable with `grep`, and be written
by several server workers and batch processes at once. Each record is one `write(2)` on an
O_APPEND descriptor, so concurrent writers never interleave within a line, and it is flushed to
the kernel before the call returns. Durability beyond a process crash (`fsync`) is a choice:
`SYNC_RECORD` fsyncs every record (the default, ~4 ms on an ordinary disk), `SYNC_INTERVAL`
fsyncs at most once per `interval_s` (a power loss may lose that last interval).

A record never holds a raw MCC, a merchant name or an amount: `FORBIDDEN_KEYS` are refused.

Crash and full disk (features.appendlog): a record starts on a fresh line after a torn one, a
short write is continued, and a write or fsync that fails raises `AuditUnavailable`, so the
caller answers no decision without its record (HTTP 503 `AUDIT_UNAVAILABLE`). Readers report an
unreadable line by file:line and go on: a torn record is one lost line, never the ones after it.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features.appendlog import BadLine, append_record, read_lines

SUFFIX = ".jsonl"
EVENT = "event"
EVENT_DECISION = "decision"
EVENT_ERASURE = "erasure"
TS = "ts"
SYNC_RECORD = "record"
SYNC_INTERVAL = "interval"
SYNC_MODES = (SYNC_RECORD, SYNC_INTERVAL)
SYNC_ENV = "OFFERS_AUDIT_SYNC"  # "record" (default) or "interval"
DEFAULT_INTERVAL_S = 1.0
# Keys that would carry what the audit log must never hold (spec/policy.md "Audit record").
FORBIDDEN_KEYS = frozenset({"mcc", "merchant_id", "merchant", "merchant_name", "amount", "title"})
_FILE_MODE = 0o640
AUDIT_UNAVAILABLE = "AUDIT_UNAVAILABLE"  # reason code of the 503 when a record cannot be written


class AuditUnavailable(RuntimeError):
    """The audit record could not be written: the decision must not be returned (no record)."""

    reason_code = AUDIT_UNAVAILABLE


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"audit: {type(value).__name__} is not JSON serialisable")


def _check_keys(record: Mapping[str, Any]) -> None:
    for key, value in record.items():
        if key.lower() in FORBIDDEN_KEYS:
            raise ValueError(f"audit: field {key!r} may not be written to the audit log")
        if isinstance(value, Mapping):
            _check_keys(value)


def new_request_id() -> str:
    return uuid.uuid4().hex


class AuditLog:
    """Append-only writer and reader of OFFERS_HOME/audit/YYYY-MM-DD.jsonl (UTC days)."""

    def __init__(
        self,
        audit_dir: str | Path,
        sync: str | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        sync = sync or os.environ.get(SYNC_ENV) or SYNC_RECORD
        if sync not in SYNC_MODES:
            raise ValueError(f"audit sync {sync!r} is not one of {SYNC_MODES}")
        self.dir = Path(audit_dir)
        self.sync = sync
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._day = ""
        self._path = self.dir
        self._last_sync = 0.0

    # ------------------------------------------------------------------ writing

    def _descriptor(self, day: str) -> int:
        """The day's file, reopened after a fork (each process owns its descriptor)."""
        pid = os.getpid()
        if self._fd is None or day != self._day or pid != self._pid:
            if self._fd is not None and pid == self._pid:
                os.fsync(self._fd)
                os.close(self._fd)
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / f"{day}{SUFFIX}"
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, _FILE_MODE)
            self._day, self._pid, self._path = day, pid, path
        return self._fd

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Write one record (with `ts` added) and return it; durable per the sync mode."""
        return self.append_many([record])[0]

    def append_many(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One write per record, one fsync for the lot: batch scoring's group commit."""
        written: list[dict[str, Any]] = []
        fd = None
        with self._lock:
            for record in records:
                _check_keys(record)
                now = datetime.now(UTC)
                full = {TS: now.isoformat(), **record}
                line = (
                    json.dumps(full, default=_json_default, separators=(",", ":")) + "\n"
                ).encode()
                try:
                    fd = self._descriptor(now.strftime("%Y-%m-%d"))
                    append_record(fd, line, self._path, sync=False)
                except OSError as exc:  # AppendError included: ENOSPC, EIO, short write
                    raise AuditUnavailable(f"audit log not writable: {exc}") from exc
                written.append(full)
            due = self.sync == SYNC_RECORD or time.monotonic() - self._last_sync >= self.interval_s
            if fd is not None and due:
                self._last_sync = time.monotonic()
            else:
                fd = None
        if fd is not None:
            # Outside the lock: one fsync covers every earlier write on the file, and other
            # requests keep appending meanwhile.
            try:
                os.fsync(fd)
            except OSError as exc:
                raise AuditUnavailable(f"audit log not durable: {exc}") from exc
        return written

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.fsync(self._fd)
                os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------ reading

    def files(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(p for p in self.dir.iterdir() if p.suffix == SUFFIX and p.is_file())

    def records(self, on_bad: Callable[[BadLine], None] | None = None) -> list[dict[str, Any]]:
        """Every record, oldest first (tests and audits; the log is not meant to be small)."""
        return [r for path in self.files() for r in _read(path, on_bad)]

    def tail(
        self, n: int = 20, on_bad: Callable[[BadLine], None] | None = None
    ) -> list[dict[str, Any]]:
        """The last n readable records across the daily files, oldest first."""
        if n <= 0:
            return []
        out: deque[dict[str, Any]] = deque(maxlen=n)
        for path in reversed(self.files()):
            records = _read(path, on_bad)
            out.extendleft(reversed(records[-(n - len(out)) :]))
            if len(out) >= n:
                break
        return list(out)


def _read(path: Path, on_bad: Callable[[BadLine], None] | None) -> list[dict[str, Any]]:
    """Readable records of one file; a bad line goes to `on_bad` (default: raise, naming it)."""

    def refuse(bad: BadLine) -> None:
        raise ValueError(f"{bad} (torn by a crash or a full disk?)")

    return list(read_lines(path, on_bad or refuse))
