"""The erasure register: users whose consent was withdrawn through `offers erase`. Final.

Feature jobs, training and serving all read it, so a withdrawal reaches every store. It holds
only pseudonymous user ids and times, never transaction data.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

REGISTER = "erasures.jsonl"


def read_erasures(erasures_dir: str | Path) -> dict[str, datetime]:
    """user_id -> first erasure time; a missing register means nobody was erased."""
    path = Path(erasures_dir) / REGISTER
    if not path.exists():
        return {}
    erased: dict[str, datetime] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            user, at = record["user_id"], datetime.fromisoformat(record["erased_at"])
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{path}:{line_no}: unreadable erasure record ({exc})") from exc
        erased[user] = min(erased.get(user, at), at)
    return erased


def record_erasure(erasures_dir: str | Path, user_id: str, at: datetime | None = None) -> datetime:
    """Append and fsync before anything is deleted, so a crash never forgets an erasure."""
    at = at or datetime.now(UTC)
    path = Path(erasures_dir) / REGISTER
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"user_id": user_id, "erased_at": at.isoformat()}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return at
