"""KernelEvolve as a service: `rea kernels search` publishes a signed request on the broker, the
kernel service searches on this CPU (every candidate compiled and judged in its sandbox), keeps
the winner in the registry and says so with events the logger records; a request it cannot run
is refused with the reason, an unsigned one is dead-lettered. With an LLM endpoint (a local test
server), a search goes on to kernels the model writes, judged like the rest; a later search for the
same operator starts from the registry's kernel (a warm start). A training job
that asks for evolved kernels is handed the registry by its job side and runs the published
kernel for the shape it was searched for, if its evaluation found it faster than PyTorch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from rea.client import Client
from rea.events import (
    JobCompleted,
    JobSpec,
    JobSubmitted,
    KernelSearchRequested,
    KernelSearchRequestedPayload,
    encode_event,
    parse_event,
)
from rea.store import Store
from rea_kernel.registry import KernelRegistry
from rea_kernel.searches import COLLECTION, KernelSearch
from rea_kernel.targets import get_target
from rea_tools.stack import EmbeddedStack

from ..llm_server import LlmServer, llm_server
from .helpers import eventually, run_rea

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        get_target("cpu").unavailable() is not None, reason=str(get_target("cpu").unavailable())
    ),
]
QUICK = {"REA_KERNEL_REPEATS": "3", "REA_KERNEL_FLUSH_MB": "8", "REA_KERNEL_THREADS": "1"}


def written_kernels() -> str:
    """What the test's model answers: the template's layer norm, reworded, and one that does
    not compile."""
    cpu = get_target("cpu")
    template = cpu.render("layer_norm", cpu.default_params("layer_norm")).sources
    reworded = template | {"kernel.cpp": "// by hand\n" + template["kernel.cpp"]}
    broken = template | {"kernel.cpp": "this is not C++"}
    kernels = [{"idea": "reworded", "files": reworded}, {"idea": "broken", "files": broken}]
    return json.dumps({"kernels": kernels})


@pytest.fixture
def model() -> Iterator[LlmServer]:
    with llm_server(written_kernels()) as server:
        yield server


async def test_a_kernel_search_runs_as_a_service_and_publishes_to_the_registry(
    services: EmbeddedStack, client: Client, store: Store, env: dict[str, str], model: LlmServer
) -> None:
    services.start_service("logger")
    services.start_service("kernel", env=QUICK | {"REA_LLM_BASE_URL": model.url, "REA_LLM_MODEL": "local"})

    # The shape the job below normalises its 200 validation and test rows at (64 hidden units).
    search = [
        "kernels",
        "search",
        "layer_norm",
        "--budget",
        "3",
        "--seed",
        "1",
        "--shape",
        "rows=200,dim=64,activation=relu",
    ]
    done = await asyncio.to_thread(run_rea, search, env, 300)
    assert done.returncode == 0, done.stderr
    search_id = done.stdout.split()[0]
    doc = await store.db[COLLECTION].find_one({"_id": search_id})
    assert doc is not None
    found = KernelSearch.model_validate(doc["state"])
    assert (found.status, found.evaluations) == ("published", 3)
    cpu = get_target("cpu").device_name()
    kept = await KernelRegistry(store.db).entries(operator="layer_norm", device=cpu)
    assert [entry.key for entry in kept] == found.published
    assert [entry.bucket for entry in kept] == ["d64-r256-relu"]
    assert all(e.provenance.search_id == search_id and e.speedup_vs_compiled is not None for e in kept)
    assert "eager" in done.stderr  # what it published, as a person reads it
    shown = await asyncio.to_thread(
        run_rea, ["kernels", "show", "layer_norm", "--bucket", "d64-r256-relu"], env, 60
    )
    assert shown.returncode == 0, shown.stderr
    assert (
        "kernel.cpp" in shown.stdout
        and 'extern "C"' in shown.stdout
        and "written by template" in shown.stdout
    )

    async def logged() -> bool:
        types = [d["type"] async for d in store.events.find({"search_id": search_id})]
        return types.count("kernel.candidate.evaluated") == 3 and "kernel.published" in types

    await eventually(logged, "the search's events in the events collection", 30)

    written = [
        "kernels",
        "search",
        "layer_norm",
        "--budget",
        "1",
        "--llm",
        "2",
        "--shape",
        "rows=200,dim=64,activation=relu",
    ]
    done = await asyncio.to_thread(run_rea, written, env, 300)
    assert done.returncode == 0, done.stderr
    written_id = done.stdout.split()[0]
    assert len(model.requests) == 1 and model.requests[0]["body"]["model"] == "local"
    verdicts: list[dict[str, object]] = []

    async def judged() -> bool:
        events = store.events.find({"search_id": written_id, "type": "kernel.candidate.evaluated"})
        verdicts[:] = [d["payload"] async for d in events]
        return len(verdicts) == 3

    await eventually(judged, "the verdicts on the search's candidates, written ones included", 30)
    # A warm start: the first search's winner, for the same operator on this CPU, came first.
    [first] = [p for p in verdicts if p["evaluation"] == 1]
    assert first["params"] == kept[0].candidate.params and first["author"] == "template"
    doc = await store.db[COLLECTION].find_one({"_id": written_id})
    assert doc is not None and doc["state"]["starts"] == [kept[0].candidate.params]
    by_note = {p["note"]: p for p in verdicts if p["author"] == "llm:local"}
    assert by_note["reworded"]["verdict"] == "passed"
    assert by_note["broken"]["verdict"] == "rejected" and "does not compile" in str(
        by_note["broken"]["reason"]
    )

    refused = await asyncio.to_thread(run_rea, ["kernels", "search", "softmax"], env, 60)
    assert refused.returncode == 1
    assert "unknown operator 'softmax'" in refused.stderr
    assert all(proc.poll() is None for proc in services.children.values())  # the service goes on

    # A request is a signed decision: the first search's is in the audit trail, and one sent
    # unsigned (the client would sign it) is dead-lettered and never becomes a search.
    trail = await asyncio.to_thread(run_rea, ["audit", search_id, "--json"], env, 60)
    assert trail.returncode == 0, trail.stderr
    [audited] = [json.loads(line) for line in trail.stdout.splitlines()]
    assert (audited["consumer"], audited["verdict"], audited["type"]) == (
        "kernel",
        "accepted",
        "kernel.search.requested",
    )
    forged = KernelSearchRequested(
        search_id="forged",
        correlation_id="forged",
        payload=KernelSearchRequestedPayload(operator="layer_norm", synthesized=200),
    )
    await client.send(client.topics.kernel_requests, forged.key(), encode_event(forged))

    async def forgery_refused() -> bool:
        letter = await store.dead_letters.find_one(
            {"reason": "refused decision: unsigned", "service": "kernel"}
        )
        return letter is not None and '"search_id":"forged"' in letter["original"]

    await eventually(forgery_refused, "the kernel service to dead-letter the unsigned request")
    assert await store.db[COLLECTION].find_one({"_id": "forged"}) is None
    assert len(model.requests) == 1  # no LLM call was made for it

    # A job asking for evolved kernels: its job side hands it the registry, and its trainer runs
    # the published kernel where the bucket matches, PyTorch elsewhere, and says which. Whether the
    # published kernel runs turns on its own evidence: a three-evaluation search at this small
    # shape can end slower than eager on some CPUs (0.80x on one), and such a kernel is not run.
    services.start_service("worker", "worker-0")
    spec = JobSpec(
        job_id="k" * 32 + "-validation-baseline-s0",
        campaign_id="k" * 32,
        phase="validation",
        workload="ranker",
        dataset="synthetic:rows=2000",
        config={"epochs": 1, "layer_norm": True, "use_evolved_kernels": True},
        timeout_s=300,
        memory_mb=4096,
    )
    await client.publish(JobSubmitted(campaign_id=spec.campaign_id, correlation_id="k", payload=spec))

    async def finished() -> bool:
        run = await store.ledger.get(spec.job_id)
        return run is not None and run.final is not None

    await eventually(finished, "the job's result in the ledger", 240)
    run = await store.ledger.get(spec.job_id)
    assert run is not None and run.final is not None
    result = parse_event(run.final)
    assert isinstance(result, JobCompleted), run.final
    uses = {(use.operator, use.bucket): use for use in result.payload.output.kernels}
    # The registry's entry now: the written search's kernel holds the bucket if it timed faster.
    (entry,) = await KernelRegistry(store.db).entries(operator="layer_norm", device=cpu)
    searched = uses[("layer_norm", "d64-r256-relu")]
    assert searched.calls >= 2  # validation and test
    if entry.speedup_vs_eager > 1.0:
        assert searched.kernel == entry.key
    else:  # the registry was handed over all the same: the reason quotes the entry's evidence
        assert searched.kernel is None
        assert f"ran at {entry.speedup_vs_eager:.2f}x eager" in searched.reason
    assert uses[("layer_norm", "d64-r2048-relu")].kernel is None  # the training rows' bucket: not searched
    assert "no registry kernel for d64-r2048-relu" in uses[("layer_norm", "d64-r2048-relu")].reason
