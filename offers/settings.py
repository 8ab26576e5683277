"""Where everything the system writes lives; resolved when a command runs, never at import."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".offers"


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

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"


def load_settings(home: str | os.PathLike[str] | None = None) -> Settings:
    """OFFERS_HOME from the argument, else the environment, else ./.offers (absolute)."""
    chosen = home if home is not None else os.environ.get("OFFERS_HOME", DEFAULT_HOME)
    return Settings(home=Path(chosen).expanduser().resolve())
