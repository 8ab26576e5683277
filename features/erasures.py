"""The erasure register: users whose consent was withdrawn through `offers erase`. Final.

Feature jobs, training and serving all read it, so a withdrawal reaches every store. It holds
only pseudonymous user ids and times, never transaction data.

One semantics (spec/policy.md "Erasure"): once recorded, an erasure holds for every decision
made afterwards, whatever instant the decision is asked about. `erased_since_always` is the
one function that turns the register into the erasure times the policy sees; explain, the
Scorer, batch scoring, training and predict all go through it (via `user_facts`).

Crash safety: each record is appended whole and fsynced (features.appendlog), after any torn
line a crash left. Reading fails closed: a torn line whose user id can still be read counts as
an erasure of that user (at every instant); a line with no readable user id is reported by
file:line and skipped, which is safe because `record_erasure` raises, and `offers erase` stops
before removing anything, unless the whole record reached the disk: such a line was never an
acknowledged erasure.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from features.appendlog import AppendError, BadLine, append_json, read_lines
from features.contract import USER_ID

log = logging.getLogger(__name__)

REGISTER = "erasures.jsonl"
ERASED_AT = "erased_at"  # with contract.USER_ID, the register's two fields
RESERVE = ".reserve"  # freed on ENOSPC so that one more erasure can still be recorded
RESERVE_BYTES = 64 * 1024
# Erasure holds at every instant: the policy sees this as the erasure time of every erased user.
ERASED_SINCE_ALWAYS = datetime.min.replace(tzinfo=UTC)
_TORN_USER = re.compile(r'"user_id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _salvage(bad: BadLine) -> str | None:
    """The user id of a torn record, when it was written whole (closing quote included)."""
    match = _TORN_USER.search(bad.text)
    return match.group(1) if match else None


def read_erasures(
    erasures_dir: str | Path, on_bad: Callable[[BadLine], None] | None = None
) -> dict[str, datetime]:
    """user_id -> first erasure time; a missing register means nobody was erased.

    Fail closed: a torn line with a readable user id erases that user (time unknown: the
    earliest instant); a line without one is reported (`on_bad`, else a warning) and skipped.
    """
    path = Path(erasures_dir) / REGISTER
    if not path.exists():
        return {}
    erased: dict[str, datetime] = {}

    def bad_line(bad: BadLine) -> None:
        user = _salvage(bad)
        if user is not None:
            erased[user] = ERASED_SINCE_ALWAYS
        (on_bad or _warn)(bad)

    for record in read_lines(path, bad_line, required=(USER_ID,)):
        user = record[USER_ID]
        try:
            when = datetime.fromisoformat(str(record.get(ERASED_AT)))
        except ValueError:
            when = ERASED_SINCE_ALWAYS  # the id is there: erased, time unreadable
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        erased[user] = min(erased.get(user, when), when)
    return erased


def _warn(bad: BadLine) -> None:
    log.warning("%s; an erasure whose user id is unreadable was never acknowledged", bad)


def erased_since_always(erased: Mapping[str, datetime] | None) -> dict[str, datetime]:
    """The erasure times the policy uses: every recorded erasure holds at every instant."""
    return {user: ERASED_SINCE_ALWAYS for user in erased or {}}


def is_erased(erased: Mapping[str, datetime] | None, user_id: str) -> bool:
    """Recorded in the register, whenever: the test training and feature jobs apply."""
    return user_id in (erased or {})


def record_erasure(erasures_dir: str | Path, user_id: str, at: datetime | None = None) -> datetime:
    """Append and fsync before anything is deleted, so a crash never forgets an erasure.

    Raises AppendError when the record could not be made durable: nothing may be removed then
    (the user would not be denied), and the caller must say the erasure was not recorded.
    On ENOSPC the register's small reserve file is given up and the append tried once more.
    """
    at = at or datetime.now(UTC)
    folder = Path(erasures_dir)
    record = {USER_ID: user_id, ERASED_AT: at.isoformat()}
    try:
        append_json(folder / REGISTER, record)
    except AppendError as exc:
        if exc.errno != errno.ENOSPC or not _release_reserve(folder):
            raise
        append_json(folder / REGISTER, record)
    _keep_reserve(folder)
    return at


def _release_reserve(folder: Path) -> bool:
    reserve = folder / RESERVE
    if not reserve.exists() or reserve.stat().st_size == 0:
        return False
    reserve.unlink()
    log.warning("disk full: released %s to record the erasure; free space soon", reserve)
    return True


def _keep_reserve(folder: Path) -> None:
    """Best effort: a full disk now only means the reserve is missing for the next erasure."""
    reserve = folder / RESERVE
    if reserve.exists() and reserve.stat().st_size >= RESERVE_BYTES:
        return
    try:
        fd = os.open(reserve, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
    except OSError as exc:
        reserve.unlink(missing_ok=True)
        log.warning(
            "could not keep %s (%s): the next erasure on a full disk may fail", reserve, exc
        )
