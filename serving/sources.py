"""Does the data a server reads come from the files its feature snapshot was built from?

A snapshot built from one folder and served with another folder's users and consents ranks
every user as a stranger (or worse, with someone else's features) and says nothing. The
snapshot's manifest records each source file's SHA-256; the scorer compares the two tables it
reads beside the snapshot. Transactions are left out: the scorer never reads them, and hashing
a large transactions file costs seconds on every load.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from features.contract import CONSENTS, USERS
from features.io import file_digest, table_path

log = logging.getLogger(__name__)

DATA_MISMATCH_ENV = "OFFERS_ALLOW_DATA_MISMATCH"  # "1": warn instead of refusing to load
CHECKED_SOURCES = (USERS, CONSENTS)  # what the scorer reads beside the snapshot


class DataMismatchError(RuntimeError):
    """The snapshot was built from other users or consents files than the ones served."""


def differing_sources(manifest: dict[str, Any], data_dir: Path) -> list[str]:
    """The checked tables whose file in `data_dir` differs from the one the snapshot read."""
    recorded = manifest.get("source_digests") or {}
    return [
        t
        for t in CHECKED_SOURCES
        if t in recorded and file_digest(table_path(data_dir, t)) != recorded[t]
    ]


def check_sources(
    manifest: dict[str, Any], data_dir: Path, allow_mismatch: bool | None = None
) -> list[str]:
    """Refuse (or, allowed by flag or OFFERS_ALLOW_DATA_MISMATCH=1, warn) on differing sources.

    Returns the differing tables (empty when the data matches).
    """
    differ = differing_sources(manifest, data_dir)
    if not differ:
        return []
    if allow_mismatch is None:
        allow_mismatch = os.environ.get(DATA_MISMATCH_ENV, "") == "1"
    message = (
        f"snapshot {manifest['snapshot_id']} was built from other data than {data_dir} "
        f"({', '.join(differ)} differ): rebuild it with "
        f"`offers features build --data {data_dir}`, or pass --allow-data-mismatch"
    )
    if not allow_mismatch:
        raise DataMismatchError(message)
    log.warning(message)
    return differ
