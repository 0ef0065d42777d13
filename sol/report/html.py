"""The benchmark report: one self-contained ``report.html`` and a ``summary.md``.

``report.html`` opens offline: CSS inline, plots inline SVG, videos base64 mp4 in ``<video>``; no
script, font or stylesheet is fetched from anywhere.

>>> from pathlib import Path
>>> html_path, md_path = build_report(run, Path("runs/x"))  # doctest: +SKIP

The ``run`` dict (written by the orchestrator) holds: ``model``, ``hardware``, ``workload``,
``quality_budget``, ``profile`` ({"stages": {name: ms}, "op_classes": {name: ms}}), ``fronts``
({skill: [point]}), ``candidates`` ([{id, label, techniques, speedup, predicted_speedup, fidelity,
verdict, videos}]), ``baseline_videos``, ``prompts``, ``chosen`` (a candidate id or None) and
``plan``. Missing parts are shown as "not recorded", never a crash.
"""

from __future__ import annotations

import datetime as _dt
import json
from html import escape
from pathlib import Path
from typing import Any

from sol.quality.metrics import json_safe
from sol.report import format as fmt
from sol.report.markdown import render_markdown
from sol.report.media import DIFF_GAIN, diff_video, mp4_data_uri, try_load
from sol.report.plots import front_svg, profile_svg
from sol.report.techniques import technique_support

# Videos for at most this many candidates (the chosen one first): each row is 3 small mp4s.
MAX_VIDEO_CANDIDATES = 4

_CSS = """
:root { --fg:#111827; --muted:#6b7280; --line:#e5e7eb; --ok:#15803d; --bad:#b91c1c; --skip:#92400e;
        --accent:#2563eb; --bg:#ffffff; --soft:#f9fafb; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; max-width: 1180px; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 8px;
     border-bottom: 1px solid var(--line); padding-bottom: 4px; } h3 { font-size: 15px; margin: 20px 0 6px; }
.meta { color: var(--muted); margin: 0; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--soft); font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: var(--ok); font-weight: 600; } .fail { color: var(--bad); font-weight: 600; }
.skip { color: var(--skip); } .chosen { background: #eff6ff; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.badge.pass { background: #dcfce7; } .badge.fail { background: #fee2e2; } .badge.none { background: #f3f4f6; color: var(--muted); }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 150px; background: var(--soft); }
.card b { display: block; font-size: 20px; } .card span { color: var(--muted); font-size: 12px; }
.plot svg { max-width: 100%; height: auto; }
.videos { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 10px; margin: 6px 0 16px; }
.videos figure { margin: 0; } .videos video { width: 100%; background: #000; border-radius: 4px; image-rendering: pixelated; }
.videos figcaption { font-size: 12px; color: var(--muted); }
.missing { border: 1px dashed var(--bad); color: var(--bad); padding: 16px; font-size: 12px; border-radius: 4px; }
pre { background: var(--soft); border: 1px solid var(--line); padding: 12px; overflow: auto; font-size: 12px;
      max-height: 560px; }
details summary { cursor: pointer; color: var(--accent); }
code { font-size: 12px; } h3 code { font-size: inherit; }
table.narrow { width: auto; min-width: 360px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def build_report(
    run: dict[str, Any], out_dir: str | Path, *, max_video_candidates: int = MAX_VIDEO_CANDIDATES
) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.md`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / "report.html"
    md_path = out_dir / "summary.md"
    html_path.write_text(
        render_html(run, out_dir, max_video_candidates=max_video_candidates), encoding="utf-8"
    )
    md_path.write_text(render_markdown(run, html_path=html_path), encoding="utf-8")
    return html_path, md_path


def render_html(run: dict[str, Any], out_dir: Path | None = None, *, max_video_candidates: int = 4) -> str:
    base_dir = Path(run.get("run_dir") or out_dir or ".")
    model = str(run.get("model", "unknown model"))
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Sol report — {escape(model)}</title><style>{_CSS}</style></head><body>",
        _header(run),
        '<nav><a href="#summary">Summary</a><a href="#profile">Profile</a><a href="#fronts">Pareto fronts</a>'
        '<a href="#integrator">Integrator</a><a href="#candidates">Candidates</a><a href="#videos">Videos</a><a href="#plan">Plan</a></nav>',
        _summary(run),
        _profile(run.get("profile") or {}),
        _fronts(run.get("fronts") or {}),
        _techniques(run),
        _integrator(run),
        _candidates(run),
        _videos(run, base_dir, max_video_candidates),
        _plan(run),
        f"<footer>Generated by Sol on {escape(_dt.datetime.now().isoformat(timespec='seconds'))}. "
        "This page is self-contained: it fetches nothing.</footer>",
        "</body></html>",
    ]
    return "\n".join(parts)


# --- sections -------------------------------------------------------------------------------------


def _header(run: dict[str, Any]) -> str:
    hw = run.get("hardware") or {}
    hw_text = hw.get("name") or hw.get("device") or hw.get("kind") or "unknown hardware"
    wl = run.get("workload") or {}
    wl_text = wl.get("name") or "workload"
    return (
        f"<header><h1>Sol benchmark report: {escape(str(run.get('model', '?')))}</h1>"
        f'<p class="meta">{escape(str(hw_text))} · {escape(str(wl_text))} · '
        f"quality budget <b>{escape(str(run.get('quality_budget', '?')))}</b></p></header>"
    )


def _chosen(run: dict[str, Any]) -> dict[str, Any] | None:
    chosen = run.get("chosen")
    for c in run.get("candidates") or []:
        if chosen is not None and c.get("id") == chosen:
            return c
    return None


def _summary(run: dict[str, Any]) -> str:
    chosen = _chosen(run)
    cands = run.get("candidates") or []
    passed = sum(1 for c in cands if (fmt.verdict_of(c) or {}).get("passed"))
    cards = []
    if chosen is not None:
        fid = chosen.get("fidelity") or {}
        val = chosen.get("validation") or {}
        cards += [
            ("chosen", escape(str(chosen.get("id")))),
            ("speedup (measured)", fmt.speedup(chosen.get("speedup"))),
            ("95% interval", fmt.interval((chosen.get("timing") or {}).get("interval"))),
            ("PSNR vs baseline", fmt.db(fid.get("psnr"))),
            ("worst video's PSNR (search)", fmt.db(fid.get("psnr_min"))),
        ]
        if val.get("checked"):
            cards += [
                ("worst held-out video", fmt.db(val.get("psnr_min"))),
                ("search − held-out gap", fmt.gap(val.get("gap_db"))),
            ]
        cards.append(("SSIM", fmt.ratio(fid.get("ssim"))))
    else:
        cards.append(("chosen", "none"))
    cards.append(("candidates passing the gate", f"{passed} / {len(cands)}"))
    if any("passed" in c for c in cands):
        cards.append(("approvable", f"{sum(1 for c in cands if c.get('passed'))} / {len(cands)}"))
    card_html = "".join(f'<div class="card"><b>{v}</b><span>{escape(k)}</span></div>' for k, v in cards)
    chosen_line = (
        f"<p>Chosen stack: <code>{escape(fmt.techniques(chosen.get('techniques')))}</code></p>"
        if chosen is not None
        else f"<p>No candidate was chosen{': ' + escape(str(run['status'])) if run.get('status') else ''}.</p>"
    )
    wl = run.get("workload") or {}
    prompts = run.get("prompts") or wl.get("prompts") or []
    wl_rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(_compact(v))}</td></tr>"
        for k, v in wl.items()
        if k != "prompts"
    )
    prompt_list = "".join(f"<li>{escape(str(p))}</li>" for p in prompts)
    hw_rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(_compact(v))}</td></tr>"
        for k, v in (run.get("hardware") or {}).items()
    )
    return (
        f'<section id="summary"><h2>Summary</h2><div class="cards">{card_html}</div>{chosen_line}'
        f"{_candidate_table(run)}{_vbench(run)}"
        f"<details><summary>Workload, prompts and hardware</summary>"
        f"<table>{wl_rows or '<tr><td>not recorded</td></tr>'}</table>"
        f"<ol>{prompt_list}</ol><table>{hw_rows}</table></details></section>"
    )


def _vbench(run: dict[str, Any]) -> str:
    """Which VBench dimensions the gate measured, and each one it did not with why."""
    vb = run.get("vbench") or {}
    measured, missing = vb.get("measured") or [], vb.get("not_measured") or {}
    if not measured and not missing:
        return ""
    names = ", ".join(f"<code>{escape(str(d))}</code>" for d in measured) or "none"
    rows = "".join(
        f'<tr><td><code>{escape(str(d))}</code></td><td class="skip">{escape(str(why))}</td></tr>'
        for d, why in missing.items()
    )
    table = (
        f"<table><thead><tr><th>VBench dimension not measured</th><th>why</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    return f'<div id="vbench"><h3>VBench</h3><p>Measured by the gate: {names}.</p>{table}</div>'


def _candidate_table(run: dict[str, Any]) -> str:
    cands = run.get("candidates") or []
    if not cands:
        why = run.get("no_candidates")
        return f"<p>No candidates: {escape(str(why))}.</p>" if why else "<p>No candidates were evaluated.</p>"
    rows = []
    for c in cands:
        fid = c.get("fidelity") or {}
        verdict = fmt.verdict_of(c)
        measured, predicted = fmt.num(c.get("speedup")), fmt.num(c.get("predicted_speedup"))
        interaction = ""
        if measured and predicted:
            r = measured / predicted
            interaction = (
                f" ({'+' if r >= 1 else ''}{100 * (r - 1):.0f}% vs predicted)" if abs(r - 1) > 0.1 else ""
            )
        cls = ' class="chosen"' if c.get("id") == run.get("chosen") else ""
        rows.append(
            f"<tr{cls}><td><code>{escape(str(c.get('id', '?')))}</code>"
            f"{' ★' if cls else ''}</td><td>{_stack_cell(c)}</td>"
            f'<td class="num">{fmt.speedup(measured)}{escape(interaction)}'
            f"<br><small>{fmt.interval((c.get('timing') or {}).get('interval'))}</small></td>"
            f'<td class="num">{fmt.speedup(predicted)}</td>'
            f'<td class="num">{fmt.db(fid.get("psnr"))}</td><td class="num">{fmt.db(fid.get("psnr_min"))}</td>'
            f'<td class="num">{fmt.db((c.get("validation") or {}).get("psnr_min"))}</td>'
            f'<td class="num">{fmt.ratio(fid.get("ssim"))}</td>'
            f'<td class="num">{fmt.ratio(fid.get("lpips"))}</td><td>{_badge(verdict)}</td>'
            f"<td><small>{escape(fmt.decision(c))}</small></td></tr>"
        )
    return (
        "<table><thead><tr><th>id</th><th>stack</th><th>speedup<br><small>95% interval</small></th>"
        "<th>predicted</th><th>PSNR</th><th>worst video</th><th>worst held-out</th><th>SSIM</th><th>LPIPS</th>"
        "<th>gate</th><th>decision</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _badge(verdict: dict[str, Any] | None) -> str:
    if verdict is None:
        return '<span class="badge none">not gated</span>'
    if verdict.get("passed"):
        return '<span class="badge pass">passed</span>'
    failed = fmt.failed_checks(verdict)
    return f'<span class="badge fail">failed</span> <small>{escape(", ".join(failed))}</small>'


def _profile(profile: dict[str, Any]) -> str:
    svg = profile_svg(profile)
    if svg is None:
        return '<section id="profile"><h2>Baseline profile</h2><p>Not recorded.</p></section>'
    tables = []
    for key, title in (("stages", "Stage"), ("op_classes", "Op class")):
        data = {k: fmt.num(v) for k, v in (profile.get(key) or {}).items()}
        data = {k: v for k, v in data.items() if v is not None}
        total = sum(data.values()) or 1.0
        rows = "".join(
            f'<tr><td>{escape(k)}</td><td class="num">{v:,.1f}</td><td class="num">{100 * v / total:.1f}%</td></tr>'
            for k, v in data.items()
        )
        if rows:
            tables.append(
                f'<table class="narrow"><thead><tr><th>{title}</th><th>ms</th><th>share</th></tr></thead>{rows}</table>'
            )
    extra = {k: v for k, v in profile.items() if k not in ("stages", "op_classes")}
    extra_html = (
        f"<details><summary>Other profile fields</summary><pre>{_json(extra)}</pre></details>"
        if extra
        else ""
    )
    return (
        f'<section id="profile"><h2>Baseline profile</h2><div class="plot">{svg}</div>'
        f"{''.join(tables)}{extra_html}</section>"
    )


def _fronts(fronts: dict[str, list[dict[str, Any]]]) -> str:
    if not fronts:
        return '<section id="fronts"><h2>Pareto fronts</h2><p>Not recorded.</p></section>'
    parts = ['<section id="fronts"><h2>Pareto fronts, one per skill</h2>'
             "<p>Each skill agent's candidates: speedup against PSNR to the baseline. Filled blue points "
             "are on the front; red crosses failed.</p>"]  # fmt: skip
    for skill, points in fronts.items():
        svg = front_svg(skill, points or [])
        rows = []
        for p in points or []:
            status = (
                f'<span class="fail">failed</span>: {escape(str(p.get("reason") or ""))}'
                if p.get("failed")
                else ('<span class="pass">on front</span>' if p.get("on_front") else "dominated")
            )
            calls = p.get("calls") or {}
            rows.append(
                f"<tr><td>{escape(str(p.get('label', '')))}<br><code>{escape(fmt.techniques(p.get('techniques')))}"
                f'</code></td><td class="num">{fmt.speedup(p.get("speedup"))}</td>'
                f'<td class="num">{fmt.db(p.get("psnr"))}</td><td class="num">{fmt.ratio(p.get("ssim"))}</td>'
                f"<td>{status}</td><td><small>{escape(_compact(calls)) if calls else ''}</small></td></tr>"
            )
        table = (
            "<table><thead><tr><th>candidate</th><th>speedup</th><th>PSNR</th><th>SSIM</th><th>status</th>"
            "<th>calls</th></tr></thead>" + "".join(rows) + "</table>"
        )
        parts.append(f'<h3>{escape(skill)}</h3><div class="plot">{svg or ""}</div>{table}')
    parts.append("</section>")
    return "".join(parts)


def _stack_cell(c: dict[str, Any]) -> str:
    """The candidate's label, and its technique list in code when that says something the label doesn't."""
    label, code = str(c.get("label", "")), fmt.techniques(c.get("techniques"))
    if not label or label == code:
        return f"<code>{escape(code)}</code>"
    return f"{escape(label)}<br><code>{escape(code)}</code>"


def _techniques(run: dict[str, Any]) -> str:
    """Every technique: measured on this model, or refused with the model family's reason."""
    rows = technique_support(run)
    if not rows:
        return ""
    info = (run.get("profile") or {}).get("model_info") or {}
    body = "".join(
        f"<tr><td><code>{escape(r['kind'])}</code></td><td>{escape(r['status'])}</td><td>{escape(r['why'])}</td></tr>"
        for r in rows
    )
    return (
        f'<section id="techniques"><h2>Techniques on this model ({escape(str(info.get("family", "?")))},'
        f" {escape(str(info.get('class', '')))})</h2>"
        "<table><thead><tr><th>technique</th><th>status</th><th>why</th></tr></thead>"
        + body
        + "</table></section>"
    )


def _integrator(run: dict[str, Any]) -> str:
    """Measured vs predicted per composition, interactions, failed skills, feedback rounds."""
    cands = [c for c in run.get("candidates") or [] if c.get("predicted_speedup") is not None]
    failed = run.get("failed_skills") or {}
    log = run.get("integration_log") or []
    feedback = run.get("feedback") or []
    if not (cands or failed or log or feedback):
        return ""
    parts = ['<section id="integrator"><h2>Integrator: compositions and interactions</h2>']
    if failed:
        items = "".join(f"<li><b>{escape(k)}</b>: {escape(str(v))}</li>" for k, v in failed.items())
        parts.append(f"<p>Skills that failed (the run went on without them):</p><ul>{items}</ul>")
    if cands:
        rows = "".join(
            f"<tr><td><code>{escape(str(c.get('id')))}</code></td><td>{escape(str(c.get('label', '')))}</td>"
            f'<td class="num">{fmt.speedup(c.get("speedup"))}</td>'
            f'<td class="num">{fmt.speedup(c.get("predicted_speedup"))}</td>'
            f'<td class="num">{fmt.db((c.get("fidelity") or {}).get("psnr"))}</td>'
            f'<td class="num">{fmt.db(c.get("predicted_psnr"))}</td>'
            f"<td>{escape(str(c.get('interaction') or '—'))}</td></tr>"
            for c in cands
        )
        parts.append(
            "<p>Speedups of stacked techniques do not multiply: each composition's speed is predicted from "
            "the work it was counted doing (the cost model fitted on the baseline) and the finalists are "
            "measured end to end, interleaved with the baseline; the PSNR prediction adds the parts' errors.</p>"
            "<table><thead><tr><th>id</th><th>composition</th><th>measured</th><th>predicted</th>"
            "<th>PSNR</th><th>predicted PSNR</th><th>interaction</th></tr></thead>" + rows + "</table>"
        )
    if log:
        items = "".join(f"<li><code>{escape(str(line))}</code></li>" for line in log)
        parts.append(
            f"<details><summary>integrator log ({len(log)} steps)</summary><ul>{items}</ul></details>"
        )
    for fb in feedback:
        parts.append(
            f'<p class="meta">rejected {escape(str(fb.get("rejected")))} by {escape(str(fb.get("by")))} '
            f"at {escape(str(fb.get('at')))}: feedback {escape(_compact(fb.get('feedback')))} → "
            f"settings {escape(_compact(fb.get('settings')))}</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def _candidates(run: dict[str, Any]) -> str:
    cands = run.get("candidates") or []
    parts = ['<section id="candidates"><h2>Candidates and gate verdicts</h2>']
    if not cands:
        parts.append("<p>None.</p>")
    for c in cands:
        verdict = fmt.verdict_of(c)
        parts.append(
            f"<h3><code>{escape(str(c.get('id', '?')))}</code> {escape(str(c.get('label', '')))} "
            f"{_badge(verdict)}</h3><p><code>{escape(fmt.techniques(c.get('techniques')))}</code></p>"
        )
        if verdict is None:
            parts.append("<p>Not gated.</p>")
            continue
        budget = verdict.get("budget") or {}
        if budget:
            parts.append(f"<p class=\"meta\">budget {escape(str(budget.get('name', '')))}: "
                         f"{escape(_compact({k: v for k, v in budget.items() if k != 'name'}))}</p>")  # fmt: skip
        rows = []
        for chk in verdict.get("checks", []):
            passed = chk.get("passed")
            cls, word = (
                ("pass", "pass")
                if passed is True
                else (("fail", "FAIL") if passed is False else ("skip", "skipped"))
            )
            threshold = (
                ""
                if chk.get("threshold") is None
                else f"{chk.get('op', '')} {fmt.value(chk.get('threshold'))}"
            )
            rows.append(
                f"<tr><td><code>{escape(str(chk.get('name')))}</code></td>"
                f'<td class="num">{fmt.value(chk.get("value"))}</td><td class="num">{escape(threshold)}</td>'
                f'<td class="{cls}">{word}</td><td><small>{escape(str(chk.get("detail") or ""))}</small></td></tr>'
            )
        parts.append(
            "<details" + ("" if verdict.get("passed") else " open") + "><summary>"
            f"{len(rows)} checks</summary><table><thead><tr><th>check</th><th>value</th><th>threshold</th>"
            "<th>result</th><th>detail</th></tr></thead>" + "".join(rows) + "</table></details>"
        )
    parts.append("</section>")
    return "".join(parts)


def _video_cell(video, caption: str) -> str:
    if video is None:
        return f'<figure><div class="missing">{escape(caption)}</div></figure>'
    uri = mp4_data_uri(video)
    return (
        f'<figure><video controls muted loop autoplay playsinline preload="auto" src="{uri}"></video>'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _resolve(p: Any, base_dir: Path) -> Any:
    if isinstance(p, str | Path) and not Path(p).is_absolute():
        return base_dir / p
    return p


def _videos(run: dict[str, Any], base_dir: Path, max_candidates: int) -> str:
    parts = ['<section id="videos"><h2>Videos: baseline | candidate | difference</h2>',
             f"<p>Same prompt and seed. The difference is |candidate − baseline| × {DIFF_GAIN:g} "
             "(black = identical). Videos are shrunk for the page.</p>"]  # fmt: skip
    baseline = run.get("baseline_videos") or []
    cands = list(run.get("candidates") or [])
    chosen = _chosen(run)
    if chosen is not None:
        cands = [chosen] + [c for c in cands if c is not chosen]
    shown = [c for c in cands if c.get("videos")][:max_candidates]
    if not baseline or not shown:
        parts.append("<p>No videos recorded.</p></section>")
        return "".join(parts)
    prompts = run.get("prompts") or []
    base_cache: dict[int, tuple[Any, str | None]] = {}
    for c in shown:
        parts.append(f"<h3><code>{escape(str(c.get('id')))}</code> {escape(str(c.get('label', '')))}</h3>")
        for i, base_path in enumerate(baseline):
            if i not in base_cache:
                base_cache[i] = try_load(_resolve(base_path, base_dir))
            base, base_err = base_cache[i]
            cand_paths = c.get("videos") or []
            cand, cand_err = try_load(_resolve(cand_paths[i], base_dir) if i < len(cand_paths) else None)
            prompt = prompts[i] if i < len(prompts) else f"video {i}"
            diff, diff_err = None, "no difference: a video is missing"
            if base is not None and cand is not None:
                if base.shape == cand.shape:
                    diff = diff_video(base, cand)
                else:
                    diff_err = f"no difference: shapes differ {base.shape} vs {cand.shape}"
            parts.append(f'<p><b>{i}.</b> {escape(str(prompt))}</p><div class="videos">')
            parts.append(
                _video_cell(base, "baseline" if base is not None else f"baseline missing: {base_err}")
            )
            parts.append(
                _video_cell(cand, "candidate" if cand is not None else f"candidate missing: {cand_err}")
            )
            parts.append(_video_cell(diff, f"difference ×{DIFF_GAIN:g}" if diff is not None else diff_err))
            parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _plan(run: dict[str, Any]) -> str:
    plan = run.get("plan")
    if plan is None:
        body = "<p>No plan was exported.</p>"
    elif isinstance(plan, str):  # the plan file's text: shown byte for byte
        body = f"<pre>{escape(plan)}</pre>"
    else:
        body = f"<pre>{_json(plan)}</pre>"
    return (
        '<section id="plan"><h2>Plan (exact JSON)</h2><p>Re-apply in a server with '
        '<code>sol.apply_plan(pipe, "plan.json")</code>.</p>' + body + "</section>"
    )


def _json(obj: Any) -> str:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    return escape(json.dumps(json_safe(obj), indent=2, sort_keys=False))


def _compact(v: Any) -> str:
    if isinstance(v, dict | list):
        return json.dumps(json_safe(v), separators=(", ", ": "))
    return str(v)
