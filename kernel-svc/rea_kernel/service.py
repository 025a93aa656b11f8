"""Kernel-service wiring: ``kernel.search.requested`` in; ``kernel.candidate.evaluated`` for each
candidate, then ``kernel.published`` (with registry entries) or ``kernel.search.failed``, out.
A request is a person's signed decision, judged by the decision gate (:mod:`rea.decisions`): an
unsigned or forged one is dead-lettered with the reason and audited.

Decisions about a search are pure (:mod:`rea_kernel.searches`); a search itself is seconds per
candidate of compiling and timing, so it runs in a thread beside the event loop, one at a time,
and the service hibernates between searches (woken by the handler, never polling). A search
interrupted by a stop or a crash stays ``running`` under this instance's name and is run again
from the start when the instance comes back; the events it publishes carry ids fixed by the
search, so consumers see each once. (A language model may write other kernels when a search runs
again: a consumer then keeps the first run's verdict for that evaluation's number.) A warm search
starts from the registry's kernels for its operator on this device; which ones is recorded with
the search before it starts, so a search run again starts from the same.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
from functools import partial

import structlog
from pymongo import ReturnDocument

from rea.decisions import DecisionGate
from rea.events import (
    Event,
    KernelCandidateEvaluated,
    KernelCandidateEvaluatedPayload,
    KernelPublishedPayload,
    KernelSearchRequested,
    utc_now,
)
from rea.kernels import Candidate, ParamValue
from rea.runtime import Runtime
from rea.settings import Settings
from rea_kernel.evaluator import Evaluation
from rea_kernel.evaluator import Settings as EvaluatorSettings
from rea_kernel.registry import KernelRegistry
from rea_kernel.searches import (
    COLLECTION,
    Capabilities,
    KernelSearch,
    failure,
    on_search_requested,
    published_event,
)
from rea_kernel.synthesis import Synthesizer, synthesizer_from
from rea_kernel.targets import TARGETS, get_target
from rea_kernel.tuning import TuningOutcome, relative_cost, search_shapes, tune, warm_starts

CONSUMER = "kernel"
REPORT_TIMEOUT_S = 60.0
log = structlog.get_logger()


class SearchStopped(Exception):
    """The service is stopping: the search ends after the candidate being evaluated."""


def capabilities_here(synthesizer: Synthesizer | None = None) -> Capabilities:
    unavailable = {name: why for name, target in TARGETS.items() if (why := target.unavailable()) is not None}
    for name, target in TARGETS.items():
        if name not in unavailable and not target.times_kernels():
            unavailable[name] = f"{target.device_name()}: kernels can be checked but not timed"
    return Capabilities(
        operators={name: target.operators() for name, target in TARGETS.items()},
        unavailable=unavailable,
        synthesizer=None if synthesizer is None else synthesizer.author,
    )


def evaluator_settings(settings: Settings) -> EvaluatorSettings:
    flush = None if settings.kernel_flush_mb is None else settings.kernel_flush_mb << 20
    return EvaluatorSettings(
        repeats=settings.kernel_repeats,
        threads=settings.kernel_threads,
        huge_pages=settings.kernel_huge_pages,
        cache_flush_bytes=flush,
        cache_dir=settings.home / "kernel-cache",
        fork_server=settings.kernel_fork_server,
    ).with_confinement(settings.kernel_confine)


def speedup(evaluation: Evaluation) -> float | None:
    """Over eager, the geometric mean over the benchmark shapes (the inverse of the search's
    cost); None when not timed."""
    cost = relative_cost(evaluation)
    return None if cost is None else 1 / cost


def _now() -> str:
    """A time as the stored state writes it (JSON mode), so one field never holds two types."""
    return utc_now().isoformat()


def wire(rt: Runtime) -> None:
    searches = rt.store.db[COLLECTION]
    registry = KernelRegistry(rt.store.db)
    synthesizer = synthesizer_from(rt.settings)
    capabilities = capabilities_here(synthesizer)
    settings = evaluator_settings(rt.settings)
    wake = asyncio.Event()
    stopping = threading.Event()

    async def on_requested(event: KernelSearchRequested) -> None:
        applied = await rt.store.apply(
            consumer=CONSUMER,
            event=event,
            collection=COLLECTION,
            key=event.search_id,
            model=KernelSearch,
            decide=partial(on_search_requested, capabilities=capabilities),
        )
        refused = applied.decision.state if applied.decision else None
        if refused is not None and refused.status == "failed":
            rt.metrics.kernel_searches.labels(service=rt.name, status="failed").inc()
        rt.relay.kick()
        wake.set()

    async def claim() -> KernelSearch | None:
        """The oldest accepted search, now this instance's to run."""
        doc = await searches.find_one_and_update(
            {"state.status": "requested"},
            {
                "$set": {"state.status": "running", "state.runner": rt.name, "state.updated_at": _now()},
                "$inc": {"version": 1},
            },
            sort=[("state.requested_at", 1)],
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else KernelSearch.model_validate(doc["state"])

    async def finish(done: KernelSearch, emit: list[Event]) -> None:
        """Record how the search ended and what it says, in one transaction (the count of
        evaluations was kept as they happened)."""
        ended = {"status": done.status, "reason": done.reason, "published": done.published}
        fields = {f"state.{name}": value for name, value in ended.items()} | {"state.updated_at": _now()}
        async with rt.store.transaction() as session:
            await searches.update_one(
                {"_id": done.search_id, "state.status": "running"},
                {"$set": fields, "$inc": {"version": 1}},
                session=session,
            )
            await rt.store.add_to_outbox(emit, CONSUMER, session)
        rt.relay.kick()
        rt.metrics.kernel_searches.labels(service=rt.name, status=done.status).inc()
        log.info("kernel_search_finished", search_id=done.search_id, status=done.status, reason=done.reason)

    async def fail(search: KernelSearch, reason: str) -> None:
        failed = search.model_copy(update={"status": "failed", "reason": reason})
        await finish(failed, [failure(failed, search.search_id)])

    async def evaluated(
        search: KernelSearch, number: int, candidate: Candidate, evaluation: Evaluation
    ) -> None:
        payload = KernelCandidateEvaluatedPayload(
            operator=candidate.operator,
            target=search.request.target,
            device=evaluation.device,
            evaluation=number,
            digest=candidate.digest,
            params=candidate.params,
            author=candidate.author,
            note=candidate.note,
            verdict=str(evaluation.verdict),
            reason=evaluation.reason[:2000],
            speedup_vs_eager=speedup(evaluation),
        )
        rt.metrics.kernel_candidates.labels(
            service=rt.name, target=search.request.target, verdict=payload.verdict
        ).inc()
        event_id = f"{search.search_id}:{number}"
        await rt.bus.publish(
            KernelCandidateEvaluated(
                event_id=event_id,
                search_id=search.search_id,
                correlation_id=search.search_id,
                payload=payload,
            )
        )
        await searches.update_one({"_id": search.search_id}, {"$set": {"state.evaluations": number}})

    async def starts_of(search: KernelSearch) -> list[dict[str, ParamValue]]:
        """The registry points a warm search starts from: read once, then kept with the search."""
        request = search.request
        if search.starts is not None or not request.warm_start:
            return search.starts or []
        target = get_target(request.target)
        kept = await registry.entries(request.operator, request.target, target.device_name())
        shapes = search_shapes(request.operator, request.shapes or None)
        starts = warm_starts(kept, target.search_space(request.operator), request.budget, shapes)
        await searches.update_one({"_id": search.search_id}, {"$set": {"state.starts": starts}})
        return starts

    async def run(search: KernelSearch) -> None:
        loop = asyncio.get_running_loop()
        request = search.request
        starts = await starts_of(search)

        def on_evaluated(number: int, candidate: Candidate, evaluation: Evaluation) -> None:
            if stopping.is_set():  # the loop may be going away: do not wait on it
                raise SearchStopped
            report = evaluated(search, number, candidate, evaluation)
            try:
                asyncio.run_coroutine_threadsafe(report, loop).result(timeout=REPORT_TIMEOUT_S)
            except TimeoutError as stuck:
                raise SearchStopped from stuck

        try:
            outcome: TuningOutcome = await asyncio.to_thread(
                tune,
                request.operator,
                request.target,
                request.budget,
                method=request.method,
                seed=request.seed,
                search_id=search.search_id,
                settings=settings.model_copy(update={"benchmark_shapes": tuple(request.shapes) or None}),
                on_evaluated=on_evaluated,
                synthesizer=synthesizer,
                synthesized=request.synthesized,
                starts=starts,
            )
        except SearchStopped:
            return  # run again from the start when this instance is back
        except Exception as error:  # a machine or evaluator problem: the search fails, the service goes on
            await fail(search, f"the search stopped: {error!r}")
            return
        for reason in outcome.synthesis_dropped:
            log.warning("kernel_synthesis_dropped", search_id=search.search_id, reason=reason)
        final = outcome.final
        if outcome.best is None or final is None or not outcome.entries:
            await fail(
                search, "no candidate passed" if final is None else f"the winner failed: {final.reason}"
            )
            return
        kept = await registry.publish(list(outcome.entries))
        compiled = [e.speedup_vs_compiled for e in outcome.entries if e.speedup_vs_compiled is not None]
        payload = KernelPublishedPayload(
            operator=request.operator,
            target=request.target,
            device=outcome.device,
            digest=outcome.best.digest,
            params=outcome.best.params,
            speedup_vs_eager=speedup(final) or 0.0,
            speedup_vs_compiled=statistics.geometric_mean(compiled) if compiled else None,
            evaluations=len(outcome.evaluated),
            method=request.method,
            author=outcome.best.author,
        )
        reason = f"kept {len(kept)} of {len(outcome.entries)} shape buckets (faster kernels hold the others)"
        published = [entry.key for entry in kept]
        done = search.model_copy(update={"status": "published", "reason": reason, "published": published})
        await finish(done, [published_event(search.search_id, payload)])

    async def run_searches() -> None:
        while True:
            search = await claim()
            if search is None:
                wake.clear()
                await wake.wait()  # hibernate until a request is accepted
                continue
            await run(search)

    async def resume_interrupted() -> None:
        """Searches this instance was running when it stopped or died run again."""
        await registry.ensure_indexes()
        resumed = await searches.update_many(
            {"state.status": "running", "state.runner": rt.name}, {"$set": {"state.status": "requested"}}
        )
        if resumed.modified_count:
            log.warning("kernel_searches_resumed", searches=resumed.modified_count)
        wake.set()

    async def stop_searching() -> None:
        stopping.set()

    rt.on_reconcile(resume_interrupted)
    rt.on_stop(stop_searching)
    rt.background(run_searches)
    rt.bus.subscribe(
        [rt.topics.kernel_requests],
        group="kernel",
        handlers={KernelSearchRequested: on_requested},
        gate=DecisionGate.for_service(rt.settings, rt.store.db, CONSUMER),
    )
