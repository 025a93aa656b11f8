"""What people's tools (the CLI, tests, notebooks) use to talk to a running REA.

The read side is split in two: :class:`Client` fetches documents from MongoDB, and plain
functions below it (``short_ids``, ``pick_match``, ``summarize``, ``job_rows``, ...) turn those
documents into what a person reads, so they can be tested without any server.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from rea.decisions import AUDIT, AuditEntry
from rea.doorbell import Doorbell, ring
from rea.endpoints import Endpoints, resolve_endpoints
from rea.events import (
    FINISHED_JOB_STATUSES,
    Event,
    GrantCreated,
    GrantCreatedPayload,
    GrantRevoked,
    GrantRevokedPayload,
    GrantTerms,
    JobRecord,
    SignedDecision,
    encode_event,
    utc_now,
)
from rea.grants import COLLECTION as GRANTS
from rea.grants import Grant
from rea.ledger import COLLECTION as JOB_RUNS
from rea.ledger import JobRun
from rea.phases import SCREENING, SEARCH_KINDS, VALIDATION, kind
from rea.phases import order as phase_order
from rea.security import kafka_options, mongo_options, redis_options
from rea.settings import Settings
from rea.signing import Keyring, Signer, new_nonce
from rea.topics import Topics
from rea.views import CampaignView, JobView, PhaseView, campaign_view, phase_view

Doc = dict[str, Any]
D = TypeVar("D", bound=SignedDecision)

FINAL_STATUSES = frozenset({"rejected", "completed", "failed", "cancelled"})
HIDDEN_STATUSES = frozenset({"rejected", "cancelled"})
"""Campaigns `rea status` leaves out of its list unless asked for ``--all``: they never ran to a result."""
SHORT_ID_LENGTH = 8
MATCHES_SHOWN = 10
# Fields of a phase's jobs that summaries never read and that make up most of a phase document.
BULKY_JOB_FIELDS: Doc = {"state.jobs.output.diagnostics": 0, "state.jobs.output.history": 0}


class SigningError(RuntimeError):
    """A decision cannot be signed: no keyring, no key to sign with, or a key of another person."""


def default_identity(settings: Settings) -> str:
    """Who a person's tools act as: ``REA_SIGNING_IDENTITY``, else the OS user."""
    return settings.signing_identity or getpass.getuser()


class GrantError(RuntimeError):
    """A grant could not be created or revoked as asked."""


def _taken(grant: Grant) -> str:
    revoked = f", since {grant.describe_revocation()}" if grant.status == "revoked" else ""
    return (
        f"grant {grant.grant_id!r} already exists (created by {grant.created_by}{revoked}); "
        "a grant id is used once: new terms are a new grant"
    )


class UnresolvedId(LookupError):
    """A prefix that names no id, or more than one; ``matches`` holds what it matched (a sample)."""

    def __init__(self, what: str, prefix: str, matches: list[str]) -> None:
        self.what, self.prefix, self.matches = what, prefix, matches
        if not prefix:
            message = f"give a {what} id (or a unique prefix of one)"
        elif not matches:
            message = f"no {what} matches {prefix!r}"
        else:
            shown = "\n".join(f"  {match}" for match in matches[:MATCHES_SHOWN])
            more = "\n  ..." if len(matches) > MATCHES_SHOWN else ""
            message = f"{prefix!r} matches several {what}s; give more characters:\n{shown}{more}"
        super().__init__(message)


def _anchored(prefix: str) -> Doc:
    """A MongoDB filter value for "starts with ``prefix``", taken literally (an id may hold dots)."""
    return {"$regex": f"^{re.escape(prefix)}"}


class Client:
    def __init__(self, settings: Settings, endpoints: Endpoints | None = None) -> None:
        self.settings = settings
        self.endpoints = endpoints or resolve_endpoints(settings)
        self.topics = Topics(settings.topic_prefix)
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.endpoints.mongo_uri,
            tz_aware=True,
            serverSelectionTimeoutMS=10_000,
            **mongo_options(settings, self.endpoints),
        )
        self.db = self.mongo[settings.mongo_db]

    async def close(self) -> None:
        await self.mongo.close()

    async def publish(self, event: Event) -> None:
        """Publish ``event``; a person's decision is signed first (:meth:`sign`) unless it is."""
        if isinstance(event, SignedDecision) and event.signature is None:
            event = self.sign(event)
        await self.send(self.topics.for_event(event.type), event.key(), encode_event(event))

    def sign(self, event: D) -> D:
        """``event`` signed in the name it gives, with the keyring's signing key (the configured
        ``signing_key_id``, else its only key). Raises :class:`SigningError` when there is no
        usable key, or the key belongs to someone else."""
        path = self.settings.decision_keys_path()
        try:
            keys = Keyring.load(path).keys
        except ValueError as error:
            raise SigningError(str(error)) from None
        key_id = self.settings.signing_key_id or (next(iter(keys)) if len(keys) == 1 else None)
        if key_id is None or key_id not in keys:
            which = f"no key {key_id!r}" if key_id else f"{len(keys)} keys and no REA_SIGNING_KEY_ID"
            raise SigningError(
                f"cannot sign the decision: {path} has {which} (REA_DECISION_KEYS_FILE names the keyring; "
                "`rea up` creates a local one)"
            )
        try:
            signer = Signer(keys[key_id], event.decided_by())
        except ValueError as error:
            raise SigningError(f"cannot sign the decision: {error}") from None
        return signer.sign(event, utc_now(), self.settings.decision_ttl_s, new_nonce())

    async def audit(self, campaign_id: str) -> list[AuditEntry]:
        """Every service's judgement of every decision about the campaign and its grant (who
        granted it, revoked it), oldest first."""
        about: list[Doc] = [{"campaign_id": campaign_id}]
        campaign = await self.campaign(campaign_id)
        if campaign is not None and campaign.spec is not None and campaign.spec.grant:
            about.append({"grant_id": campaign.spec.grant})
        return await self._audit_trail({"$or": about})

    async def search_audit(self, search_id: str) -> list[AuditEntry]:
        """The kernel service's judgement of the request for kernel search ``search_id``."""
        return await self._audit_trail({"search_id": search_id})

    async def _audit_trail(self, query: Doc) -> list[AuditEntry]:
        """The audit entries ``query`` matches, oldest first."""
        cursor = self.db[AUDIT].find(query).sort([("occurred_at", 1), ("at", 1)])
        return [AuditEntry.model_validate(doc) async for doc in cursor]

    async def grant(self, grant_id: str) -> Grant | None:
        doc = await self.db[GRANTS].find_one({"_id": grant_id})
        return None if doc is None else Grant.model_validate(doc["state"])

    async def grants(self, include_revoked: bool = False) -> list[Grant]:
        """Grants, newest first; revoked ones only when asked for."""
        shown: Doc = {} if include_revoked else {"state.status": "active"}
        cursor = self.db[GRANTS].find(shown).sort("state.created_at", -1)
        return [Grant.model_validate(doc["state"]) async for doc in cursor]

    async def resolve_grant(self, prefix: str) -> str:
        """The one grant id that ``prefix`` starts (or is); raises :class:`UnresolvedId`."""
        cursor = self.db[GRANTS].find({"_id": _anchored(prefix)}, {"_id": 1}).limit(MATCHES_SHOWN + 1)
        return pick_match("grant", prefix, [str(doc["_id"]) async for doc in cursor])

    async def create_grant(self, grant_id: str, terms: GrantTerms, by: str, timeout_s: float = 30) -> Grant:
        """Grant ``terms`` as ``by`` (signed) and wait until the planner has stored the grant.
        Raises :class:`GrantError` when the id is taken (ids are used once), or the planner does
        not answer in time."""
        if (existing := await self.grant(grant_id)) is not None:
            raise GrantError(_taken(existing))
        await self.publish(
            GrantCreated(
                grant_id=grant_id, correlation_id=grant_id, payload=GrantCreatedPayload(terms=terms, by=by)
            )
        )
        stored = await self._wait_for_grant(grant_id, lambda grant: True, timeout_s)
        if stored.terms != terms or stored.status != "active":
            raise GrantError(_taken(stored))
        return stored

    async def ensure_grant(self, grant_id: str, terms: GrantTerms, timeout_s: float = 30) -> Grant:
        """The active grant ``grant_id`` with ``terms``, created in the name of this client's
        person when it does not exist (what the demo, chaos and benchmarks run under)."""
        existing = await self.grant(grant_id)
        if existing is not None and existing.status == "active" and existing.terms == terms:
            return existing
        return await self.create_grant(grant_id, terms, default_identity(self.settings), timeout_s)

    async def revoke_grant(self, grant_id: str, by: str, reason: str = "", timeout_s: float = 30) -> Grant:
        """Revoke the grant as ``by`` (signed) and wait until the planner has."""
        await self.publish(
            GrantRevoked(
                grant_id=grant_id, correlation_id=grant_id, payload=GrantRevokedPayload(by=by, reason=reason)
            )
        )
        return await self._wait_for_grant(grant_id, lambda grant: grant.status == "revoked", timeout_s)

    async def _wait_for_grant(self, grant_id: str, done: Callable[[Grant], bool], timeout_s: float) -> Grant:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            grant = await self.grant(grant_id)
            if grant is not None and done(grant):
                return grant
            await asyncio.sleep(0.2)
        raise GrantError(
            f"the planner did not record grant {grant_id!r} within {timeout_s:g}s: is it running? "
            "(a decision it refused is on the dead-letter topic, with the reason, and in the audit)"
        )

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.endpoints.kafka_bootstrap,
            enable_idempotence=self.settings.kafka_idempotence,
            **kafka_options(self.settings),
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()
        if self.settings.kafka_doorbell:
            await ring(
                self.endpoints.redis_url,
                Doorbell.channel_for(self.settings.topic_prefix),
                topic,
                redis_options(self.settings, self.endpoints),
            )

    async def campaign(self, campaign_id: str) -> CampaignView | None:
        doc = await self.db["campaigns"].find_one({"_id": campaign_id})
        return None if doc is None else campaign_view(doc)

    async def campaigns(self, limit: int = 50, hidden: Iterable[str] = ()) -> list[CampaignView]:
        """The newest campaigns first, leaving out those whose status is in ``hidden``."""
        query: Doc = {"state.status": {"$nin": sorted(hidden)}} if hidden else {}
        cursor = self.db["campaigns"].find(query).sort("state.created_at", -1).limit(limit)
        return [campaign_view(doc) async for doc in cursor]

    async def campaign_ids(self) -> list[str]:
        """Every campaign id: what a short id must be unique among."""
        return [str(doc["_id"]) async for doc in self.db["campaigns"].find({}, {"_id": 1})]

    async def resolve_campaign(self, prefix: str) -> str:
        """The one campaign id that ``prefix`` starts (or is); raises :class:`UnresolvedId`."""
        if not prefix:
            raise UnresolvedId("campaign", prefix, [])
        if await self.db["campaigns"].find_one({"_id": prefix}, {"_id": 1}) is not None:
            return prefix
        cursor = self.db["campaigns"].find({"_id": _anchored(prefix)}, {"_id": 1}).limit(MATCHES_SHOWN + 1)
        return pick_match("campaign", prefix, [str(doc["_id"]) async for doc in cursor])

    async def resolve_job(self, prefix: str) -> str:
        """The one job id that ``prefix`` starts (or is), among jobs the ledger or an executor
        knows. A prefix matching no job id directly may be ``CAMPAIGN-REST``, a campaign's
        prefix and the rest of a job id (what `rea jobs` shows); raises :class:`UnresolvedId`."""
        if not prefix:
            raise UnresolvedId("job", prefix, [])
        found = await self._job_ids(prefix)
        if found:
            return pick_match("job", prefix, found)
        campaign_prefix, dash, rest = prefix.partition("-")
        if dash and campaign_prefix:
            try:
                expanded = f"{await self.resolve_campaign(campaign_prefix)}-{rest}"
            except UnresolvedId:
                raise UnresolvedId("job", prefix, []) from None
            found = await self._job_ids(expanded)
            if found:
                return pick_match("job", expanded, found)
        raise UnresolvedId("job", prefix, [])

    async def _job_ids(self, prefix: str) -> list[str]:
        """Job ids starting with ``prefix``: in the ledger (jobs a worker took) or in an executor's
        phase (jobs planned, including those no worker has started)."""
        ids = {
            str(doc["_id"]) async for doc in self.db[JOB_RUNS].find({"_id": _anchored(prefix)}, {"_id": 1})
        }
        phases = self.db["phases"].find(
            {"state.jobs.spec.job_id": _anchored(prefix)}, {"state.jobs.spec.job_id": 1}
        )
        async for doc in phases:
            ids.update(job["spec"]["job_id"] for job in doc["state"]["jobs"])
        return sorted(job_id for job_id in ids if job_id.startswith(prefix))

    async def phase(self, campaign_id: str, phase: str = "validation") -> PhaseView | None:
        doc = await self.db["phases"].find_one({"_id": f"{campaign_id}:{phase}"})
        return None if doc is None else phase_view(doc)

    async def proposal(self, campaign_id: str) -> dict[str, Any] | None:
        """The stored launch proposal: ``markdown``, ``html`` and ``images`` (file name -> PNG)."""
        return await self.db["proposals"].find_one({"_id": campaign_id})

    async def phases(self, campaign_id: str, without_diagnostics: bool = False) -> list[PhaseView]:
        """Every phase the executor ran for the campaign, in the order phases run; a view polled
        often leaves out the jobs' diagnostics and epoch history."""
        projection = BULKY_JOB_FIELDS if without_diagnostics else None
        cursor = self.db["phases"].find({"state.campaign_id": campaign_id}, projection)
        phases = [phase_view(doc) async for doc in cursor]
        return sorted(phases, key=lambda phase: phase_order(phase.phase))

    async def phases_of(self, campaign_ids: list[str]) -> dict[str, list[PhaseView]]:
        """The phases of several campaigns in one query, without the jobs' bulky diagnostics."""
        found: dict[str, list[PhaseView]] = {campaign_id: [] for campaign_id in campaign_ids}
        cursor = self.db["phases"].find({"state.campaign_id": {"$in": campaign_ids}}, BULKY_JOB_FIELDS)
        async for doc in cursor:
            phase = phase_view(doc)
            found.setdefault(phase.campaign_id, []).append(phase)
        return {key: sorted(phases, key=lambda p: phase_order(p.phase)) for key, phases in found.items()}

    async def job(self, job_id: str) -> JobView | None:
        """The executor's view of one job (``spec``, ``status``, ``output``, ``worker``)."""
        doc = await self.db["phases"].find_one({"state.jobs.spec.job_id": job_id})
        if doc is None:
            return None
        return next((job for job in phase_view(doc).jobs if job.spec.job_id == job_id), None)

    async def job_run(self, job_id: str) -> JobRun | None:
        """What the job ledger kept of one job: status, worker, CPU, times and its output."""
        doc = await self.db[JOB_RUNS].find_one({"_id": job_id}, {"final": 0})
        return None if doc is None else JobRun.from_doc(doc)

    async def job_runs(self, job_ids: list[str]) -> dict[str, JobRun]:
        """The ledger's documents of some jobs, without their output (a live view polls this)."""
        cursor = self.db[JOB_RUNS].find({"_id": {"$in": job_ids}}, {"final": 0, "log": 0})
        return {str(doc["_id"]): JobRun.from_doc(doc) async for doc in cursor}

    async def results(self, campaign_id: str) -> list[dict[str, Any]]:
        return [
            doc async for doc in self.db["results"].find({"campaign_id": campaign_id}).sort("recorded_at", 1)
        ]

    async def wait_for(
        self, campaign_id: str, statuses: frozenset[str], timeout_s: float, poll_s: float = 0.5
    ) -> CampaignView | None:
        """Wait until the campaign reaches one of ``statuses``; returns its state (None on time-out)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = await self.campaign(campaign_id)
            if state is not None and state.status in statuses:
                return state
            await asyncio.sleep(poll_s)
        return None


# ---- ids ------------------------------------------------------------------------------


def pick_match(what: str, prefix: str, matches: Iterable[str]) -> str:
    """The one id ``prefix`` names among the ids it starts: itself when it is a whole id (as
    git does, so an id that is a prefix of another stays reachable), else the only match."""
    found = sorted(set(matches))
    if prefix in found:
        return prefix
    if len(found) == 1 and prefix:
        return found[0]
    raise UnresolvedId(what, prefix, found)


def _common_prefix_length(a: str, b: str) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def short_ids(ids: Iterable[str], among: Iterable[str], minimum: int = SHORT_ID_LENGTH) -> dict[str, str]:
    """Each of ``ids`` cut to the shortest prefix that no other id in ``among`` starts with, and
    at least ``minimum`` characters (as git does): a short id shown is one every command accepts."""
    known = sorted({*among, *ids})
    wanted = set(ids)
    cut: dict[str, str] = {}
    for index, full in enumerate(known):
        if full not in wanted:
            continue
        neighbours = known[max(index - 1, 0) : index] + known[index + 1 : index + 2]
        shared = max((_common_prefix_length(full, other) for other in neighbours), default=0)
        cut[full] = full[: max(minimum, shared + 1)]
    return cut


# ---- campaign summaries ----------------------------------------------------------------


@dataclass(frozen=True)
class Best:
    """The best search job so far by validation NE, against the campaign's validation baseline."""

    job_id: str
    hypothesis_id: str | None
    validation_ne: float
    baseline_ne: float

    @property
    def gain(self) -> float:
        """Relative NE reduction: 0.032 means the best job's NE is 3.2% below the baseline's."""
        return (self.baseline_ne - self.validation_ne) / self.baseline_ne


@dataclass(frozen=True)
class CampaignSummary:
    campaign_id: str
    name: str
    status: str
    phase: str | None
    spent_cpu_seconds: float
    budget_cpu_seconds: float | None
    best: Best | None
    updated_at: str
    workload: str = ""
    in_flight: int = 0


def _unrecorded(campaign: CampaignView, phases: list[PhaseView]) -> list[PhaseView]:
    """The phases the planner has no records of yet: the one running (or one just concluded
    whose result the planner has not taken in). Concluded phases are counted from the records."""
    recorded = {record.phase for record in campaign.records}
    return [phase for phase in phases if phase.phase not in recorded]


def _as_record(job: JobView) -> JobRecord | None:
    """A finished job the executor tracks, in the shape of the planner's job record (None while
    it has not finished)."""
    if job.status not in FINISHED_JOB_STATUSES:
        return None
    output, spec = job.output, job.spec
    return JobRecord(
        job_id=spec.job_id,
        hypothesis_id=spec.hypothesis_id,
        config=spec.config,
        status=job.status,
        phase=spec.phase,
        seed=spec.seed,
        validation=output.validation if output else None,
        test=output.test if output else None,
        cost=output.cost if output else None,
        error=output.error if output else None,
    )


def job_records(campaign: CampaignView, phases: list[PhaseView]) -> list[JobRecord]:
    """Every finished job of the campaign so far as a job record: the planner's records of
    concluded phases, then the finished jobs of the phase still running."""
    live = [_as_record(job) for phase in _unrecorded(campaign, phases) for job in phase.jobs]
    return [*campaign.records, *(record for record in live if record is not None)]


def spent_cpu_seconds(campaign: CampaignView, phases: list[PhaseView]) -> float:
    """CPU seconds the campaign's jobs used: the recorded jobs' costs plus what the executor has
    charged the phase still running (its jobs are not in the records yet, so nothing counts twice)."""
    recorded = sum(record.cost.cpu_seconds for record in campaign.records if record.cost)
    running = sum(phase.spent_cpu_seconds for phase in _unrecorded(campaign, phases))
    return float(recorded + running)


def best_so_far(records: list[JobRecord]) -> Best | None:
    """The completed search job (validation, combination, exploitation: full fidelity, the
    planner's own candidates) with the lowest validation NE, against the validation phase's
    baseline; None until both are known. Screening jobs ran on fewer epochs and do not compare."""
    scored = [(r.validation.ne, r) for r in records if r.status == "completed" and r.validation]
    baseline_ne = next((ne for ne, r in scored if r.hypothesis_id is None and r.phase == VALIDATION), None)
    candidates = [(ne, r) for ne, r in scored if kind(r.phase) in SEARCH_KINDS]
    if not baseline_ne or not candidates:
        return None
    best_ne, best = min(candidates, key=lambda pair: pair[0])
    return Best(best.job_id, best.hypothesis_id, best_ne, baseline_ne)


def summarize(campaign: CampaignView, phases: list[PhaseView]) -> CampaignSummary:
    """One line of `rea status`: where the campaign stands, what it spent, what it found."""
    return CampaignSummary(
        campaign_id=campaign.campaign_id,
        name=campaign.name,
        status=campaign.status,
        phase=campaign.phase,
        spent_cpu_seconds=spent_cpu_seconds(campaign, phases),
        budget_cpu_seconds=campaign.budget_cpu_seconds(),
        best=best_so_far(job_records(campaign, phases)),
        updated_at=str(campaign.updated_at or "")[:19],
        workload=campaign.workload,
        in_flight=len(jobs_in_flight(phases)),
    )


def format_gain(best: Best | None) -> str:
    """ "+3.2%" (lower NE than the baseline), "-0.4%" (worse), "" (not known yet)."""
    return "" if best is None else f"{best.gain:+.1%}"


# ---- jobs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    """One line of `rea jobs`."""

    job_id: str
    short_id: str
    phase: str
    hypothesis_id: str | None
    status: str
    changes: dict[str, Any] = field(default_factory=dict)
    validation_ne: float | None = None
    test_ne: float | None = None
    cpu_seconds: float | None = None
    failure: str | None = None
    failure_message: str | None = None


def baseline_config(phases: list[PhaseView]) -> dict[str, Any] | None:
    """The campaign's baseline config: the baseline job's in the validation phase (full fidelity),
    else in screening while only screening has run."""
    for wanted in (VALIDATION, SCREENING):
        for phase in phases:
            if phase.phase != wanted:
                continue
            for job in phase.jobs:
                if job.spec.hypothesis_id is None:
                    return dict(job.spec.config)
    return None


def config_changes(config: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """The knobs whose value differs from the baseline's (all of them when there is no baseline)."""
    if baseline is None:
        return dict(config)
    return {knob: value for knob, value in config.items() if knob not in baseline or baseline[knob] != value}


def format_changes(changes: dict[str, Any]) -> str:
    """ "learning_rate=0.003 dropout=0.1": what a job's config changed, as a person writes it."""
    return " ".join(
        f"{knob}={value:g}" if isinstance(value, float) else f"{knob}={value}"
        for knob, value in changes.items()
    )


def job_rows(campaign_id: str, phases: list[PhaseView]) -> list[JobRow]:
    """Every job of every phase, in the order phases run, with its config diff to the baseline."""
    baseline = baseline_config(phases)
    rows: list[JobRow] = []
    for phase in phases:
        for job in phase.jobs:
            spec, output = job.spec, job.output
            error = output.error if output else None
            rows.append(
                JobRow(
                    job_id=spec.job_id,
                    short_id=spec.job_id.removeprefix(f"{campaign_id}-"),
                    phase=phase.phase,
                    hypothesis_id=spec.hypothesis_id,
                    status=job.status,
                    changes=config_changes(spec.config, baseline),
                    validation_ne=output.validation.ne if output and output.validation else None,
                    test_ne=output.test.ne if output and output.test else None,
                    cpu_seconds=output.cost.cpu_seconds if output and output.cost else None,
                    failure=error.kind if error else None,
                    failure_message=error.message if error else None,
                )
            )
    return rows


def jobs_in_flight(phases: list[PhaseView]) -> list[JobView]:
    """The executor's jobs handed to a worker and not finished yet."""
    return [job for phase in phases for job in phase.jobs if job.in_flight]


def elapsed_s(started_at: datetime | None, now: datetime) -> float | None:
    """Seconds a running job has run (None before a worker started it)."""
    return None if started_at is None else max(0.0, (now - started_at).total_seconds())
