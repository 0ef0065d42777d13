"""Which techniques applied to the run's model and which were refused, and why.

Read from the run's data (the model's capabilities and the family's reasons for the ones it
lacks, recorded by the profile as ``model_info``; the points each skill measured) and from the
skill registry (what each technique needs). Every registered kind gets one line, so a report on
SANA-Video says why sparse attention is absent instead of leaving it out silently.
"""

from __future__ import annotations

from typing import Any


def technique_support(run: dict[str, Any]) -> list[dict[str, str]]:
    """``[{"kind", "status", "why"}]`` for every registered technique kind, in kind order.

    ``status``: ``measured`` (the search evaluated it on this model), ``refused`` (the model lacks
    a capability it needs: ``why`` holds the family's reasons), ``failed`` (every evaluation
    failed: the first reason), ``no gain here`` (a probe measured that it cannot beat the
    baseline on this hardware, so no video was made: ``why`` holds the measurement), or
    ``not searched`` (its skill was not selected, or cannot run on this hardware).

    >>> technique_support(run)[0]  # doctest: +SKIP
    {'kind': 'cache.block_residual', 'status': 'refused', 'why': 'needs block_residuals: ...'}
    """
    from sol.skills.base import registered_kinds, skill_for

    info = (run.get("profile") or {}).get("model_info") or {}
    if not info:
        return []
    caps = set(info.get("capabilities") or [])
    missing = info.get("missing") or {}
    points: dict[str, list[dict]] = {}
    for pts in (run.get("fronts") or {}).values():
        for p in pts or []:
            for t in p.get("techniques") or []:
                points.setdefault(str(t.get("kind")), []).append(p)
    # Techniques a probe showed cannot beat the baseline on this hardware (no video was made).
    no_gain = {
        kind: c
        for ev in (run.get("search") or {}).values()
        for kind, c in ((ev or {}).get("ceilings") or {}).items()
        if isinstance(c, dict) and c.get("skipped")
    }
    rows = []
    for kind, cls in sorted(registered_kinds().items()):
        skill = skill_for(cls.model_construct(kind=kind))
        lacking = sorted(str(c) for c in skill.requires if str(c) not in caps)
        mine = points.get(kind, [])
        if lacking:
            why = "; ".join(f"needs {c}: {missing.get(c, 'not offered by this family')}" for c in lacking)
            rows.append({"kind": kind, "status": "refused", "why": why})
        elif kind in no_gain and not mine:
            rows.append({"kind": kind, "status": "no gain here", "why": str(no_gain[kind].get("why") or "")})
        elif mine and all(p.get("failed") for p in mine):
            rows.append({"kind": kind, "status": "failed", "why": str(mine[0].get("reason") or "")})
        elif mine:
            ok = sum(1 for p in mine if not p.get("failed"))
            rows.append({"kind": kind, "status": "measured", "why": f"{ok} of {len(mine)} candidates ran"})
        else:
            rows.append(
                {
                    "kind": kind,
                    "status": "not searched",
                    "why": "skill not selected, or unavailable on this hardware",
                }
            )
    return rows
