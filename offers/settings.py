"""Where everything the system writes lives; resolved when a command runs, never at import."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from features.home import resolve_home


@dataclass(frozen=True)
class Settings:
    home: Path

    @property
    def features_dir(self) -> Path:
        return self.home / "features"

    @property
    def audit_dir(self) -> Path:
        return self.home / "audit"

    @property
    def erasures_dir(self) -> Path:
        return self.home / "erasures"


def load_settings(home: str | os.PathLike[str] | None = None) -> Settings:
    """OFFERS_HOME from the argument, else the environment, else ./.offers (absolute)."""
    return Settings(home=resolve_home(home))
