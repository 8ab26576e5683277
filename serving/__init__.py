"""Serving: the Scorer (policy first, then the champion), the HTTP app, batch scoring, erasure.

Names resolve lazily (`from serving import Scorer`), so `import serving.audit` stays light and
nothing heavy (LightGBM, MLflow) loads before it is used. Erasure: `serving.erase.erase`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Scorer": "serving.scorer",
    "RankResult": "serving.results",
    "RankedOffer": "serving.results",
    "RequestError": "serving.scorer",
    "ModelMismatchError": "serving.state",
    "ReloadWatcher": "serving.watcher",
    "create_app": "serving.app",
    "score_batch": "serving.batch",
    "BatchReport": "serving.batch",
    "Receipt": "serving.erase",
    "AuditLog": "serving.audit",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'serving' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
