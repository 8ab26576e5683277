"""The one module that talks to MLflow: tracking runs, the model registry and its aliases.

Why on the features floor: training logs and registers models, serving loads them, and
neither may import the other (DESIGN.md floors), so the shared MLflow code sits below both.

Where: the tracking URI is resolved at call time, never at import: `MLFLOW_TRACKING_URI` when
set (a server, say), else `sqlite:///<OFFERS_HOME>/mlflow.db` with run and model artifacts
under `<OFFERS_HOME>/mlartifacts`. The registry uses the same URI.

What MLflow may hold: params, metrics, tags, dataset digests, plots, markdown and the native
LightGBM Booster with a *synthetic* input example. Never a customer row or a user id: MLflow
then has nothing to erase (spec/policy.md "Erasure"), and tests/training check it.

Registry conventions: model `offer-ranker`; every new version gets the alias `challenger`;
`offers promote` moves `champion`. Aliases only, never the deprecated stages.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports happen inside the functions that need them
    import lightgbm
    import pandas as pd
    from mlflow import MlflowClient

MODEL_NAME = "offer-ranker"
CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT = "offer-ranking"
MODEL_ARTIFACT = "model"  # name of the logged model inside a run
FEATURE_COLUMNS_ARTIFACT = "feature_columns.json"

# Tags on model versions (and runs) that serving and the promotion gate read.
TAG_POLICY_VERSION = "policy_version"
TAG_SNAPSHOT_ID = "feature_snapshot_id"
TAG_GIT_SHA = "git_sha"
TAG_PROMOTION = "promotion_decision"
TAG_PROMOTION_DETAIL = "promotion_detail"
META_FEATURE_COLUMNS = "feature_columns"  # key in the logged model's metadata

# Registry hygiene: who started a run (a RUNNING run whose process is gone was killed), and
# which alias a version ever held (one that never held any was orphaned by a killed train).
TAG_PID = "offers.pid"
TAG_HOST = "offers.host"
TAG_PROC_START = "offers.proc_start"  # /proc start time: a reused pid is not the same process
TAG_HELD_ALIAS = "offers.held_alias"

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_REGISTRY_URI = "MLFLOW_REGISTRY_URI"
ENV_HOME = "OFFERS_HOME"
DEFAULT_HOME = ".offers"


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


# ------------------------------------------------------------------------------- where


def _home(home: str | os.PathLike[str] | None) -> Path:
    chosen = home if home is not None else os.environ.get(ENV_HOME, DEFAULT_HOME)
    return Path(chosen).expanduser().resolve()


def tracking_uri(home: str | os.PathLike[str] | None = None) -> str:
    """MLFLOW_TRACKING_URI when set, else the SQLite store under OFFERS_HOME."""
    uri = os.environ.get(ENV_TRACKING_URI)
    if uri:
        return uri
    return f"sqlite:///{_home(home) / 'mlflow.db'}"


def uses_local_store(home: str | os.PathLike[str] | None = None) -> bool:
    return not os.environ.get(ENV_TRACKING_URI)


def artifact_root(home: str | os.PathLike[str] | None = None) -> Path:
    """Where run and model artifacts live with the default local store."""
    return _home(home) / "mlartifacts"


def _configure(home: str | os.PathLike[str] | None) -> str:
    """Point the fluent API and the registry at the resolved URI (every call: env may change)."""
    import mlflow

    uri = tracking_uri(home)
    if uses_local_store(home):
        _home(home).mkdir(parents=True, exist_ok=True)
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

    uri = _configure(home)
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


# ------------------------------------------------------------------------------- runs


class TrackedRun:
    """Logging for one run; every value is a parameter, metric, tag, digest or artifact."""

    def __init__(self, home: str | os.PathLike[str] | None, run_id: str) -> None:
        self.home = home
        self.run_id = run_id
        self._client = client(home)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), _text(v, 6000)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Finite values only (NaN means "undefined here", e.g. an empty segment: not logged)."""
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(sanitize_metric_name(k), float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 500):
            self._client.log_batch(self.run_id, metrics=items[i : i + 500])

    def log_metric_history(self, name: str, values: Sequence[float], first_step: int = 1) -> None:
        """One metric over iterations (step = iteration), e.g. validation NDCG per round."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        key = sanitize_metric_name(name)
        items = [Metric(key, float(v), now, first_step + i) for i, v in enumerate(values)]
        for i in range(0, len(items), 500):
            self._client.log_batch(self.run_id, metrics=items[i : i + 500])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), _text(v, 5000)) for k, v in tags.items() if v is not None]
        self._client.log_batch(self.run_id, tags=items)

    def log_dataset(
        self, name: str, context: str, digest: str, summary: Mapping[str, float], source: str
    ) -> None:
        """A dataset by digest and summary counts only: MLflow never receives its rows."""
        import mlflow
        import pandas as pd

        frame = pd.DataFrame({k: [float(v)] for k, v in summary.items()})
        with warnings.catch_warnings():  # a local path matches two equivalent source types
            warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36])
        with _active(self):
            mlflow.log_input(dataset, context=context)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, value: Any, artifact_file: str) -> None:
        self._client.log_dict(self.run_id, value, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self._client.log_figure(self.run_id, figure, artifact_file)

    def log_ranker(
        self,
        booster: lightgbm.Booster,
        feature_columns: Sequence[str],
        input_example: pd.DataFrame,
    ) -> str:
        """The native Booster with signature, synthetic example and its feature columns."""
        import lightgbm as lgb
        import mlflow
        from mlflow.models import infer_signature

        columns = [str(c) for c in feature_columns]
        if list(input_example.columns) != columns:
            raise ValueError("input example columns differ from the model's feature columns")
        signature = infer_signature(input_example, booster.predict(input_example.to_numpy()))
        self.log_dict({"feature_columns": columns}, FEATURE_COLUMNS_ARTIFACT)
        with _active(self):
            info = mlflow.lightgbm.log_model(
                booster,
                name=MODEL_ARTIFACT,
                signature=signature,
                input_example=input_example,
                metadata={META_FEATURE_COLUMNS: columns},
                # Explicit requirements: inference would import the model in a subprocess.
                pip_requirements=[f"lightgbm=={lgb.__version__}"],
            )
        return info.model_uri


@contextmanager
def _active(run: TrackedRun) -> Iterator[None]:
    """Make `run` the fluent API's active run for the calls that need one."""
    import mlflow

    _configure(run.home)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run.run_id:
        yield
        return
    with mlflow.start_run(run_id=run.run_id):
        yield


@contextmanager
def start_run(
    home: str | os.PathLike[str] | None,
    experiment: str = EXPERIMENT,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[TrackedRun]:
    """A run in `experiment` (created on first use), ended FAILED if the body raises."""
    import mlflow

    experiment_id = ensure_experiment(home, experiment)
    _configure(home)
    tags = {**(tags or {}), **_process_tags(os.getpid())}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags):
        yield TrackedRun(home, mlflow.active_run().info.run_id)


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime


def _process_tags(pid: int) -> dict[str, str]:
    import socket

    return {TAG_PID: str(pid), TAG_HOST: socket.gethostname(), TAG_PROC_START: _proc_start(pid)}


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
    return bool(started) and _proc_start(pid) not in ("", started)


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


def sanitize_metric_name(name: str) -> str:
    """MLflow rejects '@' and friends: `ndcg@10` -> `ndcg_at_10`."""
    name = name.replace("@", "_at_")
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------- registry


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

    _configure(home)
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
        c.set_model_version_tag(name, str(version), key, _text(value, 5000))


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

    _configure(home)
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

    _configure(home)
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
