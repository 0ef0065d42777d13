"""Number and technique formatting shared by the HTML report and the Markdown summary."""

from __future__ import annotations

import math
from typing import Any


def num(x: Any) -> float | None:
    """A float from a number or a JSON-safe string ("inf"); None when absent or unreadable."""
    if x is None or isinstance(x, bool):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def speedup(x: Any) -> str:
    v = num(x)
    return "—" if v is None or math.isnan(v) else f"{v:.2f}×"


def interval(iv: Any) -> str:
    """A speedup interval ``[lo, hi]`` as ``1.92–2.10×`` (— when absent)."""
    if not isinstance(iv, list | tuple) or len(iv) != 2:
        return "—"
    lo, hi = num(iv[0]), num(iv[1])
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "—"
    return f"{lo:.2f}–{hi:.2f}×"


def gap(x: Any) -> str:
    """A dB gap with its sign (search minus held-out)."""
    v = num(x)
    return "—" if v is None or math.isnan(v) else f"{v:+.1f} dB"


def decision(c: dict[str, Any]) -> str:
    """``approvable`` or why not (the gate, the speedup interval, the held-out check)."""
    if "passed" not in c or "why" not in c:
        return "—"
    return "approvable" if c.get("passed") else str(c.get("why") or "not approvable")


def db(x: Any) -> str:
    v = num(x)
    if v is None or math.isnan(v):
        return "—"
    return "∞ (identical)" if math.isinf(v) and v > 0 else f"{v:.1f} dB"


def ratio(x: Any, digits: int = 4) -> str:
    v = num(x)
    return "—" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def value(x: Any) -> str:
    """A check's value or threshold: compact, ∞ for inf."""
    v = num(x)
    if v is None:
        return "—"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if math.isnan(v):
        return "NaN"
    return f"{v:.4g}"


def technique(t: dict[str, Any]) -> str:
    """``{"kind": "first_block_cache", "version": 1, "threshold": 0.1}`` → ``first_block_cache(threshold=0.1)``."""
    if not isinstance(t, dict):
        return str(t)
    kind = t.get("kind", "?")
    custom = _own_label(t)
    if custom:
        return custom
    params = ", ".join(f"{k}={_short(v)}" for k, v in t.items() if k not in ("kind", "version"))
    return f"{kind}({params})" if params else str(kind)


def _own_label(t: dict[str, Any]) -> str | None:
    """The config's own ``label()`` when its kind is registered: it shortens what is long (rules,
    calibrated ratios) to a count and a hash, so two candidates that differ in one entry stay apart."""
    from sol.skills.base import registered_kinds

    cls = registered_kinds().get(t.get("kind"))
    if cls is None:
        return None
    try:
        return cls.model_validate(t).label()
    except ValueError:
        return None


def techniques(ts: list[dict[str, Any]] | None) -> str:
    return " + ".join(technique(t) for t in ts) if ts else "baseline (no technique)"


def _short(v: Any) -> str:
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 40 else text[:39] + "…"


def verdict_of(candidate: dict[str, Any]) -> dict[str, Any] | None:
    """The candidate's verdict as a dict (a pydantic ``Verdict`` is dumped), or None."""
    v = candidate.get("verdict")
    if v is None:
        return None
    if hasattr(v, "model_dump"):
        return v.model_dump()
    return v


def failed_checks(verdict: dict[str, Any] | None) -> list[str]:
    if not verdict:
        return []
    return [c.get("name", "?") for c in verdict.get("checks", []) if c.get("passed") is False]


def verdict_text(verdict: dict[str, Any] | None) -> str:
    if verdict is None:
        return "not gated"
    if verdict.get("passed"):
        return "passed"
    failed = failed_checks(verdict)
    return "failed: " + ", ".join(failed) if failed else "failed"
