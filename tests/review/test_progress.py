"""Progress travels through the run folder: written by the jobs' callbacks, read by the CLI and `sol serve`."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from sol.agent.progress import ProgressWriter, estimate_planned, read_progress, skill_writer
from sol.agent.runs import DecisionInProgress, decision_lock


def _result(label, psnr, speed, passes=True):
    return SimpleNamespace(label=label, psnr=psnr, speedup=None, predicted_speedup=speed, ok=True,
                           screen={"passes": passes})  # fmt: skip


def test_writer_callbacks_fold_into_counts_best_and_estimate(tmp_path):
    w = ProgressWriter(tmp_path, "skill-cache", planned=4, estimate=True)
    with w:
        w.candidate(_result("fbc 0.1", 33.0, 1.8))
        w.candidate(_result("fbc 0.3", 24.0, 3.5, passes=False))  # fastest, but fails: never "best"
        w.candidate(_result("text kv", float("inf"), 1.01))
        (p,) = read_progress(tmp_path)
        assert (p.done, p.total, p.state) == (3, 4, "running")
        assert p.best["label"] == "fbc 0.1" and p.best_text() == "1.80x at 33.0 dB"
        assert p.eta_s is not None and "3/≈4 candidates" in p.line()
        for _ in range(3):  # the search outran its estimate: planned grows with it
            w.candidate(_result("x", 31.0, 1.2))
        assert read_progress(tmp_path)[0].total == 7
    (p,) = read_progress(tmp_path)
    assert (p.done, p.total, p.state, p.eta_s) == (6, 6, "done", None)
    # a retried agent starts again; a half-written last line is skipped
    with ProgressWriter(tmp_path, "skill-cache", planned=2):
        pass
    with open(tmp_path / "progress" / "skill-cache.jsonl", "a") as f:
        f.write('{"event": "item", "do')
    (p,) = read_progress(tmp_path)
    assert (p.done, p.best) == (0, None)


def test_a_failed_search_is_recorded_with_its_error(tmp_path):
    with pytest.raises(RuntimeError):
        with ProgressWriter(tmp_path, "skill-fusion", planned=3) as w:
            w.candidate(_result("compile", 40.0, 1.1))
            raise RuntimeError("inductor failed\nlong trace")
    (p,) = read_progress(tmp_path)
    assert p.state == "failed" and p.error == "RuntimeError: inductor failed"
    assert "failed (RuntimeError: inductor failed)" in p.line()


def test_planned_comes_from_the_last_finished_run_of_the_same_job(tmp_path):
    spec = {"model": "sol-tiny-wan", "workload_name": "default", "effort": "standard"}
    old, other, new = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d, s in ((old, spec), (other, {**spec, "effort": "quick"}), (new, spec)):
        d.mkdir()
        (d / "run.json").write_text(json.dumps({**s, "run_dir": str(d)}))
    with ProgressWriter(old, "skill-cache", 5) as w:
        for _ in range(17):
            w.tick()
    with ProgressWriter(other, "skill-cache", 5) as w:
        w.tick()
    assert estimate_planned(new, "skill-cache", spec, fallback=40) == (17, True)
    assert estimate_planned(new, "skill-quantization", spec, fallback=40) == (40, True)
    # the rule of thumb counts the family's techniques that run here
    hw = SimpleNamespace(kind="cpu", name="cpu")
    w = skill_writer(
        {**spec, "run_dir": str(new)}, "cache", hw, SimpleNamespace(top_k=2, halving=(4,), refine_rounds=4)
    )
    assert w.planned == 17
    w = skill_writer({**spec, "run_dir": str(new), "effort": "thorough"}, "cache", hw,
                     SimpleNamespace(top_k=2, halving=(4,), refine_rounds=4))  # fmt: skip
    assert w.planned and w.planned > 17


def test_concurrent_writers_never_split_lines(tmp_path):
    writers = [ProgressWriter(tmp_path, "integrator-1") for _ in range(4)]

    def work(w):
        for i in range(50):
            w.item(f"c{i}" * 20, 1.5, 31.0, True)

    threads = [threading.Thread(target=work, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "progress" / "integrator-1.jsonl").read_text().splitlines()
    assert len(lines) == 200 and all(json.loads(x)["event"] == "item" for x in lines)


def test_one_decision_at_a_time(tmp_path):
    run = tmp_path / "run-1"
    run.mkdir()
    with decision_lock(run, "alice approving c1"):
        with pytest.raises(DecisionInProgress, match=r"already being decided \(alice approving c1 since "):
            with decision_lock(run, "bob"):
                pass
    with decision_lock(run, "bob"):  # released: the next one gets it
        assert "bob" in Path(run / "decision.lock").read_text()
