"""Plots for the report, as inline SVG strings (matplotlib, text as paths: no fonts, no files).

Uses ``matplotlib.figure.Figure`` directly, never pyplot, so no global backend is set or needed.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

from matplotlib.figure import Figure

_ACCENT = "#2563eb"
_MUTED = "#9ca3af"
_FAIL = "#dc2626"


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    # Drop the XML prolog and DOCTYPE so the <svg> element can sit inside HTML.
    return text[text.index("<svg") :]


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def profile_svg(profile: dict[str, Any]) -> str | None:
    """Horizontal bars: time by pipeline stage and by op class (ms). None when nothing was recorded."""
    panels = [
        (title, {k: v for k, v in (profile.get(key) or {}).items() if _num(v) is not None})
        for key, title in (("stages", "by stage"), ("op_classes", "by op class"))
    ]
    panels = [(t, d) for t, d in panels if d]
    if not panels:
        return None
    fig = Figure(figsize=(7.5, 0.6 + 0.42 * sum(len(d) for _, d in panels) + 0.5 * len(panels)))
    heights = [max(len(d), 1) for _, d in panels]
    axes = fig.subplots(len(panels), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    for ax, (title, data) in zip(axes, panels, strict=True):
        names = list(data)[::-1]
        values = [float(data[n]) for n in names]
        total = sum(values) or 1.0
        bars = ax.barh(names, values, color=_ACCENT)
        for bar, v in zip(bars, values, strict=True):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {v:,.0f} ms ({100 * v / total:.0f}%)",
                    va="center", fontsize=8)  # fmt: skip
        ax.set_title(f"Baseline time {title}", loc="left", fontsize=10)
        ax.set_xlim(0, max(values) * 1.35 if max(values) > 0 else 1)
        ax.tick_params(labelsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.tight_layout()
    return _svg(fig)


def front_svg(skill: str, points: list[dict[str, Any]]) -> str | None:
    """Speedup (x) against PSNR (y) for one skill's candidates; the Pareto front joined by a line.

    Infinite PSNR (bit-identical output) is drawn on a dotted line at the top, its tick labelled ∞.
    Failed candidates are red crosses at the bottom (they have no fidelity). None if no points.
    """
    if not points:
        return None
    finite = [_num(p.get("psnr")) for p in points if not p.get("failed")]
    finite = [v for v in finite if v is not None and math.isfinite(v)]
    top = (max(finite) + 6) if finite else 60.0
    bottom = (min(finite) - 4) if finite else 20.0
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.subplots()
    front = []
    for p in points:
        sx, ps = _num(p.get("speedup")), _num(p.get("psnr"))
        label = str(p.get("label", ""))
        if p.get("failed") or sx is None:
            ax.scatter([sx if sx is not None else 1.0], [bottom], marker="x", color=_FAIL, zorder=3)
            ax.annotate(_short(label) + " (failed)", (sx if sx is not None else 1.0, bottom),
                        textcoords="offset points", xytext=(4, 4), fontsize=7, color=_FAIL)  # fmt: skip
            continue
        y = top if ps is None or math.isinf(ps) else ps
        on = bool(p.get("on_front"))
        ax.scatter([sx], [y], color=_ACCENT if on else _MUTED, s=36 if on else 20, zorder=3)
        ax.annotate(_short(label), (sx, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if on:
            front.append((sx, y))
    if front:
        front.sort()
        ax.plot([x for x, _ in front], [y for _, y in front], color=_ACCENT, lw=1.2, zorder=2)
    ax.axhline(top, color=_MUTED, lw=0.6, ls=":")
    ax.set_ylim(bottom - 2, top + 2)
    # Ticks below the "identical" line are dB; the line itself is labelled ∞.
    ticks = [t for t in ax.get_yticks() if bottom - 2 <= t < top - 1.5]
    ax.set_yticks([*ticks, top], [f"{t:g}" for t in ticks] + ["∞"])
    ax.set_xlabel("speedup (×, measured)", fontsize=9)
    ax.set_ylabel("PSNR vs baseline (dB)", fontsize=9)
    ax.set_title(f"{skill}: Pareto front", loc="left", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return _svg(fig)


def _short(label: str, n: int = 28) -> str:
    label = re.sub(r"\s+", " ", label)
    return label if len(label) <= n else label[: n - 1] + "…"
