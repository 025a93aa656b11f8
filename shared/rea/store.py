"""The MongoDB store (PyMongo's async API): service state, the outbox and the insights DB.

Consistency and durability contract
-----------------------------------
* **MongoDB is the truth.** Every service's state lives here; events are only edge
  triggers. A service holds nothing about a campaign in memory between events.
* **Atomic decisions.** :meth:`Store.apply` runs one handler decision in one multi-document
  transaction: it records the event as processed (dedup on ``event_id`` per consumer),
  saves the new state with optimistic concurrency (a ``version`` field that must still be
  the one read), and appends the outgoing events to the **outbox**. Either all of that
  is durable or none of it is, so a crash between "save" and "publish" loses nothing.
  A state document is ``{_id, state, version}``, and ``summary`` where the caller keeps one:
  a small model derived from the state, saved with it, for readers that scan many states.
* **At-least-once out, exactly-once effect.** The outbox relay publishes and then marks
  entries; a crash in between publishes an entry twice, which consumers dedup by
  ``event_id``. Entries are published in the order they were written.
* **Durable on commit.** Against the embedded SecantusDB the server is started with
  ``--sync-on-commit`` so a committed transaction survives ``kill -9``.
* **Insights are append-only and keyed** (results by ``job_id``, events by ``event_id``),
  so a redelivered event is never recorded twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from rea import insights
from rea.events import Event, encode_event
from rea.ledger import COLLECTION as JOB_RUNS
from rea.ledger import JobLedger
from rea.topics import Topics

S = TypeVar("S", bound=BaseModel)
E = TypeVar("E", bound=Event)

Doc = dict[str, Any]


class VersionConflict(Exception):
    """Another writer changed the state between our read and our write; the decision is retried."""


WRITE_CONFLICT = 112


def _conflicted(error: BaseException) -> bool:
    """Our optimistic check failed, or the server aborted the transaction for a concurrent write."""
    if isinstance(error, OperationFailure):
        return error.code == WRITE_CONFLICT or error.has_error_label("TransientTransactionError")
    return isinstance(error, VersionConflict)


@dataclass
class Decision(Generic[S]):
    """What a pure handler decided: the new state (None = unchanged) and the events to emit."""

    state: S | None = None
    emit: Sequence[Event] = field(default_factory=list)


@dataclass
class Applied(Generic[S]):
    duplicate: bool
    decision: Decision[S] | None


class Store:
    """Typed access to REA's collections. See the module docstring for the contract."""

    def __init__(self, client: AsyncMongoClient[Doc], database: str, topics: Topics) -> None:
        self.client = client
        self.db: AsyncDatabase[Doc] = client[database]
        self.topics = topics

    @classmethod
    def connect(
        cls, uri: str, database: str, topics: Topics, options: Mapping[str, Any] | None = None
    ) -> Store:
        """``options``: the client's credentials and TLS (:func:`rea.security.mongo_options`)."""
        client: AsyncMongoClient[Doc] = AsyncMongoClient(
            uri, tz_aware=True, serverSelectionTimeoutMS=10_000, **(options or {})
        )
        return cls(client, database, topics)

    async def close(self) -> None:
        await self.client.close()

    def __getitem__(self, name: str) -> AsyncCollection[Doc]:
        return self.db[name]

    # collections: state owned by one service each, plus shared plumbing and insights
    @property
    def campaigns(self) -> AsyncCollection[Doc]:
        return self.db["campaigns"]

    @property
    def phases(self) -> AsyncCollection[Doc]:
        return self.db["phases"]

    @property
    def outbox(self) -> AsyncCollection[Doc]:
        return self.db["outbox"]

    @property
    def processed(self) -> AsyncCollection[Doc]:
        return self.db["processed_events"]

    @property
    def results(self) -> AsyncCollection[Doc]:
        """Insights DB: one document per finished job (completed or failed)."""
        return self.db["results"]

    @property
    def events(self) -> AsyncCollection[Doc]:
        """Insights DB: every event seen on the bus, by ``event_id``."""
        return self.db["events"]

    @property
    def dead_letters(self) -> AsyncCollection[Doc]:
        return self.db["dead_letters"]

    @property
    def ledger(self) -> JobLedger:
        """The job side's record of every job: claimed, run, what it cost and said (see rea.ledger)."""
        return JobLedger(self.db[JOB_RUNS])

    @property
    def proposals(self) -> AsyncCollection[Doc]:
        """Launch proposals of completed campaigns (derived from the planner's state)."""
        return self.db["proposals"]

    async def ensure_indexes(self) -> None:
        await self.outbox.create_index(
            [
                ("producer", ASCENDING),
                ("published", ASCENDING),
                ("created_at", ASCENDING),
                ("position", ASCENDING),
            ]
        )
        await self.outbox.create_index([("producer", ASCENDING), ("campaign_id", ASCENDING)])
        await self.campaigns.create_index([("state.status", ASCENDING)])
        await self.phases.create_index([("state.campaign_id", ASCENDING)])
        await self.results.create_index([("campaign_id", ASCENDING)])
        await self.results.create_index([("workload", ASCENDING), ("dataset", ASCENDING)])
        await self.events.create_index([("campaign_id", ASCENDING), ("occurred_at", ASCENDING)])
        await self.db[insights.EFFECTS].create_index([("family", ASCENDING)])
        await self.db[insights.WINNERS].create_index([("family", ASCENDING), ("gain", ASCENDING)])
        await self.ledger.ensure_indexes()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncClientSession]:
        async with self.client.start_session() as session, await session.start_transaction():
            yield session

    async def load(self, collection: str, key: str, model: type[S]) -> S | None:
        doc = await self.db[collection].find_one({"_id": key})
        return None if doc is None else model.model_validate(doc["state"])

    async def apply(
        self,
        *,
        consumer: str,
        event: E,
        collection: str,
        key: str,
        model: type[S],
        decide: Callable[[S | None, E], Decision[S]],
        summarize: Callable[[S], BaseModel] | None = None,
    ) -> Applied[S]:
        """Run ``decide`` on the stored state and commit its outcome atomically (see module doc).
        ``summarize``: the new state's summary, saved beside it as ``summary``."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_conflicted),
            stop=stop_after_attempt(8),
            wait=wait_random_exponential(multiplier=0.02, max=0.5),
            reraise=True,
        ):
            with attempt:
                return await self._apply_once(consumer, event, collection, key, model, decide, summarize)
        raise AssertionError("unreachable")

    async def _apply_once(
        self,
        consumer: str,
        event: E,
        collection: str,
        key: str,
        model: type[S],
        decide: Callable[[S | None, E], Decision[S]],
        summarize: Callable[[S], BaseModel] | None,
    ) -> Applied[S]:
        coll = self.db[collection]
        async with self.transaction() as session:
            # The marker goes first: its insert is the dedup check, one round trip instead of a
            # read now and a write at the end. A duplicate key means the event is done; a twin
            # still in flight makes this a write conflict, which is retried.
            marker = {"_id": f"{consumer}:{event.event_id}", "at": datetime.now(UTC)}
            try:
                await self.processed.insert_one(marker, session=session)
            except DuplicateKeyError:
                await session.abort_transaction()
                return Applied(duplicate=True, decision=None)
            doc = await coll.find_one({"_id": key}, session=session)
            state = None if doc is None else model.model_validate(doc["state"])
            decision = decide(state, event)
            if decision.state is not None:
                new_doc = {"_id": key, "state": decision.state.model_dump(mode="json")}
                if summarize is not None:
                    new_doc["summary"] = summarize(decision.state).model_dump(mode="json")
                if doc is None:
                    try:
                        await coll.insert_one({**new_doc, "version": 1}, session=session)
                    except DuplicateKeyError as exc:
                        raise VersionConflict(key) from exc
                else:
                    replaced = await coll.replace_one(
                        {"_id": key, "version": doc["version"]},
                        {**new_doc, "version": doc["version"] + 1},
                        session=session,
                    )
                    if replaced.matched_count != 1:
                        raise VersionConflict(key)
            try:
                await self.add_to_outbox(decision.emit, consumer, session)
            except DuplicateKeyError as exc:  # a concurrent twin of this decision committed first
                raise VersionConflict(key) from exc
        return Applied(duplicate=False, decision=decision)

    async def add_to_outbox(
        self, events: Sequence[Event], producer: str, session: AsyncClientSession | None = None
    ) -> None:
        if not events:
            return
        now = datetime.now(UTC)
        docs = [
            {
                "_id": event.event_id,
                "created_at": now,
                "position": index,
                "topic": self.topics.for_event(event.type),
                "key": event.key(),
                "partition": event.placed_partition(),
                "value": encode_event(event),
                "type": event.type,
                "campaign_id": event.about_campaign(),
                "producer": producer,
                "published": False,
            }
            for index, event in enumerate(events)
        ]
        await self.outbox.insert_many(docs, session=session)

    async def pending_outbox(self, producer: str, limit: int = 500) -> list[Doc]:
        cursor = self.outbox.find({"producer": producer, "published": False}).sort(
            [("created_at", ASCENDING), ("position", ASCENDING)]
        )
        cursor = cursor.limit(limit)
        return [doc async for doc in cursor]

    async def mark_published(self, event_ids: list[str]) -> None:
        if event_ids:
            await self.outbox.update_many(
                {"_id": {"$in": event_ids}}, {"$set": {"published": True, "published_at": datetime.now(UTC)}}
            )

    async def active_campaign_ids(self) -> list[str]:
        """Campaigns still in progress: what a reconciliation has to care about."""
        final = ["completed", "rejected", "failed", "cancelled"]
        return [
            doc["_id"] async for doc in self.campaigns.find({"state.status": {"$nin": final}}, {"_id": 1})
        ]

    async def republish_active(self, producer: str, except_ids: list[str] | None = None) -> int:
        """Mark ``producer``'s outbox entries of active campaigns unpublished, so the relay sends
        them again (after the broker lost its log; consumers dedup what they already had).
        ``except_ids``: entries the state says are settled (work already done), left alone."""
        result = await self.outbox.update_many(
            {
                "producer": producer,
                "campaign_id": {"$in": await self.active_campaign_ids()},
                "published": True,
                "_id": {"$nin": except_ids or []},
            },
            {"$set": {"published": False}},
        )
        return result.modified_count
