"""Job backends, by name: where a campaign's training jobs run (contract in :mod:`.base`).

``local`` runs them on this deployment's job workers; ``ray`` and ``kubernetes`` hand each to a
cluster through a launcher service (:mod:`rea_executor.launcher`). A campaign picks one with
``backend:``; ``REA_JOB_BACKEND`` is the default.
"""

from __future__ import annotations

from collections.abc import Callable

from rea.endpoints import Endpoints
from rea.events import JobBackendName
from rea.settings import Settings
from rea_executor.backends.base import JobBackend

BackendFactory = Callable[[Settings, Endpoints], JobBackend]


def _local(settings: Settings, endpoints: Endpoints) -> JobBackend:
    from rea_executor.backends.local import LocalBackend

    return LocalBackend()


def _ray(settings: Settings, endpoints: Endpoints) -> JobBackend:
    from rea_executor.backends.ray import RayBackend

    return RayBackend(settings, endpoints)


def _kubernetes(settings: Settings, endpoints: Endpoints) -> JobBackend:
    from rea_executor.backends.kubernetes import KubernetesBackend

    return KubernetesBackend(settings)


BACKENDS: dict[JobBackendName, BackendFactory] = {"local": _local, "ray": _ray, "kubernetes": _kubernetes}
"""Each backend's factory; imported on use, so a deployment needs only its own backend's client."""


def make_backend(name: JobBackendName, settings: Settings, endpoints: Endpoints) -> JobBackend:
    return BACKENDS[name](settings, endpoints)
