"""Shared search helpers for every family: a bisection of one knob toward the PSNR floor.

A threshold-driven method screens a few settings of one knob (chosen from calibration where it
has one). Its ``refine`` then hands the screening results here: the best variant (all
knobs but this one) gets two new values that split the bracket where PSNR
crosses the floor into thirds:

- a bracket exists (``lo`` meets the floor, ``hi`` does not): ``lo + (hi-lo)/3``, ``lo + 2(hi-lo)/3``;
- every screened threshold meets the floor: ``1.5x`` and ``2x`` the largest (go faster);
- none does: ``1/2`` and ``1/4`` of the smallest (find the floor from below).

A method that misses the floor even at its gentlest screened setting, and is not faster than
``MIN_SPEEDUP`` there, is not refined (gentler settings would only be slower).
"""

from __future__ import annotations

import math

from pydantic import ValidationError

from sol.skills.base import config_from_dict

MIN_SPEEDUP = 1.1


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def _variant(cfg, field: str) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in cfg.model_dump().items() if k != field))


def bisect_threshold(
    results, config_type, min_psnr: float, *, field: str = "threshold", integer: bool = False
):
    """Two new configs of ``config_type`` around the PSNR floor (see the module docstring)."""
    kind = config_type.model_fields["kind"].default
    pts = []
    for r in results:
        if not r.ok or not r.techniques or r.techniques[0].get("kind") != kind or len(r.techniques) != 1:
            continue
        cfg = config_from_dict(r.techniques[0])
        psnr = r.psnr if not math.isnan(r.psnr) else -math.inf
        pts.append((cfg, psnr, r.speedup or 0.0))
    if not pts:
        return []
    # The variant whose fastest candidate at the floor is fastest (or, if none meets it, the most faithful).
    variants: dict[tuple, list] = {}
    for p in pts:
        variants.setdefault(_variant(p[0], field), []).append(p)

    def score(ps):
        ok = [s for _c, q, s in ps if q >= min_psnr]
        return (1, max(ok)) if ok else (0, max(q for _c, q, _s in ps))

    best = max(variants.values(), key=score)
    best.sort(key=lambda p: getattr(p[0], field))
    ok = [p for p in best if p[1] >= min_psnr]
    bad = [p for p in best if p[1] < min_psnr]
    if ok:
        lo = max(ok, key=lambda p: getattr(p[0], field))
        base, a = lo[0], getattr(lo[0], field)
        above = [getattr(p[0], field) for p in bad if getattr(p[0], field) > a]
        new = [a + (min(above) - a) / 3, a + 2 * (min(above) - a) / 3] if above else [a * 1.5, a * 2.0]
    else:
        base, v = best[0][0], getattr(best[0][0], field)
        if best[0][2] < MIN_SPEEDUP:
            return []  # even the gentlest setting misses the floor without paying: lower only slows it
        new = [v / 2, v / 4]
    seen = {getattr(p[0], field) for p in best}
    out = []
    for v in new:
        v = max(1, round(v)) if integer else _round(v)
        if v in seen or v <= 0:
            continue
        seen.add(v)
        try:
            out.append(config_type.model_validate({**base.model_dump(), field: v}))
        except ValidationError:
            continue  # outside the knob's range (e.g. PAB's skip range below 2): nothing to try there
    return out
