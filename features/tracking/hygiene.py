"""Registry hygiene: RUNNING runs whose process is gone, versions that never held an alias.

A run is tagged with who started it (pid, host, process start time) so a later train or
promote can tell a killed run from a live one; versions are only reported, never deleted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from features.processes import start_ticks
from features.tracking.names import (
    EXPERIMENT,
    MODEL_NAME,
    TAG_HELD_ALIAS,
    TAG_HOST,
    TAG_PID,
    TAG_PROC_START,
)
from features.tracking.store import client


def process_tags(pid: int) -> dict[str, str]:
    """Who starts a run: its pid, host and process start time (tags read by `_gone`)."""
    import socket

    return {TAG_PID: str(pid), TAG_HOST: socket.gethostname(), TAG_PROC_START: start_ticks(pid)}


def _gone(tags: Mapping[str, str]) -> bool:
    """Was the run started on this host by a process that no longer runs?"""
    import socket

    if tags.get(TAG_HOST) != socket.gethostname() or not tags.get(TAG_PID, "").isdigit():
        return False  # another host's run, or no pid: nothing can be known from here
    pid = int(tags[TAG_PID])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = tags.get(TAG_PROC_START, "")
    return bool(started) and start_ticks(pid) not in ("", started)


@dataclass(frozen=True)
class RegistryHygiene:
    """What the last train or promote found: runs it closed, versions it only reports."""

    failed_runs: list[str]  # RUNNING runs whose process is gone, now FAILED
    orphan_versions: list[str]  # no alias, never held one: registration cut short
    superseded_versions: list[str]  # no alias now, held one before: ordinary history

    def lines(self) -> list[str]:
        out = [f"marked FAILED: run {r} (RUNNING, its process is gone)" for r in self.failed_runs]
        out += [
            f"version {v} of {MODEL_NAME} holds no alias and never held one (a killed train?); "
            "kept: delete it by hand if unwanted"
            for v in self.orphan_versions
        ]
        return out


def registry_hygiene(
    home: str | os.PathLike[str] | None, experiment: str = EXPERIMENT, name: str = MODEL_NAME
) -> RegistryHygiene:
    """Mark this experiment's dead RUNNING runs FAILED; list alias-less versions (never delete)."""
    c = client(home)
    failed: list[str] = []
    found = c.get_experiment_by_name(experiment)
    if found is not None:
        running = c.search_runs([found.experiment_id], "attributes.status = 'RUNNING'")
        for run in running:
            if _gone(run.data.tags):
                c.set_terminated(run.info.run_id, status="FAILED")
                failed.append(run.info.run_id)
    orphans, superseded = [], []
    for mv in c.search_model_versions(f"name = '{name}'"):
        if not mv.aliases:
            held = TAG_HELD_ALIAS in (mv.tags or {})
            (superseded if held else orphans).append(str(mv.version))
    return RegistryHygiene(failed, sorted(orphans, key=int), sorted(superseded, key=int))
