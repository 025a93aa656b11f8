"""What people's tools (the CLI, tests, notebooks) use to talk to a running REA.

The read side is split in two: :class:`Client` fetches documents from MongoDB, and plain
functions below it (``short_ids``, ``pick_match``, ``summarize``, ``job_rows``, ...) turn those
documents into what a person reads, so they can be tested without any server.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from rea.doorbell import Doorbell, ring
from rea.endpoints import Endpoints, resolve_endpoints
from rea.events import Envelope, encode_event
from rea.ledger import COLLECTION as JOB_RUNS
from rea.ledger import JobRun
from rea.phases import SCREENING, SEARCH_KINDS, VALIDATION, kind
from rea.phases import order as phase_order
from rea.settings import Settings
from rea.topics import Topics

Doc = dict[str, Any]

FINAL_STATUSES = frozenset({"rejected", "completed", "failed", "cancelled"})
HIDDEN_STATUSES = frozenset({"rejected", "cancelled"})
"""Campaigns `rea status` leaves out of its list unless asked for ``--all``: they never ran to a result."""
IN_FLIGHT_JOB_STATUSES = frozenset({"submitted", "running"})
SHORT_ID_LENGTH = 8
MATCHES_SHOWN = 10
# Fields of a phase's jobs that summaries never read and that make up most of a phase document.
BULKY_JOB_FIELDS: Doc = {"state.jobs.output.diagnostics": 0, "state.jobs.output.history": 0}


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
            self.endpoints.mongo_uri, tz_aware=True, serverSelectionTimeoutMS=10_000
        )
        self.db = self.mongo[settings.mongo_db]

    async def close(self) -> None:
        await self.mongo.close()

    async def publish(self, event: Envelope) -> None:
        await self.send(self.topics.for_event(event.type), event.key(), encode_event(event))

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.endpoints.kafka_bootstrap,
            enable_idempotence=self.settings.kafka_idempotence,
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()
        if self.settings.kafka_doorbell:
            await ring(self.endpoints.redis_url, Doorbell.channel_for(self.settings.topic_prefix), topic)

    async def campaign(self, campaign_id: str) -> dict[str, Any] | None:
        doc = await self.db["campaigns"].find_one({"_id": campaign_id})
        return None if doc is None else dict(doc["state"])

    async def campaigns(self, limit: int = 50, hidden: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The newest campaigns first, leaving out those whose status is in ``hidden``."""
        query: Doc = {"state.status": {"$nin": sorted(hidden)}} if hidden else {}
        cursor = self.db["campaigns"].find(query).sort("state.created_at", -1).limit(limit)
        return [doc["state"] async for doc in cursor]

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

    async def phase(self, campaign_id: str, phase: str = "validation") -> dict[str, Any] | None:
        doc = await self.db["phases"].find_one({"_id": f"{campaign_id}:{phase}"})
        return None if doc is None else dict(doc["state"])

    async def proposal(self, campaign_id: str) -> dict[str, Any] | None:
        """The stored launch proposal: ``markdown``, ``html`` and ``images`` (file name -> PNG)."""
        return await self.db["proposals"].find_one({"_id": campaign_id})

    async def phases(self, campaign_id: str, without_diagnostics: bool = False) -> list[dict[str, Any]]:
        """Every phase the executor ran for the campaign, in the order phases run; a view polled
        often leaves out the jobs' diagnostics and epoch history."""
        projection = BULKY_JOB_FIELDS if without_diagnostics else None
        cursor = self.db["phases"].find({"state.campaign_id": campaign_id}, projection)
        states = [dict(doc["state"]) async for doc in cursor]
        return sorted(states, key=lambda state: phase_order(state["phase"]))

    async def phases_of(self, campaign_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The phases of several campaigns in one query, without the jobs' bulky diagnostics."""
        found: dict[str, list[Doc]] = {campaign_id: [] for campaign_id in campaign_ids}
        cursor = self.db["phases"].find({"state.campaign_id": {"$in": campaign_ids}}, BULKY_JOB_FIELDS)
        async for doc in cursor:
            found.setdefault(doc["state"]["campaign_id"], []).append(dict(doc["state"]))
        return {key: sorted(states, key=lambda s: phase_order(s["phase"])) for key, states in found.items()}

    async def job(self, job_id: str) -> dict[str, Any] | None:
        """The executor's view of one job (``spec``, ``status``, ``output``, ``worker``)."""
        doc = await self.db["phases"].find_one({"state.jobs.spec.job_id": job_id})
        if doc is None:
            return None
        return next((job for job in doc["state"]["jobs"] if job["spec"]["job_id"] == job_id), None)

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
    ) -> dict[str, Any] | None:
        """Wait until the campaign reaches one of ``statuses``; returns its state (None on time-out)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = await self.campaign(campaign_id)
            if state is not None and state["status"] in statuses:
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


def _unrecorded(campaign: Doc, phases: list[Doc]) -> list[Doc]:
    """The phases the planner has no records of yet: the one running (or one just concluded
    whose result the planner has not taken in). Concluded phases are counted from the records."""
    recorded = {record.get("phase", VALIDATION) for record in campaign.get("records") or []}
    return [phase for phase in phases if phase["phase"] not in recorded]


def _tracked_as_record(job: Doc) -> Doc:
    """An executor's tracked job in the shape of the planner's job record."""
    output = job.get("output") or {}
    spec = job["spec"]
    return {
        "job_id": spec["job_id"],
        "hypothesis_id": spec.get("hypothesis_id"),
        "config": spec.get("config") or {},
        "status": job["status"],
        "phase": spec["phase"],
        "seed": spec.get("seed", 0),
        "validation": output.get("validation"),
        "test": output.get("test"),
        "cost": output.get("cost"),
        "error": output.get("error"),
    }


def job_records(campaign: Doc, phases: list[Doc]) -> list[Doc]:
    """Every job of the campaign so far as a job record: the planner's records of concluded
    phases, then the jobs of the phase still running."""
    live = [_tracked_as_record(job) for phase in _unrecorded(campaign, phases) for job in phase["jobs"]]
    return [*(campaign.get("records") or []), *live]


def spent_cpu_seconds(campaign: Doc, phases: list[Doc]) -> float:
    """CPU seconds the campaign's jobs used: the recorded jobs' costs plus what the executor has
    charged the phase still running (its jobs are not in the records yet, so nothing counts twice)."""
    recorded = sum(
        (record.get("cost") or {}).get("cpu_seconds", 0.0) for record in campaign.get("records") or []
    )
    running = sum(phase.get("spent_cpu_seconds", 0.0) for phase in _unrecorded(campaign, phases))
    return float(recorded + running)


def budget_cpu_seconds(campaign: Doc) -> float | None:
    """The campaign's cap: its request's budget plus every extension a person made (None when the
    request was invalid and there is no budget to speak of)."""
    spec = campaign.get("spec")
    if not spec:
        return None
    extensions = sum(change["cpu_seconds"] for change in campaign.get("budget_changes") or [])
    return float(spec["budget_cpu_seconds"] + extensions)


def _validation_ne(record: Doc) -> float | None:
    validation = record.get("validation")
    return None if not validation else float(validation["ne"])


def best_so_far(records: list[Doc]) -> Best | None:
    """The completed search job (validation, combination, exploitation: full fidelity, the
    planner's own candidates) with the lowest validation NE, against the validation phase's
    baseline; None until both are known. Screening jobs ran on fewer epochs and do not compare."""
    scored = [
        (ne, r) for r in records if r["status"] == "completed" and (ne := _validation_ne(r)) is not None
    ]
    baseline_ne = next(
        (ne for ne, r in scored if r.get("hypothesis_id") is None and r.get("phase") == VALIDATION), None
    )
    candidates = [(ne, r) for ne, r in scored if kind(r.get("phase", VALIDATION)) in SEARCH_KINDS]
    if not baseline_ne or not candidates:
        return None
    best_ne, best = min(candidates, key=lambda pair: pair[0])
    return Best(best["job_id"], best.get("hypothesis_id"), best_ne, baseline_ne)


def summarize(campaign: Doc, phases: list[Doc]) -> CampaignSummary:
    """One line of `rea status`: where the campaign stands, what it spent, what it found."""
    request = campaign.get("spec") or campaign.get("request") or {}
    return CampaignSummary(
        campaign_id=campaign["campaign_id"],
        name=str(request.get("name", "")),
        status=campaign["status"],
        phase=campaign.get("phase"),
        spent_cpu_seconds=spent_cpu_seconds(campaign, phases),
        budget_cpu_seconds=budget_cpu_seconds(campaign),
        best=best_so_far(job_records(campaign, phases)),
        updated_at=str(campaign.get("updated_at", ""))[:19],
        workload=str(request.get("workload", "ranker")),
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


def baseline_config(phases: list[Doc]) -> dict[str, Any] | None:
    """The campaign's baseline config: the baseline job's in the validation phase (full fidelity),
    else in screening while only screening has run."""
    for wanted in (VALIDATION, SCREENING):
        for phase in phases:
            if phase["phase"] != wanted:
                continue
            for job in phase["jobs"]:
                if job["spec"].get("hypothesis_id") is None:
                    return dict(job["spec"].get("config") or {})
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


def job_rows(campaign_id: str, phases: list[Doc]) -> list[JobRow]:
    """Every job of every phase, in the order phases run, with its config diff to the baseline."""
    baseline = baseline_config(phases)
    rows: list[JobRow] = []
    for phase in phases:
        for job in phase["jobs"]:
            spec, output = job["spec"], job.get("output") or {}
            error = output.get("error") or {}
            rows.append(
                JobRow(
                    job_id=spec["job_id"],
                    short_id=spec["job_id"].removeprefix(f"{campaign_id}-"),
                    phase=phase["phase"],
                    hypothesis_id=spec.get("hypothesis_id"),
                    status=job["status"],
                    changes=config_changes(spec.get("config") or {}, baseline),
                    validation_ne=(output.get("validation") or {}).get("ne"),
                    test_ne=(output.get("test") or {}).get("ne"),
                    cpu_seconds=(output.get("cost") or {}).get("cpu_seconds"),
                    failure=error.get("kind"),
                    failure_message=error.get("message"),
                )
            )
    return rows


def jobs_in_flight(phases: list[Doc]) -> list[Doc]:
    """The executor's jobs handed to a worker and not finished yet."""
    return [job for phase in phases for job in phase["jobs"] if job["status"] in IN_FLIGHT_JOB_STATUSES]


def elapsed_s(started_at: datetime | None, now: datetime) -> float | None:
    """Seconds a running job has run (None before a worker started it)."""
    return None if started_at is None else max(0.0, (now - started_at).total_seconds())
