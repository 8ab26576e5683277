"""Append-only JSON-lines files that survive a crash or a full disk mid-record.

Why one module: the audit log, the erasure register and the output register are all compliance
records appended by several processes. Three things break such files, and each is handled here
once: a torn last line (a record cut short by a crash or ENOSPC: the next record starts on a
fresh line, so only the torn one is lost, never the one after it), a short `write(2)` (written
again from where it stopped, or the append fails), and a failed write or fsync (raised as
`AppendError`, an OSError naming the file, so the caller can refuse to go on). Readers report
each unreadable line by file:line and hand it to the caller, who decides whether going on is safe.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NEWLINE = b"\n"


class AppendError(OSError):
    """A record could not be written whole and made durable; it must count as not written."""


@dataclass(frozen=True)
class BadLine:
    """An unreadable line: where it is, what it holds and why it failed."""

    path: Path
    line_no: int
    text: str
    error: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line_no}: unreadable record ({self.error})"


def _ends_torn(fd: int) -> bool:
    """Does the file end inside a record (last byte not a newline)?"""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != NEWLINE


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out: a short write is continued, never silently dropped."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(f"write returned {n} with {len(view)} bytes left")
        view = view[n:]


def append_record(fd: int, line: bytes, path: Path, sync: bool = True) -> None:
    """Append one newline-terminated record after any torn line (fd: O_RDWR | O_APPEND)."""
    if not line.endswith(NEWLINE):
        raise ValueError("append_record: a record is one line ending in a newline")
    try:
        data = NEWLINE + line if _ends_torn(fd) else line
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    except OSError as exc:
        raise AppendError(exc.errno, f"{path}: record not written ({exc})") from exc


def append_json(path: Path, record: dict[str, Any], mode: int = 0o640) -> None:
    """Open, append one JSON record durably, close: for registers written rarely."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, mode)
    try:
        append_record(fd, line, path)
    finally:
        os.close(fd)


def read_lines(
    path: Path, on_bad: Callable[[BadLine], None], required: tuple[str, ...] = ()
) -> Iterator[dict[str, Any]]:
    """Each readable JSON object (with a non-empty string in each `required` key), in order;
    every other non-blank line goes to `on_bad`."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                on_bad(BadLine(path, line_no, text, str(exc)))
                continue
            if not isinstance(record, dict):
                on_bad(BadLine(path, line_no, text, "not a JSON object"))
                continue
            missing = [k for k in required if not isinstance(record.get(k), str) or not record[k]]
            if missing:
                on_bad(BadLine(path, line_no, text, f"no {', '.join(missing)}"))
                continue
            yield record
