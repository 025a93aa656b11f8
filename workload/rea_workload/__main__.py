"""Job entrypoint: ``python -m rea_workload --job JOB.json --output RESULT.json``.

Reads a :class:`~rea.workloads.JobInput`, trains, and writes a :class:`~rea.workloads.JobOutput`
with the job's own cost; exit codes as :mod:`rea.jobmain` says.
"""

from __future__ import annotations

import sys

from rea.jobmain import Train, job_main
from rea_workload.datasets.spec import spec_error
from rea_workload.schema import SCHEMA


def _trainer() -> Train:
    # Imported here so that a rejected job never pays for importing torch.
    from rea_workload.train import train

    return train


def main(argv: list[str] | None = None) -> int:
    return job_main("python -m rea_workload", SCHEMA, spec_error, _trainer, argv)


if __name__ == "__main__":
    sys.exit(main())
