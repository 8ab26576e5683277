"""Leftovers of killed jobs: folders and files written aside carry their owner in the name.

A killed process runs no cleanup (no `finally`, no finaliser), so snapshot staging folders,
pointer temp files and DuckDB spill folders can outlive it, and staging holds users' rows. Each
name carries `<pid>-<start>` of the process that made it; a later job removes exactly those
whose owner is gone, never a live job's work (the start time tells a reused pid apart).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psutil

from features.processes import start_ticks

STAGING_PREFIX = ".staging-"  # snapshot folders written aside, in the features folder
POINTER_PREFIX = ".CURRENT."  # the CURRENT pointer written aside
SPILL_PREFIXES = ("offers-duckdb-", "offers-spark-")  # engine scratch, in the temp folder


def owner_tag() -> str:
    """`<pid>-<start>` of this process, for names of things written aside."""
    pid = os.getpid()
    return f"{pid}-{start_ticks(pid)}"


def _owner_alive(rest: str) -> bool | None:
    """Whether the process named at the start of `rest` runs; None when no owner is named."""
    parts = rest.split("-")
    if len(parts) < 3 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    pid = int(parts[0])
    if not psutil.pid_exists(pid):
        return False
    started = start_ticks(pid)
    return started == "" or started == parts[1]  # unreadable: someone's live process, keep


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def sweep(folder: Path, prefixes: tuple[str, ...], unowned: bool) -> list[Path]:
    """Remove entries of `folder` named `<prefix><owner>-...` whose owner is dead; entries
    naming no owner (written before owners were named) too when `unowned`. Returns them."""
    if not folder.is_dir():
        return []
    swept = []
    for entry in sorted(folder.iterdir()):
        prefix = next((p for p in prefixes if entry.name.startswith(p)), None)
        if prefix is None:
            continue
        alive = _owner_alive(entry.name[len(prefix) :])
        if alive is False or (alive is None and unowned):
            _remove(entry)
            swept.append(entry)
    return swept


def sweep_features_dir(features_dir: str | Path) -> list[Path]:
    """Staging folders and pointer temp files of dead builds (they may hold users' rows).

    Staging folders that name no owner come from versions before owners were named, all of
    them killed or finished long ago: they are removed too.
    """
    folder = Path(features_dir)
    return sweep(folder, (STAGING_PREFIX,), unowned=True) + sweep(
        folder, (POINTER_PREFIX,), unowned=False
    )


def sweep_spill(temp_dir: str | Path | None = None) -> list[Path]:
    """Engine spill and scratch folders of dead processes in the temp folder. Folders naming no
    owner are left: other programs on the machine may still run an older version."""
    return sweep(Path(temp_dir or tempfile.gettempdir()), SPILL_PREFIXES, unowned=False)


def spill_dir(prefix: str) -> Path:
    """A fresh scratch folder in the temp folder, named for this process."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-"))
