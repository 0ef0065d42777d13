"""Sol: find and apply the fastest near-lossless acceleration stack for a video diffusion pipeline.

The public API is what an inference server needs:

>>> import sol
>>> handle = sol.apply_plan(pipe, "plan.json")  # doctest: +SKIP
"""

from sol.errors import ConflictError, SolError
from sol.plan import Plan, load_plan
from sol.runtime import PlanHandle, apply_plan

__version__ = "0.1.0"

__all__ = ["ConflictError", "Plan", "PlanHandle", "SolError", "apply_plan", "load_plan", "__version__"]
