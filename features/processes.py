"""Which process is this: a pid plus its start time, so a reused pid is not taken for its owner.

The start time is the kernel's clock ticks since boot (/proc/<pid>/stat, field 22): fixed for the
life of the process. psutil's create_time adds /proc/stat's `btime`, which the kernel derives
from the wall clock on every read and which moves by a second on some machines: a live owner
then looked dead and a running job's spill folder was swept from under it.
"""

from __future__ import annotations

from pathlib import Path

import psutil


def start_ticks(pid: int) -> str:
    """The process's start, as a string that changes only with the process ('' if unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    except OSError:  # no /proc here: the best stable stamp the platform gives
        try:
            return str(int(psutil.Process(pid).create_time() * 1000))
        except psutil.Error:
            return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime (after pid and comm)
