"""The gate a person's decision passes before a service acts on it, and the audit trail.

Each consuming service (the planner, the executor; the kernel service its search requests)
judges every decision itself, so a forged one reaches no state through any of them:

1. the signature (:func:`rea.signing.verify`): unsigned, unknown key, altered, expired, signed
   in another's name: refused;
2. replay: the nonce is recorded per consumer with the Kafka position it arrived at. The same
   nonce at the same position is a redelivery (the broker's at-least-once), handled as usual;
   at any other position it is the same decision sent again, refused. Nonce records expire
   with their signatures (a TTL index), after which the expiry check refuses them anyway.

Every judgement, accepted or refused, lands in the ``audit`` collection once per consumer
and outcome, which ``rea audit`` reads (:class:`AuditEntry`). A refused decision is also
dead-lettered with the reason by the bus.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from rea.events import Event, SignedDecision, utc_now
from rea.settings import Settings
from rea.signing import Keyring, verify

AUDIT = "audit"
NONCES = "decision_nonces"


class Delivery(BaseModel):
    """Where a message was read from: what tells a redelivery from a replay."""

    topic: str
    partition: int
    offset: int


class AuditEntry(BaseModel):
    """One service's judgement of one decision."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    campaign_id: str | None = None
    grant_id: str | None = None
    search_id: str | None = None
    type: str
    decided_by: str
    signed_by: str | None = None
    key_id: str | None = None
    occurred_at: datetime
    consumer: str
    verdict: Literal["accepted", "refused"]
    reason: str | None = None
    summary: str
    at: datetime


def summarize(event: SignedDecision) -> str:
    """The decision in a few words, for the audit trail."""
    payload = getattr(event, "payload")  # noqa: B009 (every decision has one; its type varies)
    describe = getattr(payload, "describe", None)
    return f"{event.type} {describe()}" if callable(describe) else event.type


class DecisionGate:
    """Judges people's decisions for ``consumer`` (see the module docstring); other events pass."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        consumer: str,
        keyring: Keyring,
        *,
        required: bool = True,
        max_ttl_s: float = 900.0,
        skew_s: float = 30.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.db = db
        self.consumer = consumer
        self.keyring = keyring
        self.required = required
        self.max_ttl_s = max_ttl_s
        self.skew_s = skew_s
        self.clock = clock
        self._indexed = False

    @classmethod
    def for_service(
        cls, settings: Settings, db: AsyncDatabase[dict[str, Any]], consumer: str
    ) -> DecisionGate:
        """The gate with the deployment's keyring and policy; raises ValueError for a keyring
        file that cannot be read, so a service with bad keys fails at start-up."""
        return cls(
            db,
            consumer,
            Keyring.load(settings.decision_keys_path()),
            required=settings.require_signed_decisions,
            max_ttl_s=settings.decision_max_ttl_s,
            skew_s=settings.decision_clock_skew_s,
        )

    async def ensure_indexes(self) -> None:
        await self.db[NONCES].create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)
        await self.db[AUDIT].create_index([("campaign_id", ASCENDING), ("occurred_at", ASCENDING)])
        await self.db[AUDIT].create_index([("grant_id", ASCENDING), ("occurred_at", ASCENDING)])
        await self.db[AUDIT].create_index([("search_id", ASCENDING), ("occurred_at", ASCENDING)])
        self._indexed = True

    async def __call__(self, event: Event, delivery: Delivery) -> str | None:
        """Why ``event`` must not be acted on, or None; a decision's judgement is audited."""
        if not isinstance(event, SignedDecision):
            return None
        if not self._indexed:
            await self.ensure_indexes()
        reason = verify(event, self.keyring, self.clock(), self.max_ttl_s, self.skew_s)
        if reason == "unsigned" and not self.required:
            reason = None
        if reason is None and event.signature is not None:
            reason = await self._replayed(event, delivery)
        await self._audit(event, reason)
        return reason

    async def _replayed(self, event: SignedDecision, delivery: Delivery) -> str | None:
        signature = event.signature
        assert signature is not None
        record = {
            "_id": f"{self.consumer}:{signature.key_id}:{signature.nonce}",
            "event_id": event.event_id,
            "delivery": delivery.model_dump(),
            "expires_at": signature.expires_at + timedelta(seconds=self.skew_s),
        }
        try:
            await self.db[NONCES].insert_one(record)
            return None
        except DuplicateKeyError:
            first = await self.db[NONCES].find_one({"_id": record["_id"]})
        if first is not None and first.get("delivery") == record["delivery"]:
            return None  # the broker delivering the same message again
        return "replayed: this signed decision was already received"

    async def _audit(self, event: SignedDecision, reason: str | None) -> None:
        verdict = "accepted" if reason is None else "refused"
        outcome = hashlib.sha256(f"{verdict}:{reason}".encode()).hexdigest()[:12]
        signature = event.signature
        entry = AuditEntry(
            event_id=event.event_id,
            campaign_id=getattr(event, "campaign_id", None),
            grant_id=getattr(event, "grant_id", None),
            search_id=getattr(event, "search_id", None),
            type=event.type,
            decided_by=event.decided_by(),
            signed_by=signature.by if signature else None,
            key_id=signature.key_id if signature else None,
            occurred_at=event.occurred_at,
            consumer=self.consumer,
            verdict=verdict,
            reason=reason,
            summary=summarize(event),
            at=self.clock(),
        )
        await self.db[AUDIT].update_one(
            {"_id": f"{self.consumer}:{event.event_id}:{outcome}"},
            {"$setOnInsert": entry.model_dump()},
            upsert=True,
        )


__all__ = ["AUDIT", "AuditEntry", "DecisionGate", "Delivery", "summarize"]
