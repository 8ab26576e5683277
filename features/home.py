"""OFFERS_HOME: where everything the system writes lives, resolved when a job runs, never at import.

The one resolution rule for the CLI (offers/settings.py), the MLflow module and the HTTP
server's workers (which find their settings in the environment).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "OFFERS_HOME"
DEFAULT_HOME = ".offers"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The argument, else OFFERS_HOME, else ./.offers; absolute, so workers agree on it."""
    chosen = home if home is not None else os.environ.get(HOME_ENV, DEFAULT_HOME)
    return Path(chosen).expanduser().resolve()
