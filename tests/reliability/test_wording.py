"""Wording (issue 18, item 7): what the user reads is one plain line, with Sol's own names."""

from __future__ import annotations

import json

import pytest

from sol.errors import SolError, json_error_text, parse_json


def test_json_errors_say_at_once():
    """The decoder's "Unterminated string starting at" read "starting at at line 1"."""
    with pytest.raises(SolError) as e:
        parse_json('{"a": "b', "plan.json", "re-export the plan")
    assert " at at " not in str(e.value) and "line 1" in str(e.value), str(e.value)
    try:
        json.loads("[1,")
    except json.JSONDecodeError as err:
        assert json_error_text(err).count(" at ") == 1


def test_progress_lines_skip_langgraphs_own_entries(capsys):
    from sol.cli import _printer

    on_update = _printer()
    on_update("__metadata__", {"x": 1})
    on_update("__interrupt__", ())
    on_update("skill_agent", {"fronts": {"cache": "p"}, "failed": {"integrator": None}})
    out = capsys.readouterr()
    text = out.out + out.err
    assert "__" not in text and "FAILED" not in text and "cache" in text, text


def test_the_cli_silences_the_profilers_usdt_lines(monkeypatch, tmp_path):
    """torch's profiler printed "USDT: ... profiler_start" lines into every `sol profile`/`optimize`;
    Kineto is quiet at level 6 (checked by hand: `KINETO_LOG_LEVEL=6` removes both lines; a
    subprocess test of it costs 25 s of CI on a loaded machine)."""
    from sol.cli import main

    monkeypatch.delenv("KINETO_LOG_LEVEL", raising=False)
    monkeypatch.setattr("warnings.showwarning", __import__("warnings").showwarning)
    main(["runs", "--runs-dir", str(tmp_path / "none")])
    import os

    assert os.environ["KINETO_LOG_LEVEL"] == "6"
