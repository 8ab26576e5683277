"""A file's identity for "did it change?": cheap enough to ask every watcher tick."""

from __future__ import annotations

from pathlib import Path

Signature = tuple[int, int, int] | None  # (inode, mtime ns, size); None: no such file


def signature(path: Path) -> Signature:
    """(inode, mtime, size): an append, a replacement or a new file all change it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
