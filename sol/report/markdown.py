"""``summary.md``: the candidates and their gate verdicts, for terminals and pull requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sol.report import format as fmt
from sol.report.techniques import technique_support


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(run: dict[str, Any], html_path: Path | None = None) -> str:
    """A short Markdown summary of ``run`` (the same dict ``build_report`` takes).

    >>> print(render_markdown({"model": "m", "candidates": []}).splitlines()[0])
    # Sol report: m
    """
    hw = run.get("hardware") or {}
    wl = run.get("workload") or {}
    lines = [
        f"# Sol report: {run.get('model', '?')}",
        "",
        f"- hardware: {hw.get('name') or hw.get('device') or hw.get('kind') or 'unknown'}",
        f"- workload: {wl.get('name') or '-'} ({len(run.get('prompts') or wl.get('prompts') or [])} prompts)",
        f"- quality budget: {run.get('quality_budget', '?')}",
    ]
    chosen = next((c for c in run.get("candidates") or [] if c.get("id") == run.get("chosen")), None)
    if chosen is not None:
        fid = chosen.get("fidelity") or {}
        lines.append(
            f"- chosen: `{chosen.get('id')}` {fmt.techniques(chosen.get('techniques'))} — "
            f"{fmt.speedup(chosen.get('speedup'))}, PSNR {fmt.db(fid.get('psnr'))} "
            f"(worst video {fmt.db(fid.get('psnr_min'))})"
        )
        val = chosen.get("validation") or {}
        if val.get("checked"):
            lines.append(
                f"- held-out split: worst video {fmt.db(val.get('psnr_min'))} (search split "
                f"{fmt.db(fid.get('psnr_min'))}, gap {fmt.gap(val.get('gap_db'))})"
            )
    else:
        lines.append("- chosen: none")
        if run.get("status"):
            lines.append(f"- outcome: {run['status']}")
    if html_path is not None:
        lines.append(f"- full report: {html_path.name} (self-contained HTML)")
    lines += ["", "## Candidates", ""]
    cands = run.get("candidates") or []
    if cands:
        lines += [
            "| | id | stack | speedup | interval | predicted | PSNR | worst video | held-out worst | SSIM | gate |"
            " decision |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for c in cands:
            fid = c.get("fidelity") or {}
            verdict = fmt.verdict_of(c)
            mark = "★" if c.get("id") == run.get("chosen") else ""
            gate = fmt.verdict_text(verdict)
            gate = ("✅ " if verdict and verdict.get("passed") else "❌ " if verdict else "") + gate
            lines.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        mark,
                        f"`{c.get('id', '?')}`",
                        fmt.techniques(c.get("techniques")),
                        fmt.speedup(c.get("speedup")),
                        fmt.interval((c.get("timing") or {}).get("interval")),
                        fmt.speedup(c.get("predicted_speedup")),
                        fmt.db(fid.get("psnr")),
                        fmt.db(fid.get("psnr_min")),
                        fmt.db((c.get("validation") or {}).get("psnr_min")),
                        fmt.ratio(fid.get("ssim")),
                        gate,
                        fmt.decision(c),
                    )
                )
                + " |"
            )
    else:
        why = run.get("no_candidates")
        lines.append(f"No candidates: {why}." if why else "No candidates were evaluated.")
    lines += _vbench_lines(run)
    fronts = run.get("fronts") or {}
    if fronts:
        lines += ["", "## Skills", "", "| skill | points | on front | failed | best speedup on front |",
                  "|---|---:|---:|---:|---:|"]  # fmt: skip
        for skill, points in fronts.items():
            points = points or []
            on = [p for p in points if p.get("on_front") and not p.get("failed")]
            best = max((fmt.num(p.get("speedup")) or 0.0 for p in on), default=None)
            lines.append(
                f"| {_cell(skill)} | {len(points)} | {len(on)} | {sum(1 for p in points if p.get('failed'))} | "
                f"{fmt.speedup(best)} |"
            )
    support = technique_support(run)
    if support:  # every technique: measured here, or refused with the model family's reason
        info = (run.get("profile") or {}).get("model_info") or {}
        lines += ["", f"## Techniques on this model ({_cell(str(info.get('family', '?')))})", "",
                  "| technique | status | why |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {_cell(r['kind'])} | {r['status']} | {_cell(r['why'])} |" for r in support]
    lines += _search_lines(run)
    stages = (run.get("profile") or {}).get("stages") or {}
    if stages:
        total = sum(fmt.num(v) or 0.0 for v in stages.values()) or 1.0
        lines += ["", "## Baseline profile", "", "| stage | ms | share |", "|---|---:|---:|"]
        for name, ms in stages.items():
            v = fmt.num(ms) or 0.0
            lines.append(f"| {_cell(name)} | {v:,.1f} | {100 * v / total:.1f}% |")
    return "\n".join(lines) + "\n"


def _vbench_lines(run: dict[str, Any]) -> list[str]:
    """The VBench dimensions the gate measured, and each one it did not with why."""
    vb = run.get("vbench") or {}
    measured, missing = vb.get("measured") or [], vb.get("not_measured") or {}
    if not measured and not missing:
        return []
    lines = ["", "## VBench", "", f"Measured by the gate: {', '.join(measured) or 'none'}."]
    if missing:
        lines += ["", "| not measured | why |", "|---|---|"]
        lines += [f"| {_cell(d)} | {_cell(why)} |" for d, why in missing.items()]
    return lines


def _search_lines(run: dict[str, Any]) -> list[str]:
    """Screen accuracy per skill, and predicted against measured for every timed candidate."""
    search = run.get("search") or {}
    if not search:
        return []
    lines = ["", "## Search evidence", "", "| skill | screened | full evaluations | passed | share |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    timed = []
    for skill, ev in search.items():
        sc = ev.get("screen") or {}
        share = fmt.num(sc.get("pass_share"))
        lines.append(
            f"| {_cell(skill)} | {sc.get('screened', '—')} | {sc.get('full_evaluations', '—')} | "
            f"{sc.get('full_passed', '—')} | {'—' if share is None else f'{100 * share:.0f}%'} |"
        )
        timed += [(skill, t) for t in ev.get("timed") or []]
    for c in run.get("candidates") or []:
        if (c.get("timing") or {}).get("interval"):
            timed.append(("integrator", {"label": c.get("label"), "predicted_speedup": c.get("predicted_speedup"),
                                         "speedup": c.get("speedup"), "interval": c["timing"]["interval"],
                                         "clock": c["timing"].get("clock"), "pairs": c["timing"].get("pairs")}))  # fmt: skip
    if timed:
        lines += ["", "| timed by | candidate | predicted | measured | interval | clock, pairs |",
                  "|---|---|---:|---:|---:|---|"]  # fmt: skip
        for who, t in timed:
            lines.append(
                f"| {_cell(who)} | {_cell(t.get('label', ''))} | {fmt.speedup(t.get('predicted_speedup'))} | "
                f"{fmt.speedup(t.get('speedup'))} | {fmt.interval(t.get('interval'))} | "
                f"{_cell(str(t.get('clock') or '—'))}, {t.get('pairs') or '—'} |"
            )
    return lines
