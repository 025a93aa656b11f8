"""An example REA workload: AutoInt (Song et al., 2019) for CTR prediction.

Only the torch-free workload object and schema are exported here; training lives in
:mod:`rea_autoint.train` and runs in a job subprocess (``python -m rea_autoint``).
"""

from rea_autoint.schema import SCHEMA, AutoIntConfig
from rea_autoint.techniques import TECHNIQUES
from rea_autoint.workload import WORKLOAD, AutoIntWorkload

__all__ = ["SCHEMA", "TECHNIQUES", "WORKLOAD", "AutoIntConfig", "AutoIntWorkload"]
