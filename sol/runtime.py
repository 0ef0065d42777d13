"""Apply a plan to a pipeline: all an inference server imports.

>>> import sol
>>> handle = sol.apply_plan(pipe, "plan.json")  # doctest: +SKIP
>>> video = pipe(prompt="a red circle moving right", ...)  # doctest: +SKIP
>>> handle.revert()  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from sol.errors import SolError
from sol.hardware import detect
from sol.models.base import adapter_for, fingerprint
from sol.plan import Plan, library_versions, load_plan
from sol.skills.base import Applied, apply_all


class PlanWarning(UserWarning):
    """The plan was measured elsewhere (other hardware or library versions): speed may differ."""


@dataclass
class PlanHandle:
    """The applied plan; ``revert()`` undoes every technique in reverse order."""

    plan: Plan
    applied: Applied

    def revert(self) -> None:
        self.applied.revert()


def apply_plan(pipe, plan: Plan | str | Path, *, force: bool = False) -> PlanHandle:
    """Apply the techniques of ``plan`` (a :class:`Plan` or a path) to ``pipe``, in order.

    Refuses a plan made for another model (fingerprint mismatch) unless ``force=True``;
    warns when the hardware or library versions differ from where it was measured.
    """
    if not isinstance(plan, Plan):
        plan = load_plan(plan)
    adapter = adapter_for(pipe)
    fp = fingerprint(pipe)
    want = plan.model
    if (fp.cls, fp.config_hash, fp.weights_hash) != (want.cls, want.config_hash, want.weights_hash):
        what = (
            "class" if fp.cls != want.cls else "config" if fp.config_hash != want.config_hash else "weights"
        )
        # Name the expert that differs when both sides have several.
        where = next(
            (
                f" ({e.name})"
                for e, got in zip(want.experts, fp.experts, strict=False)
                if (e.cls, e.config_hash, e.weights_hash)
                != (got["cls"], got["config_hash"], got["weights_hash"])
            ),
            "",
        )
        msg = (
            f"this plan was made for model {want.name!r} ({want.cls}), but the pipeline's {what}{where} differ"
            f" (fingerprint {fp.config_hash}/{fp.weights_hash} vs {want.config_hash}/{want.weights_hash})"
        )
        if not force:
            raise SolError(
                msg + "; optimize this model with `sol optimize`, or pass force=True to apply anyway"
            )
        warnings.warn(msg + "; applying anyway (force=True)", PlanWarning, stacklevel=2)
    here = detect()
    if here.name != plan.hardware.name:
        warnings.warn(
            f"plan measured on {plan.hardware.name}, applying on {here.name}: the speedup may differ",
            PlanWarning,
            stacklevel=2,
        )
    now = library_versions()
    changed = {k: (v, now.get(k)) for k, v in plan.versions.items() if k != "sol" and now.get(k) != v}
    if changed:
        desc = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
        warnings.warn(f"library versions differ from the plan's ({desc})", PlanWarning, stacklevel=2)
    return PlanHandle(plan, apply_all(pipe, plan.techniques, adapter))
