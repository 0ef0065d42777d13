"""Resume after a kill at any point, and nothing approvable is ever lost.

Real runs: the ``sol`` command in subprocesses, real Ray actors, real LangGraph checkpoints in
SQLite, the tiny random Wan. Kills are real SIGKILLs, placed by the executor's test hook
(``SOL_TEST_KILL_AT``: ``JOB:start``, ``JOB:+SECONDS``, ``JOB:done``, ``NODE:end``), so each lands
in the phase it names on a loaded machine as on a quiet one. VBench's environment is left out
(``SOL_VBENCH_PYTHON`` names no file): its interpreter costs a minute a round and is not what
these tests are about.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sol.agent import driver
from sol.errors import SolError

WL = {
    "name": "tiny1",
    "prompts": ["a red circle moving right"],
    "num_frames": 5,
    "height": 32,
    "width": 32,
    "num_inference_steps": 4,
    "guidance_scale": 4.5,
}
KILLED = -signal.SIGKILL


@pytest.fixture
def workload(tmp_path) -> str:
    path = tmp_path / "tiny1.json"
    path.write_text(json.dumps(WL))
    return str(path)


@pytest.fixture(autouse=True)
def no_vbench(monkeypatch):
    monkeypatch.setenv("SOL_VBENCH_PYTHON", "/nonexistent/vbench-python")


def _sol(*args, cwd, kill_at: str | None = None, fail_at: str | None = None, timeout=900):
    env = {
        **os.environ,
        "SOL_USER": "tester",
        "COLUMNS": "300",
        "SOL_VBENCH_PYTHON": "/nonexistent/vbench-python",
    }
    env.pop("SOL_TEST_KILL_AT", None)
    env.pop("SOL_TEST_FAIL_AT", None)
    if kill_at:
        env["SOL_TEST_KILL_AT"] = kill_at
    if fail_at:
        env["SOL_TEST_FAIL_AT"] = fail_at
    p = subprocess.Popen([sys.executable, "-m", "sol.cli", *args], cwd=cwd, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    return p.returncode, out, err, p.pid


def _run_dir(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if (p / "run.json").is_file()]
    return run


def _ray_leftovers(pids: list[int]) -> tuple[list[str], list[int]]:
    """Ray session folders and processes of the Sol processes ``pids`` (a session folder's name ends
    with the pid of the process that started Ray)."""
    import psutil

    root = Path("/tmp/ray")
    sessions = [str(p) for p in root.glob("session_*") if any(p.name.endswith(f"_{pid}") for pid in pids)]
    procs = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if any(s in cmd for s in sessions):
            procs.append(proc.info["pid"])
    return sessions, procs


@pytest.mark.slow  # minutes of real searches; the cheap checks below stay in CI
def test_sigkill_in_every_phase_then_resume_completes_with_ray(tmp_path, workload):
    """One run killed in each phase in turn (profile, two skill agents, integration, gate, approval,
    export); every next command carries it on from its checkpoint, never redoing finished work, and
    Sol's Ray processes and session folders are gone after every kill."""
    runs = tmp_path / "runs"
    common = ["--runs-dir", str(runs)]
    pids = []

    def step(*args, kill_at=None):
        code, out, err, pid = _sol(*args, *common, cwd=tmp_path, kill_at=kill_at)
        pids.append(pid)
        if kill_at:
            assert code == KILLED, f"{kill_at} was never reached (exit {code}): {err[-3000:]}"
        else:
            assert code == 0, err[-3000:]
        return out, err

    # profile: killed one second into the profile job (Ray and its actor starting, the model loading)
    step("optimize", "--model", "tiny-wan-random", "--gpu", "cpu", "--workload", workload, "--effort", "quick",
         "--skills", "cache,quantization", "--executor", "ray", "--approve", "manual", kill_at="profile:+1")  # fmt: skip
    run = _run_dir(runs)
    assert not (run / "profile.json").exists()
    name = run.name

    # skills: two agents resume at once (both ask for the executor: Ray must start exactly once)
    step("resume", name, kill_at="skill-cache:+2")
    assert (run / "profile.json").is_file() and not (run / "skills" / "cache.json").exists()
    profile_mtime = (run / "profile.json").stat().st_mtime_ns
    # skills: the cache search finished and wrote its result, the graph had not recorded it
    step("resume", name, kill_at="skill-cache:done")
    cache_mtime = (run / "skills" / "cache.json").stat().st_mtime_ns
    # integration: killed two seconds into the integrator
    step("resume", name, kill_at="integrator-1:+2")
    assert not (run / "integration-1.json").exists()
    # gate: killed right after the gate's verdicts, before its checkpoint is sure to be written
    step("resume", name, kill_at="gate:end")
    assert (run / "candidates-1.json").is_file()
    out, _ = step("resume", name)
    assert "waiting for approval" in " ".join(out.split()), out
    # approval: killed after the decision was recorded, before the export
    step("approve", name, kill_at="approval:end")
    assert not (run / "plan.json").exists()
    # export: killed after the plan and report were written. Should the decision have died with the
    # approving process after all (LangGraph saves a node's writes in a background thread), the run
    # asks for it again, and approving once more carries on.
    again = driver.outcome(run).interrupt is not None
    out, err = step("approve" if again else "resume", name, kill_at="export:end")
    out, err = step("resume", name)
    status = driver.outcome(run)
    if status.interrupt is not None:  # the decision died with the process: it is asked again, once
        out, err = step("approve", name)
        status = driver.outcome(run)
    assert status.status.startswith("done: approved"), status.status
    plan = json.loads((run / "plan.json").read_text())
    assert plan["approval"]["approved_by"] == "tester"
    assert (run / "profile.json").stat().st_mtime_ns == profile_mtime, "the profile ran again"
    assert (run / "skills" / "cache.json").stat().st_mtime_ns == cache_mtime, "the cache search ran again"

    deadline = time.monotonic() + 30  # the reaper stops what a killed Sol process left running
    while time.monotonic() < deadline and any(_ray_leftovers(pids)):
        time.sleep(1)
    sessions, procs = _ray_leftovers(pids)
    assert not sessions and not procs, (sessions, procs)


@pytest.mark.slow  # minutes of real searches; the cheap checks below stay in CI
def test_skills_that_failed_or_lost_their_result_run_again_on_resume_with_two_local_agents(
    tmp_path, workload
):
    """The flake in test_kill_mid_run_then_resume: a skill agent failed before the kill, and resume
    never ran it again (its result stayed missing, its reason printed only by the killed process).
    Now resume says what it re-runs and runs it; here two agents run at once in the local executor
    (models loaded one at a time: two loads at once failed with "Cannot copy out of meta tensor")."""
    runs = tmp_path / "runs"
    code, out, err, _ = _sol(
        "optimize", "--model", "tiny-wan-random", "--gpu", "cpu", "--workload", workload, "--effort", "quick",
        "--skills", "cache,quantization", "--executor", "local", "--approve", "manual", "--runs-dir", str(runs),
        cwd=tmp_path, fail_at="skill-cache", kill_at="integrator-1:start",
    )  # fmt: skip
    assert code == KILLED, err[-3000:]
    assert "FAILED cache" in err, err[-3000:]
    run = _run_dir(runs)
    quant = run / "skills" / "quantization.json"
    assert quant.is_file() and not (run / "skills" / "cache.json").exists()
    # Recorded in the checkpoint, or still a pending task when the kill beat LangGraph's background
    # writer (then the graph itself runs it again, and resume has nothing to say about it).
    recorded = "quantization" in (driver.outcome(run).values.get("fronts") or {})
    quant.write_text('{"front": [')  # a result file damaged after the fact: unreadable

    notes = []
    out = driver.resume(run.name, runs, on_note=notes.append)
    assert any("quantization.json is unreadable" in n for n in notes) or not recorded, notes
    assert any("cache search failed before the resume" in n for n in notes), notes
    assert out.status == "awaiting approval", out.status
    assert set(out.values["fronts"]) == {"cache", "quantization"}
    assert not out.values.get("failed"), out.values.get("failed")  # recovered: no longer reported as failed
    assert json.loads(quant.read_text())["front"] is not None
    assert any("re-ran the cache search" in n for n in out.values.get("notes", []))


@pytest.mark.slow  # minutes of real searches; the cheap checks below stay in CI
def test_a_rejection_that_leaves_nothing_keeps_the_earlier_candidates_and_a_corrupt_state_is_rebuilt(
    tmp_path, workload
):
    """``reject --feedback min_psnr=nan`` once made a passing candidate unapprovable; now NaN is
    refused, and a round that finds nothing offers the earlier round's candidates again. A truncated
    state.sqlite is listed and refused in one line, and ``sol resume`` rebuilds it from the files."""
    runs = tmp_path / "runs"
    out = driver.start(model="tiny-wan-random", gpu="cpu", workload=workload, effort="quick", skills=["cache"],
                       executor="local", approve="manual", runs_dir=runs)  # fmt: skip
    assert out.status == "awaiting approval", out.status
    first = [c for c in out.interrupt["candidates"] if c["passed"]]
    assert first, out.interrupt["candidates"]
    name = out.run_dir.name

    with pytest.raises(SolError, match="PSNR floor"):
        driver.reject(name, driver.parse_feedback("min_psnr=nan"), runs_dir=runs)
    with pytest.raises(SolError, match="c99"):
        driver.reject(name, driver.parse_feedback("too soft"), candidate="c99", runs_dir=runs)
    with pytest.raises(SolError, match="excludes every skill"):
        driver.reject(name, driver.parse_feedback("exclude=cache"), runs_dir=runs)

    # 100 dB: only an exact technique passes, and the exact part (text K/V reuse) alone is never timed
    out2 = driver.reject(name, driver.parse_feedback("min_psnr=100"), runs_dir=runs)
    assert out2.values["settings"]["round"] == 2
    assert out2.interrupt is not None, out2.status
    assert "round 2" in out2.interrupt["message"] and "round 1" in out2.interrupt["message"]
    assert [c["id"] for c in out2.interrupt["candidates"]] == [c["id"] for c in out.interrupt["candidates"]]
    done = driver.approve(name, first[0]["id"], runs_dir=runs)
    assert done.status.startswith("done: approved"), done.status
    plan = json.loads((out.run_dir / "plan.json").read_text())
    assert plan["approval"]["candidate"] == first[0]["id"]

    state = out.run_dir / "state.sqlite"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # truncated, as after a full disk
    rows = driver.list_runs(runs)
    assert "state.sqlite is unreadable" in rows[0]["status"], rows
    with pytest.raises(SolError, match="sol resume"):
        driver.approve(name, runs_dir=runs)
    notes = []
    rebuilt = driver.resume(name, runs, on_note=notes.append)
    assert any("state.sqlite was unreadable" in n for n in notes), notes
    assert rebuilt.status == "awaiting approval", rebuilt.status  # rebuilt from the files, nothing redone
    assert list(out.run_dir.glob("state.sqlite.corrupt-*"))


def test_an_integrator_failure_is_named_in_the_summary_and_the_report(tmp_path, tiny_workload):
    """A real integrator job that fails (its skill result is readable JSON of the wrong shape): the
    state records why, the run's reason and the report say "the integrator failed", never "no
    candidates were evaluated"."""
    from sol.agent.jobs import write_json
    from sol.agent.nodes import Nodes, no_plan_reason
    from sol.agent.reporting import write_report
    from sol.cluster.executor import LocalExecutor

    run_dir = tmp_path / "run"
    wl_path = tmp_path / "w.json"
    wl_path.write_text(tiny_workload.model_dump_json())
    spec = {"run_id": "r", "run_dir": str(run_dir), "model": "tiny-wan-random", "workload": str(wl_path),
            "skills": ["cache"], "executor": "local", "budget": "near-lossless", "effort": "quick", "gpu": "cpu"}  # fmt: skip
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps(spec))
    front = write_json(run_dir / "skills" / "cache.json", {"front": [{"label": "broken"}]})
    state = {"spec": spec, "fronts": {"cache": str(front)}}
    update = Nodes(LocalExecutor).integrator(state)
    assert "integrator" in update["failed"] and update["integration"] == ""
    state = {**state, **update, "summary": []}
    why = no_plan_reason(state)
    assert why.startswith("the integrator failed"), why
    paths = write_report({**state, "status": f"finished: {why}; no plan exported"})
    md = Path(paths["markdown"]).read_text()
    assert "the integrator failed" in md and "No candidates were evaluated" not in md, md


RAY_CHILD = """
import os, signal, sys, threading
import ray
from sol.cluster.executor import make_executor

made, errors = [], []

def start():
    try:
        made.append(make_executor("ray", run_id="t"))
    except Exception as e:
        errors.append(repr(e))

threads = [threading.Thread(target=start) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(made), errors, os.getpid(), ray._private.worker._global_node.get_session_dir_path(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_ray_starts_once_for_two_agents_and_is_cleaned_up_after_a_sigkill(tmp_path):
    """The cheap Ray check kept in CI: two threads ask for the Ray executor at once (the first resume
    after a kill once failed with "Perhaps you called ray.init twice by accident?"), then the process
    is SIGKILLed; the reaper stops its Ray processes and removes its session folder."""
    p = subprocess.run([sys.executable, "-c", RAY_CHILD], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})  # fmt: skip
    assert p.returncode == KILLED, p.stderr[-3000:]
    assert p.stdout.startswith("2 [] "), p.stdout + p.stderr[-3000:]  # two executors, no error
    pid, session = int(p.stdout.split()[-2]), p.stdout.split()[-1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_ray_leftovers([pid])):
        time.sleep(0.5)
    assert not Path(session).exists(), session
    assert _ray_leftovers([pid]) == ([], [])


def test_a_corrupt_state_is_listed_refused_in_one_line_and_set_aside(tmp_path):
    """The cheap half of the corrupt-state case (the slow test above rebuilds a real run): a truncated
    state.sqlite is found by an integrity check, listed, refused in one line, and moved aside."""
    import sqlite3

    from sol.agent.runs import set_aside_state, state_problem

    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    spec = {"run_id": "r1", "run_dir": str(run_dir), "model": "tiny-wan-random", "workload": "smoke",
            "skills": ["cache"], "executor": "local"}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(spec))
    conn = sqlite3.connect(run_dir / "state.sqlite")
    conn.execute("create table t (x text)")
    conn.executemany("insert into t values (?)", [("x" * 500,)] * 200)
    conn.commit()
    conn.close()
    assert state_problem(run_dir) is None
    state = run_dir / "state.sqlite"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    assert state_problem(run_dir)
    (row,) = driver.list_runs(tmp_path / "runs")
    assert "state.sqlite is unreadable" in row["status"] and "\n" not in row["status"], row
    with pytest.raises(SolError, match="sol resume r1"):
        driver.outcome(run_dir)
    moved = set_aside_state(run_dir)
    assert moved.is_file() and not state.exists() and state_problem(run_dir) is None


def test_a_round_that_finds_nothing_offers_the_earlier_rounds_candidates(tmp_path):
    """The approval step's fallback, without a search: round 2 (after feedback) has no passing
    candidate, so round 1's passing ones are offered again, with a message naming both rounds."""
    from sol.agent.jobs import write_json
    from sol.agent.nodes import _earlier_round

    run_dir = tmp_path / "run"
    cand = {"id": "c1", "label": "cache", "speedup": 2.5, "timing": {}, "fidelity": {"psnr": 36.1},
            "passed": True, "beats_baseline": True, "why": ""}  # fmt: skip
    write_json(run_dir / "candidates-1.json", {"candidates": [cand]})
    write_json(run_dir / "candidates-2.json", {"candidates": [{**cand, "passed": False}]})
    state = {"spec": {"run_dir": str(run_dir), "skills": ["cache"]}, "settings": {"round": 2},
             "summary": [{"id": "c1", "passed": False, "beats_baseline": True}]}  # fmt: skip
    back = _earlier_round(state)
    assert [c["id"] for c in back["summary"] if c["passed"]] == ["c1"]
    assert back["candidates"].endswith("candidates-1.json")
    assert "round 2" in back["message"] and "round 1" in back["message"]
    assert _earlier_round({**state, "settings": {"round": 1}}) == {}


def test_resume_names_each_skill_it_runs_again(tmp_path):
    """What resume says before it starts: a result file missing, one unreadable, a recorded failure;
    nothing once the integration exists (the skills' results are no longer needed)."""
    from sol.agent.driver import _rerun_notes

    (tmp_path / "quantization.json").write_text('{"front": [')
    (tmp_path / "fusion.json").write_text('{"front": []}')
    values = {"spec": {"skills": ["cache", "quantization", "fusion", "token_pruning"]},
              "fronts": {"cache": str(tmp_path / "cache.json"), "quantization": str(tmp_path / "quantization.json"),
                         "fusion": str(tmp_path / "fusion.json")},
              "failed": {"token_pruning": "boom", "integrator": "x"}}  # fmt: skip
    notes = _rerun_notes(values)
    assert notes == [
        "skills/cache.json is missing; the cache search runs again",
        "skills/quantization.json is unreadable; the quantization search runs again",
        "the token_pruning search failed before the resume (boom); it runs again",
    ], notes
    assert _rerun_notes({**values, "integration": "integration-1.json"}) == []
