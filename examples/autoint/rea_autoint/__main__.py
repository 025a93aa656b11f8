"""Job entrypoint: ``python -m rea_autoint --job JOB.json --output RESULT.json``.

REA's job-side helper (:mod:`rea.jobmain`) does the contract: it checks the config and data set
before torch is imported, pins one thread per job, catches OOMs, and writes the result with the
job's own cost. All this workload brings is its schema, its data-set check and its trainer.
"""

from __future__ import annotations

import sys

from rea.jobmain import Train, job_main
from rea_autoint.schema import SCHEMA
from rea_workload.datasets.spec import spec_error


def _trainer() -> Train:
    # Imported here so that a rejected job never pays for importing torch.
    from rea_autoint.train import train

    return train


def main(argv: list[str] | None = None) -> int:
    return job_main("python -m rea_autoint", SCHEMA, spec_error, _trainer, argv)


if __name__ == "__main__":
    sys.exit(main())
