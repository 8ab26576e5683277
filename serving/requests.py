"""The checks every request passes before anything is decided: k, and the decision time.

Why apart from the Scorer: HTTP (serving.app), batches (serving.batch) and the Scorer all apply
them, and a refused request must be refused the same way on every path (RequestError: 422).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from policy import as_utc

if TYPE_CHECKING:
    from serving.state import ServingState

MAX_K = 100
# A request's `now` may lag the server clock by this much (client clocks drift). Further in the
# past only in replay mode: a past decision time would otherwise undo a withdrawal.
CLOCK_SKEW = timedelta(minutes=5)
# The decision times the system answers for: [NOW_MIN, NOW_MAX) in UTC. Far inside the
# nanosecond range every array here uses (1677..2262); outside it a `now` is a client's bug,
# refused (RequestError, HTTP 422) before anything is decided, never a crash.
NOW_MIN = datetime(1970, 1, 1, tzinfo=UTC)
NOW_MAX = datetime(2200, 1, 1, tzinfo=UTC)


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


def check_request(state: ServingState, k: int, now: datetime, allow_past_now: bool) -> None:
    """k in range, `now` not before the snapshot's cutoff and (outside replay) not in the past.

    Public because a batch checks once up front (serving.batch) what every chunk checks again.
    """
    if not 1 <= k <= MAX_K:
        raise RequestError(f"k must be between 1 and {MAX_K}, not {k}")
    if now < state.cutoff:
        raise RequestError(
            f"now {now.isoformat()} is before the feature snapshot's cutoff "
            f"{state.cutoff.isoformat()}: its features would come from the future"
        )
    if not allow_past_now and now < datetime.now(UTC) - CLOCK_SKEW:
        raise RequestError(
            f"now {now.isoformat()} is in the past: a past decision time could undo a "
            "withdrawal, so it is accepted only in replay mode (allow_past_now)"
        )


def candidate_index(state: ServingState, candidates: Sequence[str] | None) -> np.ndarray | None:
    """The candidates' catalogue rows; unknown or repeated ids are a RequestError naming them."""
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
