"""Data sets for the ranker, named by spec strings.

This package's ``__init__`` only re-exports the torch- and numpy-free spec parser, so the
planner can validate specs cheaply; loaders live in :mod:`rea_workload.datasets.loader`.
"""

from rea_workload.datasets.spec import DatasetSpec, parse_spec, spec_error

__all__ = ["DatasetSpec", "parse_spec", "spec_error"]
