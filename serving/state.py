"""The serving state: everything a request reads, loaded together, checked, replaced together.

Why apart from ranking: loading is slow I/O (the registry, the snapshot, the contract tables,
the erasure register) and must refuse loudly when the parts do not fit one another, while the
request path (serving.scorer) only reads the immutable `ServingState` this module builds.
`load_state` reads in six places and checks five things in between; each check is a small
named function below it, in the order it runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.contract import CONSENTS, MCC, OFFERS, USERS
from features.definitions import HALF_LIFE_PARAM
from features.erasures import REGISTER, erased_since_always, read_erasures
from features.instants import instant_ns
from features.mapped import COPY_MAPPED, MappedFeatureSource, ensure_mapped, feature_copy_mode
from features.online.layout import online_prefix
from features.policy_frames import consents_by_user, user_facts
from features.snapshot import load_snapshot, read_manifest
from features.tracking import CHAMPION, RegisteredRanker, load_registered_model
from features.validate import load_tables
from features.vector import FEATURE_COLUMNS, FeatureSource, OfferArrays, OfferCodes, assemble
from policy import SENSITIVE_MCCS, Consent, UserFacts, as_utc, policy_version
from serving.compiled import CompiledChoice, choose_compiled
from serving.explain import PathExplainer, ReasonWriter
from serving.online import OnlineFeatures
from serving.signatures import Signature, signature
from serving.sources import check_sources

SERVING_DIR = "serving"  # under OFFERS_HOME: coordination between server workers
RELOAD_MARKER = "reload-requested"
ModelLoader = Callable[[Path, str], RegisteredRanker]


class ModelMismatchError(RuntimeError):
    """The registered model does not fit this code's features or policy: refuse to serve."""


@dataclass(frozen=True)
class ServingState:
    """Everything a request reads, loaded together and replaced together."""

    booster: lgb.Booster
    model_name: str
    model_version: str
    model_alias: str
    explainer: PathExplainer
    reasons: ReasonWriter
    source: FeatureSource
    snapshot_id: str
    cutoff: datetime
    cutoff_ns: int
    offers: OfferArrays
    offer_index: dict[str, int]
    sensitive: np.ndarray  # bool per catalogue row
    consents: dict[str, list[Consent]]
    users: dict[str, UserFacts]
    policy_version: str
    loaded_at: datetime
    watched: tuple[Signature, ...] = ()  # the erasure register and reload marker as read
    leaf_scores: bool = False  # leaf sums equal Booster.predict here (checked at load)
    online: OnlineFeatures | None = None  # users' rows per request from Redis (else `source`)
    compiled: CompiledChoice = CompiledChoice(None, "off", "not loaded")  # serving.compiled
    half_life_days: float | None = None  # the snapshot's decay, which every model must share
    offer_codes: OfferCodes | None = None  # the catalogue coded in `source`'s tables, once

    def describe(self) -> dict[str, Any]:
        return {
            "model": {
                "name": self.model_name,
                "version": self.model_version,
                "alias": self.model_alias,
            },
            "snapshot_id": self.snapshot_id,
            "features": "embedded" if self.online is None else f"online {self.online.ns}",
            "snapshot_cutoff": self.cutoff.isoformat(),
            "policy_version": self.policy_version,
            "offers": len(self.offers),
            "loaded_at": self.loaded_at.isoformat(),
            "scoring": {"path": self.scoring_path, **self.compiled.describe()},
        }

    @property
    def scoring_path(self) -> str:
        """What scores a request: the compiled forest, leaf sums, or Booster.predict."""
        if self.compiled.forest is not None:
            return "compiled"
        return "leaf_sums" if self.leaf_scores else "booster"


def load_state(
    home: Path,
    data_dir: Path,
    model_alias: str = CHAMPION,
    model_loader: ModelLoader | None = None,
    allow_data_mismatch: bool | None = None,
    online: str | None = None,
) -> ServingState:
    """Model, snapshot, catalogue, consents and erasures; fails loudly on any mismatch.

    `allow_data_mismatch` (None: OFFERS_ALLOW_DATA_MISMATCH) turns a snapshot built from other
    users or consents files than `data_dir` into a warning. `online` (a redis:// URL) reads
    the users' features from that store per request instead of holding the snapshot; its
    namespace's manifest facts pass the same checks as a snapshot's.
    """
    home, data_dir = Path(home), Path(data_dir)
    current_policy = policy_version()
    # Taken before anything is read: an erasure landing mid-load makes the watcher load again,
    # so the erased user's snapshot rows cannot survive in memory.
    watched = tuple(signature(p) for p in watched_paths(home))
    model = (model_loader or load_registered_model)(home, model_alias)
    check_feature_columns(model)
    check_booster_width(model)
    check_model_policy(model, current_policy)
    source, manifest, online_features = _load_features(home, online)
    check_sources(manifest, data_dir, allow_data_mismatch)  # the snapshot's own sources?
    check_snapshot_policy(manifest, current_policy)
    check_half_life(model, manifest)
    frames = load_tables(data_dir, tables=(USERS, CONSENTS, OFFERS))
    erased = read_erasures(home / "erasures")
    state, probe = _assemble_state(
        model, model_alias, source, manifest, frames, erased, watched, current_policy
    )
    # The compiled forest is checked on the same snapshot rows as the leaf sums.
    compiled = choose_compiled(model.booster, probe, home, state.model_name, state.model_version)
    return replace(state, online=online_features, compiled=compiled)


def _load_features(
    home: Path, online: str | None
) -> tuple[FeatureSource, dict[str, Any], OnlineFeatures | None]:
    """Where requests read features: the online store, a mapped copy, or one in memory."""
    if online:
        features = OnlineFeatures.open(online, online_prefix())
        return features.base, features.meta, features
    if feature_copy_mode() == COPY_MAPPED:
        manifest = read_manifest(home / "features")
        return MappedFeatureSource(ensure_mapped(home, manifest)), manifest, None
    tables, manifest = load_snapshot(home / "features")
    return FeatureSource(tables), manifest, None


def check_feature_columns(model: RegisteredRanker) -> None:
    columns = list(model.feature_columns)
    if columns != list(FEATURE_COLUMNS):
        raise ModelMismatchError(
            f"model {model.name} v{model.version} was trained on features {columns}, "
            f"this code assembles {list(FEATURE_COLUMNS)}: retrain or deploy matching code"
        )


def check_booster_width(model: RegisteredRanker) -> None:
    if model.booster.num_feature() != len(FEATURE_COLUMNS):
        raise ModelMismatchError(
            f"booster expects {model.booster.num_feature()} features, not {len(FEATURE_COLUMNS)}"
        )


def check_model_policy(model: RegisteredRanker, current_policy: str) -> None:
    if model.policy_version != current_policy:
        raise ModelMismatchError(
            f"model {model.name} v{model.version} was trained under policy "
            f"{model.policy_version}, the rules now are {current_policy}: retrain and promote"
        )


def check_snapshot_policy(manifest: dict[str, Any], current_policy: str) -> None:
    if manifest.get("policy_version") != current_policy:
        raise ModelMismatchError(
            f"snapshot {manifest['snapshot_id']} was built under policy "
            f"{manifest.get('policy_version')}, the rules now are {current_policy}: rebuild it"
        )


def check_half_life(model: RegisteredRanker, manifest: dict[str, Any]) -> None:
    """Decayed spend must decay as in training; unknown on either side is not checked."""
    trained = model.half_life_days
    built = manifest.get(HALF_LIFE_PARAM)
    if trained is not None and built is not None and float(built) != trained:
        raise ModelMismatchError(
            f"snapshot {manifest['snapshot_id']} has decayed spend with a {built}-day half-life, "
            f"model v{model.version} was trained with {trained}: rebuild the snapshot to match"
        )


def _assemble_state(
    model: RegisteredRanker,
    model_alias: str,
    source: FeatureSource,
    manifest: dict[str, Any],
    frames: dict[str, pd.DataFrame],
    erased: dict[str, datetime],
    watched: tuple[Signature, ...],
    current_policy: str,
) -> tuple[ServingState, np.ndarray]:
    """What was read, as the arrays and maps a request reads (no I/O), and the probe rows the
    fast scoring paths were checked on."""
    cutoff = as_utc(pd.Timestamp(manifest["cutoff"]).to_pydatetime())
    offers_frame = frames[OFFERS]
    offers = OfferArrays.from_frame(offers_frame)
    reasons = ReasonWriter(FEATURE_COLUMNS)
    explainer = PathExplainer(model.booster, len(FEATURE_COLUMNS)).project(reasons.projection)
    probe = _probe_matrix(source, offers, instant_ns(cutoff))
    state = ServingState(
        booster=model.booster,
        model_name=str(model.name),
        model_version=str(model.version),
        model_alias=model_alias,
        explainer=explainer,
        reasons=reasons,
        source=source,
        snapshot_id=str(manifest["snapshot_id"]),
        cutoff=cutoff,
        cutoff_ns=instant_ns(cutoff),
        offers=offers,
        offer_index={oid: i for i, oid in enumerate(offers.offer_id.tolist())},
        sensitive=offers_frame[MCC].astype(str).isin(SENSITIVE_MCCS).to_numpy(),
        consents=consents_by_user(frames[CONSENTS]),
        users=user_facts(frames[USERS], erased_since_always(erased)),
        policy_version=current_policy,
        loaded_at=datetime.now(UTC),
        watched=watched,
        leaf_scores=explainer.exact_on(model.booster, probe),
        half_life_days=manifest.get(HALF_LIFE_PARAM),
        offer_codes=OfferCodes.of(source, offers),
    )
    return state, probe


def _probe_matrix(source: FeatureSource, offers: OfferArrays, cutoff_ns: int) -> np.ndarray:
    """Real rows of this snapshot (up to 20 users x 25 offers) to check leaf sums against
    (online: the population and offer features, with the users' columns as for a new user)."""
    users = source.sample_users(20) or [""]
    n_off = min(len(offers), 25)
    if n_off == 0:
        return np.empty((0, len(FEATURE_COLUMNS)))
    idx = np.tile(np.arange(n_off), len(users))
    user_col = np.repeat(np.array(users, dtype=object), n_off)
    return assemble(source, user_col, np.full(len(idx), cutoff_ns), offers.take(idx))


def state_for_model(
    home: Path, base: ServingState, model: RegisteredRanker, alias: str
) -> ServingState:
    """The same snapshot and policy facts scored by another registered model (an experiment's
    challenger): its own checks, its own explainer and its own checked fast paths, never the
    base model's compiled forest or leaf-sum verdict."""
    check_feature_columns(model)
    check_booster_width(model)
    check_model_policy(model, base.policy_version)
    check_half_life(model, {"snapshot_id": base.snapshot_id, HALF_LIFE_PARAM: base.half_life_days})
    explainer = PathExplainer(model.booster, len(FEATURE_COLUMNS)).project(base.reasons.projection)
    probe = _probe_matrix(base.source, base.offers, base.cutoff_ns)
    name, version = str(model.name), str(model.version)
    return replace(
        base,
        booster=model.booster,
        model_name=name,
        model_version=version,
        model_alias=alias,
        explainer=explainer,
        leaf_scores=explainer.exact_on(model.booster, probe),
        compiled=choose_compiled(model.booster, probe, home, name, version),
    )


def watched_paths(home: Path) -> tuple[Path, Path]:
    """Files whose change makes every worker reload: the erasure register, the reload marker."""
    return (home / "erasures" / REGISTER, home / SERVING_DIR / RELOAD_MARKER)


def mark_reload(home: Path) -> Path:
    """Replace the reload marker: every worker's ReloadWatcher on this OFFERS_HOME reloads."""
    marker = watched_paths(home)[1]
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".{marker.name}.{uuid.uuid4().hex}")
    tmp.write_text(f"{datetime.now(UTC).isoformat()} pid {os.getpid()}\n", encoding="utf-8")
    os.replace(tmp, marker)
    return marker
