"""What a ranking request answers: the result, its HTTP body schema and its audit record.

Why the body is a pydantic model: one declaration gives both the JSON the app sends and the
OpenAPI document it publishes (`RankAllowed` for 200, `RankDenied` for 403), so they cannot
drift; tests/serving/test_response_schema.py holds them equal. Field order is the JSON's key
order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from policy import Decision
from serving.audit import EVENT, EVENT_DECISION
from serving.experiments import HOLDOUT_ARM


class RankedOfferOut(BaseModel):
    offer_id: str
    score: float
    rank: int
    reasons: list[str]
    propensity: float | None = Field(
        None,
        description="In an experiment: the probability that this offer is shown at this rank "
        "under the logging policy (for off-policy evaluation); null outside experiments.",
    )


class ModelOut(BaseModel):
    name: str
    version: str


class ExperimentOut(BaseModel):
    name: str
    arm: str
    personalised: bool = Field(description="False in the holdout arm: popularity ranking.")
    explored: bool = Field(description="True when the slate is the exploration draw.")


class _Answer(BaseModel):
    """What every answer says, allow or deny (the fields first, in this order)."""

    decision: str
    reason_code: str
    legal_refs: list[str]
    policy_version: str
    request_id: str


class RankDenied(_Answer):
    decision: str = "deny"


class RankAllowed(_Answer):
    decision: str = "allow"
    reason_code: str = "OK"
    offers: list[RankedOfferOut]
    cold_start: bool = Field(description="True when the user has no history: popularity ranking.")
    model: ModelOut
    snapshot_id: str
    experiment: ExperimentOut | None = Field(
        None, description="The experiment and arm of this request; null outside experiments."
    )


@dataclass(frozen=True)
class RankedOffer:
    offer_id: str
    score: float
    rank: int
    reasons: list[str]
    propensity: float | None = None  # set in an experiment (serving.experiments)


@dataclass(frozen=True)
class RankResult:
    """One decision and, on allow, the ranked offers; `response()` is the HTTP body."""

    request_id: str
    user_id: str
    purpose: str
    now: datetime
    decision: Decision
    offers: list[RankedOffer] = field(default_factory=list)
    cold_start: bool = False
    model_name: str = ""
    model_version: str = ""
    snapshot_id: str = ""
    excluded_sensitive: int = 0
    excluded_inactive: int = 0
    experiment: str = ""  # "" outside experiments; else the experiment's name
    arm: str = ""
    explored: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def reason_code(self) -> str:
        return self.decision.reason_code

    @property
    def policy_version(self) -> str:
        return self.decision.policy_version

    def response(self) -> RankAllowed | RankDenied:
        """Allow: the ranking; deny: decision, reason, legal refs and policy version only.

        Built without validation (`model_construct`): every value comes from this process.
        """
        answer = {
            "decision": self.decision.decision,
            "reason_code": self.reason_code,
            "legal_refs": list(self.decision.legal_refs),
            "policy_version": self.policy_version,
            "request_id": self.request_id,
        }
        if not self.allowed:
            return RankDenied.model_construct(**answer)
        return RankAllowed.model_construct(
            **answer,
            offers=[RankedOfferOut.model_construct(**vars(o)) for o in self.offers],
            cold_start=self.cold_start,
            model=ModelOut.model_construct(name=self.model_name, version=self.model_version),
            snapshot_id=self.snapshot_id,
            experiment=self._experiment_out(),
        )

    def _experiment_out(self) -> ExperimentOut | None:
        if not self.experiment:
            return None
        return ExperimentOut.model_construct(
            name=self.experiment,
            arm=self.arm,
            personalised=self.arm != HOLDOUT_ARM,
            explored=self.explored,
        )

    def audit_record(self, channel: str) -> dict[str, Any]:
        """The spec's audit fields; never an MCC, a merchant or an amount."""
        consent = self.decision.consent
        return {
            EVENT: EVENT_DECISION,
            "request_id": self.request_id,
            "decided_at": self.now.isoformat(),
            "channel": channel,
            "user_id": self.user_id,
            "purpose": self.purpose,
            "decision": self.decision.decision,
            "reason_code": self.reason_code,
            "legal_refs": list(self.decision.legal_refs),
            "consent_id": consent.consent_id,
            "consent_state": consent.status.value,
            "consent_expires_at": consent.expires_at.isoformat() if consent.expires_at else None,
            "policy_version": self.policy_version,
            "feature_snapshot_id": self.snapshot_id,
            "model": {"name": self.model_name, "version": self.model_version},
            "offer_ids": [o.offer_id for o in self.offers],
            "n_excluded_sensitive": self.excluded_sensitive,
            "cold_start": self.cold_start,
            **self._experiment_audit(),
        }

    def _experiment_audit(self) -> dict[str, Any]:
        """Arm, experiment, exploration and each shown offer's propensity (replayable)."""
        if not self.experiment:
            return {}
        return {
            "experiment": self.experiment,
            "arm": self.arm,
            "explored": self.explored,
            "propensities": [o.propensity for o in self.offers],
        }
