"""Where MLflow lives and how to reach it: the tracking URI, the client, the experiment.

The URI is resolved at call time, never at import: `MLFLOW_TRACKING_URI` when set, else the
SQLite store under OFFERS_HOME (features/home.py resolves it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.home import resolve_home
from features.tracking.names import CHAMPION, EXPERIMENT, MODEL_NAME

if TYPE_CHECKING:  # heavy imports happen inside the functions that need them
    from mlflow import MlflowClient

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_REGISTRY_URI = "MLFLOW_REGISTRY_URI"


def tracking_uri(home: str | os.PathLike[str] | None = None) -> str:
    """MLFLOW_TRACKING_URI when set, else the SQLite store under OFFERS_HOME."""
    uri = os.environ.get(ENV_TRACKING_URI)
    if uri:
        return uri
    return f"sqlite:///{resolve_home(home) / 'mlflow.db'}"


def uses_local_store(home: str | os.PathLike[str] | None = None) -> bool:
    return not os.environ.get(ENV_TRACKING_URI)


def artifact_root(home: str | os.PathLike[str] | None = None) -> Path:
    """Where run and model artifacts live with the default local store."""
    return resolve_home(home) / "mlartifacts"


def configure(home: str | os.PathLike[str] | None) -> str:
    """Point the fluent API and the registry at the resolved URI (every call: env may change)."""
    import mlflow

    uri = tracking_uri(home)
    if uses_local_store(home):
        resolve_home(home).mkdir(parents=True, exist_ok=True)
    # mlflow.set_*_uri also copy the URI into os.environ; undo that, or the first OFFERS_HOME
    # used in a process would pose as a user-set MLFLOW_TRACKING_URI for every later call.
    saved = {k: os.environ.get(k) for k in (ENV_TRACKING_URI, ENV_REGISTRY_URI)}
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return uri


def client(home: str | os.PathLike[str] | None = None) -> MlflowClient:
    from mlflow import MlflowClient

    uri = configure(home)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_uri(alias: str = CHAMPION, name: str = MODEL_NAME) -> str:
    return f"models:/{name}@{alias}"


def ensure_experiment(home: str | os.PathLike[str] | None, name: str = EXPERIMENT) -> str:
    """The experiment's id, created on first use (artifacts under OFFERS_HOME when local)."""
    c = client(home)
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uses_local_store(home):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "experiment"
        location = (artifact_root(home) / slug).as_uri()
    return c.create_experiment(name, artifact_location=location)


def clip_text(value: Any, limit: int) -> str:
    """A param or tag value as text MLflow accepts: JSON for non-strings, cut to `limit`."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
