"""The model registry: versions, aliases, tags, and loading a version as a RegisteredRanker."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.tracking.names import (
    CHALLENGER,
    CHAMPION,
    META_FEATURE_COLUMNS,
    MODEL_NAME,
    TAG_HELD_ALIAS,
    TAG_POLICY_VERSION,
    TAG_SNAPSHOT_ID,
)
from features.tracking.store import client, clip_text, configure, tracking_uri

if TYPE_CHECKING:
    import lightgbm


@dataclass(frozen=True)
class RegisteredRanker:
    """A registered ranking model as serving needs it: the native Booster plus its lineage.

    The one shape of a registered model: the registry loaders, Spark's broadcast copy on the
    executors and the test stubs all build this.
    """

    booster: lightgbm.Booster
    name: str
    version: str
    alias: str
    run_id: str
    feature_columns: list[str]
    snapshot_id: str | None  # feature rows it was trained on (point-in-time pairs id, "pit-...")
    policy_version: str
    half_life_days: float | None = None  # of its decayed-spend features (run param); None: unknown


def register_version(
    home: str | os.PathLike[str] | None,
    logged_model_uri: str,
    run_id: str,
    tags: Mapping[str, str],
    alias: str = CHALLENGER,
    name: str = MODEL_NAME,
) -> str:
    """Register a logged model as a new version, tag it and point `alias` at it."""
    import mlflow

    configure(home)
    # register_model passes the logged model's id along, which a tracking server requires.
    version = mlflow.register_model(logged_model_uri, name, tags=dict(tags))
    if version.run_id and version.run_id != run_id:
        raise RuntimeError(f"registered version {version.version} came from run {version.run_id}")
    set_alias(home, alias, str(version.version), name)
    return str(version.version)


def set_alias(
    home: str | os.PathLike[str] | None, alias: str, version: str, name: str = MODEL_NAME
) -> None:
    c = client(home)
    c.set_registered_model_alias(name, alias, str(version))
    c.set_model_version_tag(name, str(version), TAG_HELD_ALIAS, alias)


def tag_version(
    home: str | os.PathLike[str] | None,
    version: str,
    tags: Mapping[str, str],
    name: str = MODEL_NAME,
) -> None:
    c = client(home)
    for key, value in tags.items():
        c.set_model_version_tag(name, str(version), key, clip_text(value, 5000))


def alias_version(
    home: str | os.PathLike[str] | None, alias: str, name: str = MODEL_NAME
) -> str | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client(home).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if _is_not_found(exc):
            return None
        raise


def version_info(
    home: str | os.PathLike[str] | None, version: str, name: str = MODEL_NAME
) -> dict[str, Any]:
    """A version's tags, aliases and run (with the run's params and tags), as plain data."""
    c = client(home)
    mv = c.get_model_version(name, str(version))
    run = c.get_run(mv.run_id) if mv.run_id else None
    return {
        "name": name,
        "version": str(mv.version),
        "aliases": list(mv.aliases),
        "tags": dict(mv.tags),
        "run_id": mv.run_id,
        "run_params": dict(run.data.params) if run else {},
        "run_tags": dict(run.data.tags) if run else {},
        "run_metrics": dict(run.data.metrics) if run else {},
    }


def load_run_text(
    home: str | os.PathLike[str] | None, run_id: str, artifact_file: str
) -> str | None:
    """A text artifact of a run (e.g. a Booster logged as text); None when the run has none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    configure(home)
    try:
        return str(mlflow.artifacts.load_text(f"runs:/{run_id}/{artifact_file}"))
    except (MlflowException, OSError) as exc:
        if isinstance(exc, OSError) or _is_not_found(exc):
            return None
        raise


def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def load_registered_model(home: Path, alias: str = CHAMPION) -> RegisteredRanker:
    """The version behind `models:/offer-ranker@<alias>` with its Booster and lineage.

    Raises LookupError naming the alias when nothing carries it (e.g. no champion yet).
    """
    from mlflow.exceptions import MlflowException

    c = client(home)
    try:
        mv = c.get_model_version_by_alias(MODEL_NAME, alias)
    except MlflowException as exc:
        if _is_not_found(exc):
            raise LookupError(
                f"no model version of {MODEL_NAME!r} has the alias {alias!r} "
                f"(tracking URI {tracking_uri(home)}); train one and run `offers promote`"
            ) from exc
        raise
    return _load_version(home, mv, alias)


def load_model_uri(home: Path, uri: str) -> RegisteredRanker:
    """Any `models:/offer-ranker@alias` or `models:/offer-ranker/<version>` URI."""
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
    if not match:
        raise ValueError(f"{uri!r} is not models:/<name>@<alias> or models:/<name>/<version>")
    name, alias, version = match.groups()
    if name != MODEL_NAME:
        raise ValueError(f"{uri!r}: only {MODEL_NAME!r} is served here")
    if alias:
        return load_registered_model(home, alias)
    from mlflow.exceptions import MlflowException

    c = client(home)
    try:
        mv = c.get_model_version(MODEL_NAME, version)
    except MlflowException as exc:
        if _is_not_found(exc):
            raise LookupError(f"{MODEL_NAME!r} has no version {version}") from exc
        raise
    return _load_version(home, mv, "")


def _load_version(home: Path, mv: Any, alias: str) -> RegisteredRanker:
    import mlflow

    from features.definitions import HALF_LIFE_PARAM  # here: definitions imports ibis

    configure(home)
    uri = f"models:/{MODEL_NAME}/{mv.version}"
    booster = mlflow.lightgbm.load_model(uri)
    info = mlflow.models.get_model_info(uri)
    columns = list((info.metadata or {}).get(META_FEATURE_COLUMNS) or booster.feature_name())
    tags = dict(mv.tags)
    run = client(home).get_run(mv.run_id) if mv.run_id else None
    half_life = run.data.params.get(HALF_LIFE_PARAM) if run else None
    return RegisteredRanker(
        booster=booster,
        name=MODEL_NAME,
        version=str(mv.version),
        alias=alias,
        run_id=str(mv.run_id or ""),
        feature_columns=[str(c) for c in columns],
        snapshot_id=tags.get(TAG_SNAPSHOT_ID) or None,
        policy_version=tags.get(TAG_POLICY_VERSION, ""),
        half_life_days=float(half_life) if half_life else None,
    )
