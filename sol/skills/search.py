"""Shared search helpers for every family: a bisection of one knob toward the quality floor.

A knob-driven method screens a few settings of one knob (threshold, interval, skip range) for
each *variant* (every other knob fixed: a warm-up, a reuse rule, a skip cap). Its ``refine``
hands the results so far here, round after round; each round proposes at most one new value per
promising variant, so the search bisects every variant at once and stops where it converged:

- a bracket (``lo`` passes, ``hi`` above it fails): the midpoint, until ``hi - lo`` is one
  step (integers) or ``tolerance`` of ``lo`` (thresholds);
- every setting passes: ``1.5x`` the largest (go faster);
- none passes: half the smallest (find the floor from below) — unless that one was not faster
  than ``MIN_SPEEDUP`` (gentler settings would only be slower).

"Passes" is the search's quality screen when a result carries one (``result.screen["passes"]``:
the predicted worst video on unseen prompts clears the floor, see
``sol.integrator.screening``), else its worst video against ``min_psnr``. "Faster" is the
measured speedup, else the cost model's prediction. Variants are ranked by the fastest setting
that passes (or, where none does, by the best PSNR), and the ``variants`` best are refined.
"""

from __future__ import annotations

import math

from pydantic import ValidationError

from sol.skills.base import config_from_dict

MIN_SPEEDUP = 1.1
TOLERANCE = 0.1  # a threshold bracket narrower than this share of its lower end has converged


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def _variant(cfg, field: str) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in cfg.model_dump().items() if k != field))


def passes(result, min_psnr: float) -> bool:
    """The search's quality verdict on ``result`` (its screen when it has one, else its worst video)."""
    screen = getattr(result, "screen", None)
    if isinstance(screen, dict) and "passes" in screen:
        return bool(screen["passes"])
    psnr = result.psnr if not math.isnan(result.psnr) else -math.inf
    return psnr >= min_psnr


def speed(result) -> float:
    """Measured speedup, else the predicted one, else 0."""
    s = getattr(result, "speedup", None)
    if s is None:
        s = getattr(result, "predicted_speedup", None)
    return float(s or 0.0)


def bisect_threshold(
    results,
    config_type,
    min_psnr: float,
    *,
    field: str = "threshold",
    integer: bool = False,
    variants: int = 2,
    tolerance: float = TOLERANCE,
):
    """Next settings of ``field`` for the ``variants`` most promising variants (module docstring).

    >>> bisect_threshold(results, BlockResidualCacheConfig, 30.0)  # doctest: +SKIP
    [BlockResidualCacheConfig(threshold=0.3, ...)]
    """
    kind = config_type.model_fields["kind"].default
    groups: dict[tuple, list] = {}
    for r in results:
        if not r.ok or not r.techniques or len(r.techniques) != 1 or r.techniques[0].get("kind") != kind:
            continue
        cfg = config_from_dict(r.techniques[0])
        groups.setdefault(_variant(cfg, field), []).append((cfg, passes(r, min_psnr), speed(r), r.psnr))
    if not groups:
        return []

    def score(pts):
        ok = [s for _c, p, s, _q in pts if p]
        return (1, max(ok)) if ok else (0, max((q for *_x, q in pts if not math.isnan(q)), default=-math.inf))

    out = []
    for pts in sorted(groups.values(), key=score, reverse=True):
        if len(out) >= variants:
            break
        nxt = _next(pts, config_type, field, integer, tolerance)
        if nxt is not None:
            out.append(nxt)
    return out


def _next(pts, config_type, field: str, integer: bool, tolerance: float):
    pts = sorted(pts, key=lambda p: getattr(p[0], field))
    seen = {getattr(p[0], field) for p in pts}
    ok = [p for p in pts if p[1]]
    if ok:
        lo = max(ok, key=lambda p: getattr(p[0], field))
        base, a = lo[0], getattr(lo[0], field)
        above = [getattr(p[0], field) for p in pts if not p[1] and getattr(p[0], field) > a]
        if above:
            b = min(above)
            if (b - a <= 1) if integer else (b - a <= tolerance * max(a, 1e-9)):
                return None  # converged: the floor lies between two tried settings
            v = (a + b) / 2
        else:
            v = a * 1.5
            if integer:
                v = max(a + 1, v)
    else:
        base, v0, s0 = pts[0][0], getattr(pts[0][0], field), pts[0][2]
        if s0 < MIN_SPEEDUP:
            return None  # even the gentlest setting misses the floor without paying: lower only slows it
        v = v0 / 2
        if integer:
            v = min(v0 - 1, v)
    v = max(1, round(v)) if integer else _round(v)
    if v in seen or v <= 0:
        return None
    try:
        return config_type.model_validate({**base.model_dump(), field: v})
    except ValidationError:
        return None  # outside the knob's range (e.g. PAB's skip range below 2): nothing to try there
