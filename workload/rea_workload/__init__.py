"""REA's reference workload: a CTR ranking model with tunable embeddings, crosses and MLP.

Only the torch-free workload object is exported here; training lives in
:mod:`rea_workload.train` and runs in a job subprocess (``python -m rea_workload``).
"""

from rea_workload.workload import WORKLOAD, RankerWorkload

__all__ = ["WORKLOAD", "RankerWorkload"]
