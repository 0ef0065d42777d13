"""The plan file: round-trip, refusal of other models, and never executing the file."""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from typing import Literal

import pytest

import sol
from sol.errors import SolError
from sol.plan import SCHEMA_VERSION, HardwareRef, ModelRef, Plan, load_plan
from sol.skills import Handle, Seam, Skill, TechniqueConfig, register_skill, unregister_skill


class Scale(TechniqueConfig):
    """A test-only technique: scales the final projection; revert restores it exactly."""

    kind: Literal["test.scale"] = "test.scale"
    factor: float = 1.0


class ScaleSkill(Skill):
    name = "test"
    writes = frozenset({Seam.KERNEL_FUSION})

    def apply(self, pipe, config, adapter):
        w = pipe.transformer.proj_out.weight
        saved = w.detach().clone()
        w.data.mul_(config.factor)
        return Handle(lambda: w.data.copy_(saved))

    def examples(self):
        return [Scale(factor=0.5)]


@pytest.fixture(autouse=True)
def _scale_skill():
    """The test-only technique is registered for each test of this module and removed after it."""
    register_skill(Scale)(ScaleSkill)
    yield
    unregister_skill(Scale)


def _plan_for(loaded, techniques=()):
    return Plan.empty(
        model=ModelRef(name=loaded.name, **loaded.fingerprint.to_json()),
        hardware=HardwareRef(kind="cpu", name="cpu"),
        techniques=list(techniques),
    )


def test_empty_plan_roundtrips_and_applies(tiny, tmp_path):
    plan = _plan_for(tiny)
    path = plan.save(tmp_path / "plan.json")
    again = load_plan(path)
    assert again == plan and again.schema_version == SCHEMA_VERSION
    handle = sol.apply_plan(tiny.pipe, path)
    handle.revert()


def test_plan_with_techniques_roundtrips_and_reverts(tiny, tmp_path):
    plan = _plan_for(tiny, [Scale(factor=0.5)])
    path = plan.save(tmp_path / "plan.json")
    data = json.loads(path.read_text())
    assert data["techniques"] == [{"kind": "test.scale", "version": 1, "factor": 0.5}]
    before = tiny.pipe.transformer.proj_out.weight.detach().clone()
    handle = sol.apply_plan(tiny.pipe, path)
    assert not tiny.pipe.transformer.proj_out.weight.equal(before)
    handle.revert()
    assert tiny.pipe.transformer.proj_out.weight.equal(before)


def test_fingerprint_mismatch_refused_unless_forced(tiny, tmp_path):
    plan = _plan_for(tiny)
    plan.model.weights_hash = "0" * 16
    path = plan.save(tmp_path / "plan.json")
    with pytest.raises(SolError, match="made for model.*weights differ.*force=True"):
        sol.apply_plan(tiny.pipe, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sol.apply_plan(tiny.pipe, path, force=True).revert()
    assert any("applying anyway" in str(w.message) for w in caught)


def test_other_hardware_warns(tiny, tmp_path):
    plan = _plan_for(tiny)
    plan.hardware = HardwareRef(kind="cuda", name="h100")
    with pytest.warns(UserWarning, match="measured on h100"):
        sol.apply_plan(tiny.pipe, plan).revert()


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "newer than this sol supports"),
        (lambda d: d.update(techniques=[{"kind": "no.such.kind"}]), "unknown technique kind 'no.such.kind'"),
        (lambda d: d.update(techniques=[{"kind": "test.scale", "factor": "x"}]), "test.scale"),
        (lambda d: d.update(techniques=[{"kind": "test.scale", "version": 99}]), "version 99 is newer"),
        (lambda d: d.pop("model"), "model"),
        (lambda d: d.pop("schema_version"), "schema_version"),
    ],
)
def test_bad_plans_are_one_line_errors(tiny, tmp_path, mutate, needle):
    data = json.loads(_plan_for(tiny).to_json())
    mutate(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SolError) as e:
        load_plan(path)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_plan_is_never_executed_as_code(tiny, tmp_path):
    # A kind naming a module is looked up in the registry only; nothing is imported.
    data = json.loads(_plan_for(tiny).to_json())
    data["techniques"] = [{"kind": "sol_evil_module_that_must_not_import"}, {"kind": "os.system"}]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SolError, match="unknown technique kind"):
        load_plan(path)
    assert "sol_evil_module_that_must_not_import" not in sys.modules
    # A pickle is refused as not-JSON, never unpickled.
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.json"
    evil.write_bytes(pickle.dumps(_Boom(str(marker))))
    with pytest.raises(SolError):
        load_plan(evil)
    assert not marker.exists()
    with pytest.raises(SolError, match="does not exist"):
        load_plan(tmp_path / "missing.json")


class _Boom:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
