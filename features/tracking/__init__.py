"""The one package that talks to MLflow: tracking runs, the model registry and its aliases.

Why on the features floor: training logs and registers models, serving loads them, and
neither may import the other (DESIGN.md floors), so the shared MLflow code sits below both.

Where: the tracking URI is resolved at call time, never at import: `MLFLOW_TRACKING_URI` when
set (a server, say), else `sqlite:///<OFFERS_HOME>/mlflow.db` with run and model artifacts
under `<OFFERS_HOME>/mlartifacts`. The registry uses the same URI.

Modules: `names` (constants), `store` (URI, client, experiment), `runs` (logging),
`registry` (versions, aliases, loading a RegisteredRanker), `hygiene` (dead runs, orphan
versions). This file is the public API: callers use `from features import tracking`.

What MLflow may hold: params, metrics, tags, dataset digests, plots, markdown and the native
LightGBM Booster with a *synthetic* input example. Never a customer row or a user id: MLflow
then has nothing to erase (spec/policy.md "Erasure"), and tests/training check it.

Registry conventions: model `offer-ranker`; every new version gets the alias `challenger`;
`offers promote` moves `champion`. Aliases only, never the deprecated stages.
"""

from features.tracking.hygiene import RegistryHygiene, registry_hygiene
from features.tracking.names import (
    CHALLENGER,
    CHAMPION,
    EXPERIMENT,
    FEATURE_COLUMNS_ARTIFACT,
    META_FEATURE_COLUMNS,
    MODEL_ARTIFACT,
    MODEL_NAME,
    TAG_GIT_SHA,
    TAG_HELD_ALIAS,
    TAG_HOST,
    TAG_PID,
    TAG_POLICY_VERSION,
    TAG_PROC_START,
    TAG_PROMOTION,
    TAG_PROMOTION_DETAIL,
    TAG_SNAPSHOT_ID,
)
from features.tracking.online import log_online_report
from features.tracking.registry import (
    RegisteredRanker,
    alias_version,
    load_model_uri,
    load_registered_model,
    load_run_text,
    register_version,
    set_alias,
    tag_version,
    version_info,
)
from features.tracking.runs import TrackedRun, sanitize_metric_name, start_run
from features.tracking.store import (
    ENV_REGISTRY_URI,
    ENV_TRACKING_URI,
    artifact_root,
    client,
    ensure_experiment,
    model_uri,
    tracking_uri,
    uses_local_store,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "ENV_REGISTRY_URI",
    "ENV_TRACKING_URI",
    "EXPERIMENT",
    "FEATURE_COLUMNS_ARTIFACT",
    "META_FEATURE_COLUMNS",
    "MODEL_ARTIFACT",
    "MODEL_NAME",
    "TAG_GIT_SHA",
    "TAG_HELD_ALIAS",
    "TAG_HOST",
    "TAG_PID",
    "TAG_POLICY_VERSION",
    "TAG_PROC_START",
    "TAG_PROMOTION",
    "TAG_PROMOTION_DETAIL",
    "TAG_SNAPSHOT_ID",
    "RegisteredRanker",
    "RegistryHygiene",
    "TrackedRun",
    "alias_version",
    "artifact_root",
    "client",
    "ensure_experiment",
    "load_model_uri",
    "load_registered_model",
    "load_run_text",
    "log_online_report",
    "model_uri",
    "register_version",
    "registry_hygiene",
    "sanitize_metric_name",
    "set_alias",
    "start_run",
    "tag_version",
    "tracking_uri",
    "uses_local_store",
    "version_info",
]
