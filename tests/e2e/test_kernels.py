"""KernelEvolve as a service: `rea kernels search` publishes a request on the broker, the kernel
service searches on this CPU (every candidate compiled and judged in its sandbox), keeps the
winner in the registry and says so with events the logger records; a request it cannot run is
refused with the reason."""

from __future__ import annotations

import asyncio

import pytest

from rea.client import Client
from rea.store import Store
from rea_kernel.registry import KernelRegistry
from rea_kernel.searches import COLLECTION, KernelSearch
from rea_kernel.targets import get_target
from rea_tools.stack import EmbeddedStack

from .helpers import eventually, run_rea

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        get_target("cpu").unavailable() is not None, reason=str(get_target("cpu").unavailable())
    ),
]
QUICK = {"REA_KERNEL_REPEATS": "3", "REA_KERNEL_FLUSH_MB": "8", "REA_KERNEL_THREADS": "1"}


async def test_a_kernel_search_runs_as_a_service_and_publishes_to_the_registry(
    services: EmbeddedStack, client: Client, store: Store, env: dict[str, str]
) -> None:
    services.start_service("logger")
    services.start_service("kernel", env=QUICK)

    done = await asyncio.to_thread(
        run_rea, ["kernels", "search", "layer_norm", "--budget", "3", "--seed", "1"], env, 300
    )
    assert done.returncode == 0, done.stderr
    search_id = done.stdout.split()[0]
    doc = await store.db[COLLECTION].find_one({"_id": search_id})
    assert doc is not None
    search = KernelSearch.model_validate(doc["state"])
    assert (search.status, search.evaluations) == ("published", 3)
    cpu = get_target("cpu").device_name()
    kept = await KernelRegistry(store.db).entries(operator="layer_norm", device=cpu)
    assert kept and {entry.key for entry in kept} == set(search.published)
    assert all(e.provenance.search_id == search_id and e.speedup_vs_compiled is not None for e in kept)
    assert "eager" in done.stderr  # what it published, as a person reads it

    async def logged() -> bool:
        types = [d["type"] async for d in store.events.find({"search_id": search_id})]
        return types.count("kernel.candidate.evaluated") == 3 and "kernel.published" in types

    await eventually(logged, "the search's events in the events collection", 30)

    refused = await asyncio.to_thread(run_rea, ["kernels", "search", "softmax"], env, 60)
    assert refused.returncode == 1
    assert "unknown operator 'softmax'" in refused.stderr
    assert all(proc.poll() is None for proc in services.children.values())  # the service goes on
