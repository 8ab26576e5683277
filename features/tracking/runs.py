"""Runs and their logging: params, metrics, tags, dataset digests, artifacts, the ranker."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from features.tracking.hygiene import process_tags
from features.tracking.names import (
    EXPERIMENT,
    FEATURE_COLUMNS_ARTIFACT,
    META_FEATURE_COLUMNS,
    MODEL_ARTIFACT,
)
from features.tracking.store import client, clip_text, configure, ensure_experiment

if TYPE_CHECKING:
    import lightgbm
    import pandas as pd


class TrackedRun:
    """Logging for one run; every value is a parameter, metric, tag, digest or artifact."""

    def __init__(self, home: str | os.PathLike[str] | None, run_id: str) -> None:
        self.home = home
        self.run_id = run_id
        self._client = client(home)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), clip_text(v, 6000)) for k, v in params.items()]
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

        items = [RunTag(str(k), clip_text(v, 5000)) for k, v in tags.items() if v is not None]
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

    configure(run.home)
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
    configure(home)
    tags = {**(tags or {}), **process_tags(os.getpid())}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags):
        yield TrackedRun(home, mlflow.active_run().info.run_id)


def sanitize_metric_name(name: str) -> str:
    """MLflow rejects '@' and friends: `ndcg@10` -> `ndcg_at_10`."""
    name = name.replace("@", "_at_")
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)
