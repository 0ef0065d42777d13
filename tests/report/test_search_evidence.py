"""The report says what the search measured: every speedup with its interval, predicted against
measured, the worst held-out video and the gap, why a candidate cannot be approved, the screen's
pass share, and — when nothing qualifies — that no candidate beat the baseline."""

from __future__ import annotations

from sol.report import build_report, render_markdown
from tests.report.conftest import make_run


def _with_evidence(run: dict) -> dict:
    run = {**run, "candidates": [dict(c) for c in run["candidates"]]}
    for c in run["candidates"]:
        c["timing"] = {"interval": [1.9, 2.3], "clock": "cpu", "pairs": 7, "beats_baseline": True}
        c["validation"] = {"checked": True, "passed": True, "psnr_min": 33.5, "gap_db": 1.5}
        c["passed"], c["why"] = True, ""
    run["candidates"][2].update(passed=False, why="speedup 0.97x, interval 0.90-1.04x does not lie above 1.0")
    run["search"] = {"cache": {"screen": {"screened": 31, "full_evaluations": 5, "full_passed": 4, "pass_share": 0.8},
                               "timed": [{"label": "cache.step_output(...)", "predicted_speedup": 2.1,
                                          "speedup": 2.05, "interval": [1.98, 2.12], "clock": "cpu", "pairs": 9}]}}  # fmt: skip
    return run


def test_markdown_shows_intervals_held_out_decisions_and_screen_accuracy(run_dict):
    md = render_markdown(_with_evidence(run_dict))
    assert "| speedup | interval | predicted | PSNR | worst video | held-out worst |" in md
    assert "1.90–2.30×" in md and "33.5 dB" in md
    assert "does not lie above 1.0" in md and "approvable" in md
    assert "## Search evidence" in md and "| cache | 31 | 5 | 4 | 80% |" in md
    assert "| cache | cache.step_output(...) | 2.10× | 2.05× | 1.98–2.12× | cpu, 9 |" in md


def test_a_run_without_a_plan_says_why(tmp_path):
    run = make_run(tmp_path / "run")
    run = {**run, "chosen": None, "plan": None,
           "status": "finished: no candidate beat the baseline (every speedup interval reached 1.0 or below);"
                     " no plan exported"}  # fmt: skip
    html_path, md_path = build_report(run, tmp_path / "out")
    assert "no candidate beat the baseline" in html_path.read_text()
    assert "outcome: finished: no candidate beat the baseline" in md_path.read_text()
