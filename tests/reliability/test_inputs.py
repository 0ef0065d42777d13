"""Every input is validated before work begins: it loads, or it is one ``error:`` line, quickly.

Property-based (hypothesis) over plan files, workload files and rejection feedback: generated and
mutated inputs — wrong types, booleans for numbers, NaN, huge and negative numbers, deep nesting,
unknown fields, broken JSON — either load or raise one :class:`SolError` line, within a time bound.
Then the classes of bad input the hostile-user pass of issue 18 found, each through the command line:
exit code 2, one ``error:`` line, no traceback, no run folder left behind.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sol.agent import driver
from sol.errors import SolError
from sol.plan import SCHEMA_VERSION, HardwareRef, ModelRef, Plan, load_plan
from sol.skills import skills_by_family
from sol.workload import WORKLOAD_DIR, Workload, load_workload

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
TIME_BOUND_S = 5.0  # per input, on a loaded 2-core machine; every one takes milliseconds when quiet

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Raw JSON text that Python's json would read but JSON forbids, deep nesting, and plain junk.
hostile_text = st.one_of(
    st.sampled_from(
        ["NaN", "Infinity", "-Infinity", "[" * 200_000, '{"a":' * 5000, "", "{", "\x00", "\ufeff{}"]
    ),
    st.text(max_size=200),
)


def _one_line(fn):
    """Run ``fn``: it returns, or raises one SolError line; never anything else, never slowly."""
    t0 = time.monotonic()
    try:
        out = fn()
    except SolError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "Traceback" not in msg, msg
        out = None
    assert time.monotonic() - t0 < TIME_BOUND_S
    return out


# --- plans ----------------------------------------------------------------------------------------


def _valid_plan() -> dict:
    """A plan holding one example config of every registered technique, and a workload."""
    techniques = [s.examples()[0] for skills in skills_by_family().values() for s in skills if s.examples()]
    wl = load_workload("default")
    plan = Plan.empty(model=ModelRef(name="m", cls="C", config_hash="a", weights_hash="b"),
                      hardware=HardwareRef(kind="cpu", name="cpu"), techniques=techniques, workload=wl)  # fmt: skip
    return json.loads(plan.to_json())


VALID_PLAN = _valid_plan()


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, (*prefix, i))


PLAN_PATHS = [p for p in _paths(VALID_PLAN) if p]


def _replace(data, path, value):
    data = copy.deepcopy(data)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def test_the_valid_plan_loads():
    assert Plan.from_json(json.dumps(VALID_PLAN)).techniques
    assert VALID_PLAN["schema_version"] == SCHEMA_VERSION


@PROPERTY
@given(path=st.sampled_from(PLAN_PATHS), value=json_values)
def test_a_mutated_plan_loads_or_is_one_error_line(path, value):
    text = json.dumps(_replace(VALID_PLAN, path, value))
    _one_line(lambda: Plan.from_json(text, source="plan.json"))


@PROPERTY
@given(
    path=st.sampled_from(PLAN_PATHS), raw=st.sampled_from(["NaN", "Infinity", "[" * 100 + "]" * 100, "1e999"])
)
def test_a_plan_with_hostile_json_inside_is_one_error_line(path, raw):
    text = json.dumps(_replace(VALID_PLAN, path, "@@HOLE@@")).replace('"@@HOLE@@"', raw)
    _one_line(lambda: Plan.from_json(text, source="plan.json"))


@PROPERTY
@given(data=json_values)
def test_arbitrary_json_as_a_plan_is_one_error_line(data):
    _one_line(lambda: Plan.from_json(json.dumps(data), source="plan.json"))


@PROPERTY
@given(text=hostile_text)
def test_hostile_text_as_a_plan_is_one_error_line(text):
    assert _one_line(lambda: Plan.from_json(text, source="plan.json")) is None


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda d: d["techniques"][0].update(version=None), "version must be a whole number"),
        (lambda d: d.update(schema_version=-5), "schema_version"),
        (lambda d: d.update(schema_version=True), "schema_version"),
        (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "upgrade sol"),
        (lambda d: d["workload"].update(guidance_scale="NaN"), "guidance_scale"),
        (lambda d: d["workload"].update(num_inference_steps=True), "num_inference_steps"),
        (lambda d: d["workload"].update(held_out_prompts=["x"]), "unknown field"),
        (lambda d: d["techniques"].extend([d["techniques"][0]] * 100), "techniques"),
    ],
)
def test_plan_cases_from_the_issue(mutate, expect):
    data = copy.deepcopy(VALID_PLAN)
    mutate(data)
    with pytest.raises(SolError) as e:
        Plan.from_json(json.dumps(data), source="plan.json")
    assert expect in str(e.value) and "Value error" not in str(e.value), str(e.value)


def test_plan_files_too_big_deep_a_folder_or_pickled_are_refused(tmp_path):
    big = tmp_path / "big.json"
    big.write_text('{"x": "' + "a" * (9 * 2**20) + '"}')
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    pickled = tmp_path / "plan.pkl"
    pickled.write_bytes(b"\x80\x04\x95\x00")
    for path, expect in [(big, "MiB"), (deep, "deep"), (tmp_path, "is a folder"), (pickled, "pickled"),
                         (tmp_path / "none.json", "does not exist")]:  # fmt: skip
        with pytest.raises(SolError, match=expect):
            load_plan(path)


# --- workload files ---------------------------------------------------------------------------------

DEFAULT_WL = json.loads((WORKLOAD_DIR / "default.json").read_text())
WL_KEYS = sorted(set(DEFAULT_WL) | set(Workload.model_fields))


@PROPERTY
@given(key=st.sampled_from(WL_KEYS), value=json_values)
def test_a_mutated_workload_file_loads_or_is_one_error_line(tmp_path, key, value):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({**DEFAULT_WL, key: value}))
    wl = _one_line(lambda: load_workload(path))
    if wl is not None:  # what loads is within the documented bounds
        assert math.isfinite(wl.guidance_scale) and wl.num_frames >= 1 and wl.num_inference_steps >= 1
        assert all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in wl.seeds)


@PROPERTY
@given(text=hostile_text)
def test_hostile_text_as_a_workload_is_one_error_line(tmp_path, text):
    path = tmp_path / "w.json"
    path.write_text(text)
    assert _one_line(lambda: load_workload(path)) is None


@pytest.mark.parametrize(
    "change, expect",
    [
        ({"guidance_scale": "NaN"}, "not a JSON number"),
        ({"num_inference_steps": True}, "num_inference_steps"),
        ({"height": 100000, "width": 100000}, "less than or equal to"),
        ({"num_frames": 400001}, "num_frames"),
        ({"seeds": [-1]}, "seeds"),
        ({"name": "../../etc"}, "plain name"),
    ],
)
def test_workload_cases_from_the_issue(tmp_path, change, expect):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({**DEFAULT_WL, **change}).replace('"NaN"', "NaN"))
    with pytest.raises(SolError, match=expect):
        load_workload(path)


# --- feedback ---------------------------------------------------------------------------------------

feedback_words = st.one_of(
    st.sampled_from(["min_psnr=35", "min_psnr=nan", "min_psnr=inf", "min_psnr=-1", "min_psnr=1e9", "min_psnr=",
                     "min_psnr=true", "exclude=", "exclude=,", "exclude=cache", "prefer=", "prefer=c1",
                     "budget=", "budget=lossless", "=", "=5", "too", "soft", "x=y"]),
    st.text(alphabet="abc=,_ .-0123456789naif", max_size=12),
)  # fmt: skip


@PROPERTY
@given(words=st.lists(feedback_words, max_size=6), min_psnr=st.one_of(st.none(), st.floats()))
def test_feedback_parses_or_is_one_error_line(words, min_psnr):
    fb = _one_line(lambda: driver.parse_feedback(" ".join(words), min_psnr=min_psnr))
    if fb is not None and "min_psnr" in fb:
        lo, hi = driver.PSNR_FLOOR_RANGE
        assert math.isfinite(fb["min_psnr"]) and lo <= fb["min_psnr"] <= hi


@pytest.mark.parametrize(
    "text", ["min_psnr=nan", "min_psnr=inf", "min_psnr=-5", "min_psnr=1000", "exclude=,"]
)
def test_feedback_cases_from_the_issue(text):
    with pytest.raises(SolError):
        driver.parse_feedback(text)


# --- the command line: one line, exit 2, no run folder ------------------------------------------------


def _sol(capsys, *args) -> tuple[int, str]:
    from sol.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, expect",
    [
        (["optimize", "--gpu", ""], "--gpu"),
        (["optimize", "--gpu", "cpu", "--skills", ","], "--skills names no skill"),
        (["optimize", "--gpu", "cpu", "--model", "wan2.1-1.3b-arch", "--layers", "100000"], "needs at least"),
        (["optimize", "--gpu", "cpu", "--vbench-python", ""], "--vbench-python"),
        (["generate", "--prompt", "x", "--out", "v.mp4", "--frames", "0"], "--frames 0"),
        (["generate", "--prompt", "x", "--out", "v.mp4", "--guidance", "nan"], "--guidance nan"),
        (["generate", "--prompt", "x", "--out", "v.mp4", "--frames", "400001"], "--frames 400001"),
        (["generate", "--prompt", "x", "--out", "v.mp4", "--plan", "."], "is a folder"),
        (["profile", "--gpu", "cpu", "--model", "tiny-wan-random", "--layers", "0"], "--layers 0"),
        (["resume", "../../etc"], "no run"),
        (["approve", ""], "run id is empty"),
    ],
)
def test_bad_flags_are_one_error_line_and_leave_no_run_folder(tmp_path, monkeypatch, capsys, args, expect):
    monkeypatch.chdir(tmp_path)
    code, err = _sol(
        capsys, *args, *(["--runs-dir", str(tmp_path / "runs")] if args[0] in ("optimize",) else [])
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], err
    assert not (tmp_path / "runs").exists()


def test_generate_checks_the_plan_before_loading_the_model(tmp_path, monkeypatch, capsys):
    """A bad plan is refused before the model loads (it used to load for a minute, then refuse)."""
    import sol.models.loading as loading

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the plan was checked")

    monkeypatch.setattr(loading, "load_model", no_load)
    monkeypatch.setattr("sol.models.load_model", no_load)
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({**VALID_PLAN, "schema_version": "one"}))
    code, err = _sol(
        capsys, "generate", "--prompt", "x", "--out", str(tmp_path / "v.mp4"), "--plan", str(bad)
    )
    assert code == 2 and err.startswith("error:") and "schema_version" in err and len(err.splitlines()) == 1


def test_plan_warnings_and_fingerprint_errors_read_as_the_command_line(tmp_path, capsys, tiny):
    """A plan for another model names --force (not force=True); applying it anyway warns in one line."""
    from sol.cli import _generate_video
    from sol.workload import Workload

    data = copy.deepcopy(VALID_PLAN)
    data["techniques"] = []
    data["hardware"]["name"] = "h100"
    plan = Plan.model_validate(data)
    wl = Workload(
        name="w", prompts=["a red circle"], num_frames=5, height=32, width=32, num_inference_steps=2
    )
    with pytest.raises(SolError, match="pass --force"):
        _generate_video(tiny, wl, tmp_path / "v.mp4", plan, force=False)
    capsys.readouterr()
    _generate_video(tiny, wl, tmp_path / "v.mp4", plan, force=True)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings and all("--force" in w or "measured on" in w for w in warnings), err
    assert "warnings.warn" not in err and ".py:" not in err, err
    assert Path(tmp_path / "v.mp4").is_file()


@pytest.mark.parametrize("text", ["{", "[]", '{"run_id": "r"}', "\x00\x01"])
def test_a_broken_run_record_is_listed_and_refused_in_one_line(tmp_path, monkeypatch, capsys, text):
    """A broken ``run.json`` in the runs folder was a traceback in `sol runs` and `sol resume`."""
    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    (runs / "r1" / "run.json").write_text(text)
    (row,) = driver.list_runs(runs)
    assert row["status"] == "unreadable run.json", row
    for cmd in ("resume", "approve"):
        code, err = _sol(capsys, cmd, "r1", "--runs-dir", str(runs))
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "run.json" in lines[0], err
