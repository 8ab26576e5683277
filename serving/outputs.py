"""Batch outputs: written atomically and recorded under OFFERS_HOME, so erasure can find them.

Why a register: `offers score-batch --out PATH` may write anywhere, and a file outside
OFFERS_HOME holds user rows that `offers erase` would otherwise never see. The path is recorded
(fsynced) *before* the file is written, so a writer killed mid-write leaves a recorded path
whose leftovers erasure still sweeps. The register holds paths and times, never rows.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from features.appendlog import BadLine, append_json, read_lines

log = logging.getLogger(__name__)

OUTPUTS_DIR = "outputs"
REGISTER = "written.jsonl"
KIND_SCORE_BATCH = "score-batch"
TMP_MARK = ".tmp"  # `.<name>.<hex>.tmp`: a batch writer's file before its rename
_TORN_PATH = re.compile(r'"path"\s*:\s*"((?:[^"\\]|\\.)*)"')


def register_path(home: Path) -> Path:
    return Path(home) / OUTPUTS_DIR / REGISTER


def record_output(home: Path, out: Path, kind: str = KIND_SCORE_BATCH) -> None:
    """Record where rows are about to be written (raises if the record is not durable)."""
    record = {"path": str(Path(out).resolve()), "kind": kind, "at": datetime.now(UTC).isoformat()}
    append_json(register_path(home), record)


def recorded_outputs(home: Path) -> list[Path]:
    """Every recorded output path, first-recorded order, each once; torn lines salvaged."""
    path = register_path(home)
    if not path.exists():
        return []
    found: dict[str, None] = {}

    def bad_line(bad: BadLine) -> None:
        match = _TORN_PATH.search(bad.text)
        if match:
            found[match.group(1)] = None
        log.warning("%s%s", bad, "" if match else "; no path in it")

    for record in read_lines(path, bad_line, required=("path",)):
        found[record["path"]] = None
    return [Path(p) for p in found]


def write_output(frame: pd.DataFrame, out: Path, home: Path) -> None:
    """Record `out`, write it aside, rename: a crash never leaves a partial or unrecorded file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    record_output(home, out)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}{TMP_MARK}")
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def leftovers(out: Path) -> list[Path]:
    """Temporary files a killed writer of `out` left beside it (batch or erase)."""
    if not out.parent.is_dir():
        return []
    prefix = f".{out.name}."
    return sorted(
        p for p in out.parent.iterdir() if p.name.startswith(prefix) and TMP_MARK in p.name
    )
