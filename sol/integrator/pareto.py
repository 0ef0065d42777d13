"""Pareto fronts over (speedup, fidelity): keep what no other candidate beats on both."""

from __future__ import annotations

import math


def _key(r) -> tuple[float, float]:
    psnr = r.psnr
    return (r.speedup or 0.0, psnr if not math.isnan(psnr) else -math.inf)


def dominates(a, b) -> bool:
    """a is at least as fast and as faithful as b, and strictly better on one."""
    (sa, qa), (sb, qb) = _key(a), _key(b)
    return sa >= sb and qa >= qb and (sa > sb or qa > qb)


def pareto_front(results: list) -> list:
    """Successful results that no other dominates, fastest first.

    >>> pareto_front([])
    []
    """
    ok = [r for r in results if r.ok and r.speedup is not None]
    front = [r for r in ok if not any(dominates(o, r) for o in ok if o is not r)]
    return sorted(front, key=lambda r: -(r.speedup or 0.0))
