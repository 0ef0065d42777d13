"""Workload validation: every bad value is one line naming the fix."""

import json

import pytest

from sol.errors import SolError
from sol.workload import list_workloads, load_workload


def test_shipped_workloads_load():
    assert {"smoke", "default", "long"} <= set(list_workloads())
    for name in list_workloads():
        wl = load_workload(name)
        assert wl.runs and wl.name == name


def test_long_has_more_tokens_than_default():
    d, lg = load_workload("default"), load_workload("long")
    assert lg.num_frames * lg.height * lg.width > 4 * d.num_frames * d.height * d.width


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        # Family rules (Wan's 4k+1 frames, multiples of 16) are the adapters': tests/models/test_families.py.
        ({"num_frames": 0}, "at least 1"),
        ({"width": 0}, "positive"),
        ({"num_inference_steps": 0}, "at least 1"),
        ({"guidance_scale": -1}, ">= 0"),
        ({"prompts": []}, "prompts"),
    ],
)
def test_bad_values_are_one_line_errors(override, needle):
    with pytest.raises(SolError) as e:
        load_workload("smoke", **override)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unknown_name_and_bad_file(tmp_path):
    with pytest.raises(SolError, match="unknown workload 'nope'.*smoke"):
        load_workload("nope")
    bad = tmp_path / "w.json"
    bad.write_text("{not json")
    with pytest.raises(SolError, match="not valid JSON"):
        load_workload(bad)
    extra = tmp_path / "x.json"
    extra.write_text(json.dumps({"name": "x", "prompts": ["a"], "framez": 3}))
    with pytest.raises(SolError, match="framez"):
        load_workload(extra)
