"""The screen-calibration replay (benchmarks/screen_calibration.py) on measured-looking rows: no
model runs here; the rows stand for candidates generated on every video of both splits."""

from __future__ import annotations

import json

from benchmarks.screen_calibration import analyse


def test_the_replay_reports_coverage_and_what_the_funnel_keeps(tmp_path, capsys):
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    effects = [2.0, -4.0, 4.0, 6.0, -1.0, -4.0, 0.0, -1.0]  # the video's own effect, as measured
    rows = []
    for i, level in enumerate([50.0, 44.0, 40.0, 36.0, 31.0, 26.0]):
        search = [level + e + (0.5 if (i + j) % 2 else -0.5) for j, e in enumerate(effects)]
        rows.append({"label": f"cache.t{i}", "kind": "cache.t", "predicted_speedup": 1.2 + 0.2 * i,
                     "search": search, "held_out": [x + 4.0 for x in search]})  # fmt: skip
    f = tmp_path / "cal.json"
    f.write_text(json.dumps({"screening_order": order, "rows": rows}))
    out = analyse([f])
    assert out["candidates"] == 6
    two, whole = out["screen_2"], out["screen_8"]
    assert 0 < two["n"] <= 6 and whole["cover_held"] <= whole["n"]
    # The funnel never keeps a candidate whose videos fall below the floor on either split.
    assert (
        out["funnel"]["failing_gate"] == 0
        and out["funnel"]["fastest"] <= out["funnel"]["fastest_passing_gate"]
    )
    assert abs(out["two_way"]["held_minus_search_mean"] - 4.0) < 1e-9
    # The leave-out coverage is a share, and a lower nominal level never covers more.
    lo = out["leave_out"]
    assert all(0.0 <= v["coverage"] <= 1.0 for v in lo.values())
    assert lo["4@0.2"]["coverage"] <= lo["4@0.8"]["coverage"]
    # Successive halving spends the screens' 2 videos each and then extends only the fastest.
    assert out["funnel"]["videos"] >= 2 * len(rows)
    printed = capsys.readouterr().out
    assert "funnel at 20% early, 65% on the whole split" in printed and "leave-out" in printed
