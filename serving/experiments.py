"""Online experiments: definitions under OFFERS_HOME, arm assignment and the logging policy.

Why here and pure: every server worker, every restart and every audit must compute the same arm
and the same shown slate from the same inputs, so assignment is a salted sha256 of the user id
(never Python's per-process `hash()`) and exploration draws from a generator seeded by
sha256(experiment, salt, user, request time). An auditor with the definition, the arm's
ranking and the request recomputes both exactly (`explore`).

The logging policy (needed for off-policy estimates of other models): with probability
`exploration` (epsilon) the slate is the first k of a uniformly random permutation of the n
candidates, otherwise the arm's own ranking. So the probability that offer `a` is shown at
position `r` is exactly `(1 - epsilon) * [arm ranks a at r] + epsilon / n`, which is what is
logged as the offer's `propensity` (the marginal, item-position propensity).

Definitions: `OFFERS_HOME/experiments/<name>.json`, written aside and renamed. Only the admin
token changes them (serving/experiments_api.py, offers/cli/experiments.py); before its start a
definition may be replaced, after it only stopped (end moved to the stop time), because changing
shares on live traffic would break the analysis. Two experiments never overlap in time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from features.contract import EXPERIMENT_ARMS

EXPERIMENTS_DIR = "experiments"  # under OFFERS_HOME
CHAMPION_ARM = "champion"
CHALLENGER_ARM = "challenger"
HOLDOUT_ARM = "holdout"
ARMS = EXPERIMENT_ARMS  # champion, challenger, holdout: the data contract's arm values
DEFAULT_EXPLORATION = 0.1
MAX_EXPLORATION = 0.5  # beyond: most traffic would be random slates
SHARE_TOLERANCE = 1e-9
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_FIELDS = ("name", "shares", "start", "end", "salt", "exploration")


class ExperimentError(ValueError):
    """A definition or a change that is refused; the message names the field and the fix."""


@dataclass(frozen=True)
class Experiment:
    """One experiment: arm shares (arms absent have none), its window [start, end), its salt."""

    name: str
    shares: dict[str, float]
    start: datetime
    end: datetime
    salt: str
    exploration: float = DEFAULT_EXPLORATION

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(a for a in ARMS if a in self.shares)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shares": {a: self.shares[a] for a in self.arms},
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "salt": self.salt,
            "exploration": self.exploration,
        }


# ------------------------------------------------------------------------------ validation


def parse_experiment(raw: Mapping[str, Any]) -> Experiment:
    """A checked Experiment from JSON-like input; ExperimentError names what is wrong.

    A missing salt gets a random one (it is stored, so the arms stay fixed).
    """
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ExperimentError(f"experiment: unknown fields {unknown}; allowed: {list(_FIELDS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ExperimentError(
            f"experiment name {name!r}: 1-64 of a-z, 0-9, '_', '-' (starting with a letter "
            "or digit)"
        )
    shares = _shares(name, raw.get("shares"))
    start, end = _instant(name, "start", raw.get("start")), _instant(name, "end", raw.get("end"))
    if not start < end:
        raise ExperimentError(f"experiment {name}: end {end} must be after start {start}")
    salt = raw.get("salt") or secrets.token_hex(16)
    if not isinstance(salt, str):
        raise ExperimentError(f"experiment {name}: salt must be a string")
    eps = raw.get("exploration", DEFAULT_EXPLORATION)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps <= MAX_EXPLORATION:
        raise ExperimentError(
            f"experiment {name}: exploration must be a number in (0, {MAX_EXPLORATION}], not "
            f"{eps!r} (0 would leave other models' slates without a propensity)"
        )
    return Experiment(name, shares, start, end, salt, float(eps))


def _shares(name: str, raw: object) -> dict[str, float]:
    if not isinstance(raw, Mapping) or not raw:
        raise ExperimentError(f"experiment {name}: shares must map arms {list(ARMS)} to numbers")
    bad_arms = sorted(set(raw) - set(ARMS))
    if bad_arms:
        raise ExperimentError(f"experiment {name}: unknown arms {bad_arms}; known: {list(ARMS)}")
    shares: dict[str, float] = {}
    for arm in ARMS:
        if arm not in raw:
            continue
        value = raw[arm]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ExperimentError(
                f"experiment {name}: share of {arm} must be a number in (0, 1], not {value!r}"
            )
        shares[arm] = float(value)
    if len(shares) < 2:
        raise ExperimentError(f"experiment {name}: needs at least two arms, got {list(shares)}")
    total = sum(shares.values())
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise ExperimentError(f"experiment {name}: shares sum to {total:g}, not 1")
    return shares


def _instant(name: str, what: str, value: object) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ExperimentError(
                f"experiment {name}: {what} {value!r} is not an ISO 8601 instant"
            ) from None
    else:
        raise ExperimentError(f"experiment {name}: {what} must be an ISO 8601 instant")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# ------------------------------------------------------------------------------ assignment


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def unit_draw(experiment: Experiment, user_id: str) -> float:
    """The user's fixed point in [0, 1): sha256(salt, name, user id), first 8 bytes."""
    value = int.from_bytes(_digest(experiment.salt, experiment.name, user_id)[:8], "big")
    return value / 2**64


def assign(experiment: Experiment, user_id: str) -> str:
    """The user's arm: the arm whose cumulative share interval holds the user's draw."""
    u = unit_draw(experiment, user_id)
    upper = 0.0
    arms = experiment.arms
    for arm in arms:
        upper += experiment.shares[arm]
        if u < upper:
            return arm
    return arms[-1]  # shares summing to 1 - 1e-9: the last sliver goes to the last arm


@dataclass(frozen=True)
class Shown:
    """The slate actually shown: positions into the arm's ranking, with their propensities."""

    order: np.ndarray  # indices into the arm's full ranking, one per shown position
    propensity: np.ndarray  # P(that offer at that position) under the logging policy
    explored: bool


def exploration_rng(experiment: Experiment, user_id: str, now: datetime) -> np.random.Generator:
    """The request's generator: seeded by (experiment, salt, user, request time) for replay."""
    seed = _digest("explore", experiment.name, experiment.salt, user_id, now.isoformat())
    return np.random.Generator(np.random.PCG64(int.from_bytes(seed[:16], "big")))


def explore(experiment: Experiment, user_id: str, now: datetime, n: int, k: int) -> Shown:
    """Which of the arm's n ranked candidates are shown at positions 1..min(k, n), and with
    what probability each (see the module docstring): exact, and the same on every replay."""
    shown = min(k, n)
    if shown <= 0:
        return Shown(np.empty(0, np.int64), np.empty(0), False)
    eps = experiment.exploration
    rng = exploration_rng(experiment, user_id, now)
    explored = bool(rng.random() < eps)
    order = rng.permutation(n)[:shown] if explored else np.arange(shown)
    propensity = (1 - eps) * (order == np.arange(shown)) + eps / n
    return Shown(order.astype(np.int64), propensity, explored)


# ------------------------------------------------------------------------------ storage


def experiments_dir(home: Path) -> Path:
    return Path(home) / EXPERIMENTS_DIR


def definition_path(home: Path, name: str) -> Path:
    return experiments_dir(home) / f"{name}.json"


def load_experiments(home: Path) -> list[Experiment]:
    """Every stored definition, by start; a damaged file refuses to load, naming it."""
    folder = experiments_dir(home)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            found.append(parse_experiment(json.loads(path.read_text(encoding="utf-8"))))
        except (json.JSONDecodeError, ExperimentError) as exc:
            raise ExperimentError(f"{path}: not a valid experiment definition ({exc})") from exc
    return sorted(found, key=lambda e: (e.start, e.name))


def find_experiment(home: Path, name: str) -> Experiment:
    for experiment in load_experiments(home):
        if experiment.name == name:
            return experiment
    raise ExperimentError(f"no experiment named {name!r} under {experiments_dir(home)}")


def active_experiment(experiments: Sequence[Experiment], now: datetime) -> Experiment | None:
    for experiment in experiments:
        if experiment.active(now):
            return experiment
    return None


def save_experiment(home: Path, experiment: Experiment, now: datetime | None = None) -> Path:
    """Create or (before its start) replace a definition; never overlapping another one."""
    now = now or datetime.now(UTC)
    existing = {e.name: e for e in load_experiments(home)}
    old = existing.pop(experiment.name, None)
    if old is not None and old.start <= now:
        raise ExperimentError(
            f"experiment {experiment.name} started at {old.start.isoformat()}: it can only be "
            "stopped now (changing arms on live traffic would break its analysis)"
        )
    for other in existing.values():
        if experiment.start < other.end and other.start < experiment.end:
            raise ExperimentError(
                f"experiment {experiment.name} overlaps {other.name} "
                f"({other.start.isoformat()} .. {other.end.isoformat()}): one experiment at a time"
            )
    return _write(home, experiment)


def stop_experiment(home: Path, name: str, at: datetime | None = None) -> Experiment:
    """End the experiment at `at` (default now); a stopped or finished one stays as it is."""
    at = at or datetime.now(UTC)
    experiment = find_experiment(home, name)
    if experiment.end <= at:
        return experiment
    stopped = replace(experiment, end=max(at, experiment.start))
    if stopped.end == stopped.start:  # stopped before it started: nothing ever ran
        path = definition_path(home, name)
        path.unlink()
        return stopped
    _write(home, stopped)
    return stopped


def _write(home: Path, experiment: Experiment) -> Path:
    path = definition_path(home, experiment.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(experiment.to_dict(), indent=2) + "\n", encoding="utf-8")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
