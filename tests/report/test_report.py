"""The report: files, self-containment, Markdown summary, and a real render in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sol.report import build_report, render_markdown
from tests.report.conftest import make_run

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_report_is_self_contained(run_dict, tmp_path):
    html_path, md_path = build_report(run_dict, tmp_path / "out")
    assert html_path.name == "report.html" and md_path.name == "summary.md"
    html = html_path.read_text()
    # Nothing to fetch: no http(s) or protocol-relative src/href, no <script src>, no <link>.
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", html)
    assert "<link" not in html and "<script" not in html
    assert html.count("<svg") == 1 + len(run_dict["fronts"])  # profile + one per skill
    # Chosen first, then the others: 3 candidates x 2 prompts x (baseline, candidate, difference).
    assert html.count("<video") == 18
    assert html.count('src="data:video/mp4;base64,') == 18
    # The exact plan and every verdict are in the page.
    assert "WanTransformer3DModel:3f2a9c" in html
    assert "video[1].frozen" in html and "flicker.drop" in html
    assert html_path.stat().st_size < 3_000_000


def test_markdown_summary_lists_candidates_and_verdicts(run_dict, tmp_path):
    _, md_path = build_report(run_dict, tmp_path / "out")
    md = md_path.read_text()
    assert md.startswith("# Sol report: sol-tiny-wan")
    assert "| PSNR | worst video |" in md  # the gate judges every video, so the summary shows the worst
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`c" in line]
    assert len(rows) == 3
    assert "✅ passed" in rows[0] and "∞ (identical)" in rows[0]
    assert rows[1].startswith("| ★ | `c2`")
    assert "❌ failed: " in rows[2] and "video[1].frozen" in rows[2]
    assert "| cache | 5 | 3 | 1 | 5.20× |" in md


def test_partial_run_renders_with_reasons(tmp_path):
    run_dict = make_run(tmp_path / "run")
    (Path(run_dict["candidates"][0]["videos"][1])).unlink()  # a lost file
    run = {**run_dict, "profile": {}, "fronts": {}, "plan": None}
    run["candidates"] = [dict(c) for c in run_dict["candidates"]]
    run["candidates"][1]["videos"] = run["candidates"][1]["videos"][:1]  # one output missing
    run["candidates"][2]["verdict"] = None
    html_path, md_path = build_report(run, tmp_path / "partial", max_video_candidates=3)
    html = html_path.read_text()
    assert "candidate missing" in html and "does not exist" in html
    assert "No plan was exported" in html and "Not recorded" in html
    assert "not gated" in md_path.read_text()
    minimal = render_markdown({"model": "m"})
    assert "No candidates were evaluated." in minimal


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: run `make browser` (apt chromium)")
def test_report_renders_in_headless_chromium(run_dict, tmp_path):
    from playwright.sync_api import sync_playwright

    html_path, _ = build_report(run_dict, tmp_path / "out")
    shot = tmp_path / "report.png"
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_path.as_uri())
            page.wait_for_function(
                "Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 2)", timeout=20_000
            )
            states = page.evaluate(
                "Array.from(document.querySelectorAll('video'))"
                ".map(v => ({ready: v.readyState, duration: v.duration, width: v.videoWidth, error: !!v.error}))"
            )
            svgs = page.locator("svg").count()
            visible_plot = page.locator("#fronts svg").first.bounding_box()
            verdict_badges = page.locator(".badge.fail").count()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert svgs == 3 and visible_plot and visible_plot["width"] > 200
    assert len(states) == 18
    for s in states:  # every video decoded: 17 frames at 8 fps, 96 px wide
        assert not s["error"] and s["ready"] >= 2 and s["width"] == 96
        assert s["duration"] == pytest.approx(17 / 8, abs=0.2)
    assert verdict_badges >= 1
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert shot.stat().st_size > 50_000


def test_two_quantization_mixes_that_differ_in_one_rule_get_different_labels():
    # The first demo's summary printed both as `quantization.linear(rules=[{'match': …` and
    # people could not tell the approved candidate from the one that failed the gate.
    from sol.report.format import techniques

    rules = [{"match": f"blocks.{i}.attn2.to_k", "scheme": "none"} for i in range(8)]
    a = {
        "kind": "quantization.linear",
        "version": 1,
        "rules": [*rules, {"match": "re:.*", "scheme": "int8_dynamic"}],
    }
    b = {**a, "rules": [{"match": "blocks.4.ffn.net.0.proj", "scheme": "none"}, *a["rules"]]}
    la, lb = techniques([a]), techniques([b])
    assert la != lb and "int8_dynamic" in la and "9 kept" in lb
    # Calibrated ratios shorten to a count and a hash; unregistered kinds keep the field list.
    mag = {"kind": "cache.diffusers_magcache", "threshold": 0.3, "mag_ratios": [1.0, 0.99, 0.98, 0.97, 0.95]}
    assert "mag_ratios=<5 values #" in techniques([mag])
    assert techniques([{"kind": "not_registered", "version": 1, "x": 1}]) == "not_registered(x=1)"
