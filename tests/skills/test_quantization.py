"""Quantization skill: the shared contract, the config's rules, schemes by hardware, the search."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from sol.bench.evaluate import CandidateResult, Evaluator
from sol.errors import SolError
from sol.hardware import Hardware, detect_cpu
from sol.skills import SearchContext, config_from_dict, skill_for
from sol.skills.quantization import SCHEMES, QuantizeLinear, quantize
from sol.skills.quantization import sensitivity as sens
from sol.skills.quantization.skill import NOTES_KEY
from tests.skills.skill_mixin import SkillContract

CPU = detect_cpu()
H100 = Hardware("cuda", "h100", "NVIDIA H100", (9, 0))
A100 = Hardware("cuda", "a100", "NVIDIA A100", (8, 0))


class TestQuantizationContract(SkillContract):
    kinds = ("quantization.linear",)


@pytest.fixture(scope="module")
def ev(tiny, tiny_workload, tmp_path_factory):
    """One untimed evaluator for the module (its baseline runs once); outputs saved for comparison."""
    return Evaluator(
        tiny, tiny_workload, repeats=1, warmup=0, timing=False, output_dir=tmp_path_factory.mktemp("ev")
    )


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _clone_pipe(pipe):
    import copy

    components = dict(pipe.components)
    components["transformer"] = copy.deepcopy(pipe.transformer)
    clone = type(pipe)(**components)
    clone.set_progress_bar_config(disable=True)
    return clone


# --- the config ---------------------------------------------------------------------------------


NAMES = ["blocks.0.attn1.to_q", "blocks.0.ffn.net.0.proj", "blocks.1.ffn.net.2", "blocks.10.ffn.net.2"]


def test_rules_first_match_wins_and_regex_is_a_full_match():
    cfg = QuantizeLinear(
        rules=[
            {"match": "blocks.1.ffn.net.2", "scheme": "none"},
            {"match": r"re:blocks\.1\d*\.ffn\..*", "scheme": "int8_dynamic"},
            {"match": "re:ffn", "scheme": "int8_dynamic"},  # full match: matches nothing
        ]
    )
    assert cfg.assignment(NAMES) == {"blocks.10.ffn.net.2": "int8_dynamic"}


def test_shorthand_is_stored_as_rules_and_roundtrips():
    cfg = QuantizeLinear(
        scheme="int8_dynamic", include=[r"re:.*\.ffn\..*"], exclude=["blocks.0.ffn.net.0.proj"]
    )
    assert cfg.assignment(NAMES) == {
        "blocks.1.ffn.net.2": "int8_dynamic",
        "blocks.10.ffn.net.2": "int8_dynamic",
    }
    data = json.loads(json.dumps(cfg.model_dump(mode="json")))
    assert set(data) == {"kind", "version", "rules"}
    assert config_from_dict(data) == cfg
    assert QuantizeLinear(scheme="int8_dynamic").assignment(NAMES) == dict.fromkeys(NAMES, "int8_dynamic")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"rules": [{"match": "re:(", "scheme": "int8_dynamic"}]}, "regular expression"),
        ({"rules": [{"match": "x", "scheme": "int3"}]}, "scheme"),
        ({"scheme": "int8_dynamic", "rules": []}, "not both"),
        ({"scheme": "int8_dynamic", "exclude": "blocks.0.ffn"}, "list"),
        ({"rules": []}, "rules"),
    ],
)
def test_bad_configs_are_one_line_errors(data, message):
    with pytest.raises(SolError, match=message) as err:
        config_from_dict({"kind": "quantization.linear", **data})
    assert "\n" not in str(err.value)


def test_resolve_refuses_unknown_exact_names_and_empty_assignments():
    with pytest.raises(SolError, match="names no linear layer"):
        QuantizeLinear(scheme="int8_dynamic", include=["blocks.99.ffn.net.2"]).resolve(NAMES)
    with pytest.raises(SolError, match="no rule quantizes"):
        QuantizeLinear(scheme="int8_dynamic", include=[r"re:.*\.norm"]).resolve(NAMES)


def test_labels_are_short_and_tell_configs_apart():
    many = [f"blocks.{i}.ffn.net.2" for i in range(10)]
    a = QuantizeLinear(scheme="int8_dynamic", exclude=many)
    b = QuantizeLinear(scheme="int8_dynamic", exclude=many[:-1])
    assert len(a.label()) < 120 and a.label() != b.label()


# --- schemes by hardware ------------------------------------------------------------------------


def test_schemes_say_why_they_cannot_run():
    assert SCHEMES["int8_dynamic"].available(CPU) is None
    for name in ("torchao_fp8", "torchao_int8", "bnb_int8", "bnb_nf4"):
        assert "CUDA" in SCHEMES[name].available(CPU)
    assert "8.9" in SCHEMES["torchao_fp8"].available(A100)
    assert "cpu only" in SCHEMES["int8_dynamic"].available(H100).lower()
    # On a GPU the only remaining reason can be the missing package, with the install hint.
    why = SCHEMES["torchao_fp8"].available(H100)
    assert why is None or "sol[gpu]" in why


def test_int8_dynamic_in_a_bfloat16_model_casts_around_the_int8_layer():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32).to(torch.bfloat16)
    q = SCHEMES["int8_dynamic"].convert(lin)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        ref, out = lin(x).float(), q(x)
    assert out.dtype == torch.bfloat16
    assert float((out.float() - ref).norm() / ref.norm()) < 0.05
    assert isinstance(lin, nn.Linear) and lin.weight.dtype == torch.bfloat16  # the original is untouched


def test_gpu_only_scheme_on_cpu_is_a_clear_error_and_changes_nothing(tiny):
    pipe = _clone_pipe(tiny.pipe)
    before = _state(pipe.transformer)
    with pytest.raises(SolError) as err:
        quantize(pipe, QuantizeLinear(scheme="torchao_fp8"))
    msg = str(err.value)
    assert "\n" not in msg and "torchao_fp8" in msg and "CUDA" in msg and "int8_dynamic" in msg
    assert _same_state(before, _state(pipe.transformer))
    assert all(isinstance(m, nn.Linear) for m in tiny.adapter.linear_layers().values())


def test_gpu_only_scheme_is_a_failed_candidate_not_a_crash(ev):
    res = ev.evaluate([QuantizeLinear(scheme="bnb_nf4")])
    assert not res.ok and "bnb_nf4" in res.reason and "CUDA" in res.reason


def test_quantizing_twice_is_refused(tiny):
    pipe = _clone_pipe(tiny.pipe)
    quantize(pipe, QuantizeLinear(scheme="int8_dynamic"))
    with pytest.raises(SolError, match="already quantized"):
        quantize(pipe, QuantizeLinear(scheme="int8_dynamic"))


def test_apply_swaps_only_the_selected_layers(tiny):
    pipe = _clone_pipe(tiny.pipe)
    cfg = QuantizeLinear(
        scheme="int8_dynamic", include=[r"re:blocks\.\d+\.ffn\..*"], exclude=["blocks.0.ffn.net.2"]
    )
    done = quantize(pipe, cfg)
    layers = dict(pipe.transformer.named_modules())
    assert done and all(".ffn." in n for n in done) and "blocks.0.ffn.net.2" not in done
    for n, m in layers.items():
        if n in done:
            assert not isinstance(m, nn.Linear), n
    assert isinstance(layers["blocks.0.ffn.net.2"], nn.Linear)
    assert isinstance(layers["blocks.0.attn1.to_q"], nn.Linear)


# --- irreversible: the evaluator's copy, and the plan in a fresh process -------------------------


def test_evaluator_never_touches_the_original_weights(tiny, tiny_workload, ev):
    before = _state(tiny.pipe.transformer)
    base = ev.baseline_outputs
    results = [ev.evaluate([c]) for c in skill_for(QuantizeLinear(scheme="int8_dynamic")).examples()]
    assert all(r.ok for r in results), [r.reason for r in results]
    assert all(r.psnr < math.inf for r in results)  # it really quantized something
    assert _same_state(before, _state(tiny.pipe.transformer))
    assert not hasattr(tiny.pipe.transformer, "_sol_quantization")
    from sol.bench.runner import generate

    with torch.no_grad():
        again = generate(tiny.pipe, tiny_workload)
    assert all(np.array_equal(a, b) for a, b in zip(base, again, strict=True))


REAPPLY = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np, torch
    warnings.filterwarnings("ignore")
    import sol
    from sol.bench.runner import generate
    from sol.models import load_model
    plan = sol.load_plan(sys.argv[1])
    loaded = load_model("tiny-wan-random")
    sol.apply_plan(loaded.pipe, plan)
    with torch.no_grad():
        videos = generate(loaded.pipe, plan.workload)
    np.save(sys.argv[2], np.stack(videos))
    """
)


def test_plan_reapplied_in_a_fresh_process_gives_the_measured_outputs(tiny, tiny_workload, ev, tmp_path):
    from sol.hardware import detect
    from sol.plan import HardwareRef, ModelRef, Plan

    cfg = skill_for(QuantizeLinear(scheme="int8_dynamic")).examples()[1]
    res = ev.evaluate([cfg])
    assert res.ok, res.reason
    fp = tiny.fingerprint
    plan = Plan.empty(
        model=ModelRef(
            name="tiny-wan-random", cls=fp.cls, config_hash=fp.config_hash, weights_hash=fp.weights_hash
        ),
        hardware=HardwareRef(**detect().to_json()),
        techniques=[cfg],
        workload=tiny_workload,
    )
    path = plan.save(tmp_path / "plan.json")
    out = tmp_path / "reapplied.npy"
    proc = subprocess.run(
        [sys.executable, "-c", REAPPLY, str(path), str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = np.load(out)
    # Same process, same config on a copy: bit-identical to the fresh process.
    pipe = _clone_pipe(tiny.pipe)
    quantize(pipe, cfg)
    from sol.bench.runner import generate

    with torch.no_grad():
        here = np.stack(generate(pipe, tiny_workload))
    assert np.array_equal(fresh, here)
    # And the evaluator measured exactly these outputs (it stores them as float16).
    measured = np.stack([np.load(p) for p in res.outputs])
    assert np.array_equal(measured, fresh.astype(np.float16))


# --- sensitivity and search ---------------------------------------------------------------------


def test_scan_ranks_groups_and_leaves_the_model_as_it_was(tiny, tiny_workload):
    before = _state(tiny.pipe.transformer)
    calib = sens.capture(tiny.pipe, tiny.adapter, tiny_workload, max_calls=2)
    report = sens.scan(tiny.adapter, calib, SCHEMES["int8_dynamic"], timing_repeats=1, split_top=1)
    assert _same_state(before, _state(tiny.pipe.transformer))
    assert all(isinstance(m, nn.Linear) for m in tiny.adapter.linear_layers().values())
    n_blocks = len(tiny.adapter.blocks())
    group_scan = report.extra["group_scan"]
    assert set(group_scan) == {f"blocks.{i}.{c}" for i in range(n_blocks) for c in ("attn1", "attn2", "ffn")}
    # The group that drifts most is re-scanned layer by layer; units still partition the linears.
    (split,) = report.extra["split"]
    assert group_scan[split] == max(group_scan.values())
    units = {g.group for g in report.groups}
    assert split not in units and {n for n in units if n.startswith(split + ".")}
    layers = [n for g in report.groups for n in g.layers]
    assert sorted(layers) == sorted(tiny.adapter.linear_layers())
    assert all(g.rel_err > 0 for g in report.groups) and report.all_rel_err > 0
    assert set(report.layers) == set(tiny.adapter.linear_layers())
    # Quadrature: every group's drift together predicts the measured all-quantized drift roughly.
    predicted = report.predict_rel_err([g.group for g in report.groups])
    assert 0.3 < predicted / report.all_rel_err < 3.0
    assert sens.Report.from_json(json.loads(json.dumps(report.to_json()))).to_json() == report.to_json()


def test_synthetic_calibration_without_a_pipeline(tiny, tiny_workload):
    calib = sens.synthetic(tiny.adapter, tiny_workload, max_calls=1)
    assert calib.source == "synthetic" and len(calib.outputs) == 1
    assert set(calib.linear_shapes) == set(tiny.adapter.linear_layers())


def _report(errs: list[float], faster: list[bool]) -> sens.Report:
    groups = [
        sens.GroupSensitivity(f"blocks.{i}.ffn", sens.group_pattern(f"blocks.{i}.ffn", ["x", "y"]),
                              [f"blocks.{i}.ffn.net.0.proj", f"blocks.{i}.ffn.net.2"], e, 0.01 if f else 0.0)
        for i, (e, f) in enumerate(zip(errs, faster, strict=True))
    ]  # fmt: skip
    layers = {
        n: sens.LayerSpeed([64, 8, 8], 2.0, 1.0 if f else 3.0)
        for g, f in zip(groups, faster, strict=True)
        for n in g.layers
    }
    return sens.Report("int8_dynamic", {"source": "test"}, groups, layers, 0.1)


def test_candidates_keep_slow_layers_and_the_most_sensitive_groups():
    skill = skill_for(QuantizeLinear(scheme="int8_dynamic"))
    report = _report([0.01, 0.05, 0.02, 0.001], [True, True, True, False])
    cands = skill.candidates(report)
    names = [n for g in report.groups for n in g.layers]
    assert cands["uniform"].assignment(names) == dict.fromkeys(names, "int8_dynamic")
    fast = cands["fast"].assignment(names)
    assert "blocks.3.ffn.net.2" not in fast and "blocks.0.ffn.net.2" in fast
    top1 = cands["fast-top1"].assignment(names)
    assert not any(n.startswith("blocks.1.") for n in top1)  # the most sensitive group is kept
    assert "blocks.0.ffn.net.2" in top1


def test_refine_adds_the_mix_that_just_meets_the_budget(tiny, tiny_workload):
    skill = skill_for(QuantizeLinear(scheme="int8_dynamic"))
    report = _report([0.01, 0.05, 0.02, 0.001], [True] * 4)
    ctx = SearchContext(tiny.adapter, CPU, tiny_workload, budget={"min_psnr": 40.0})
    ctx.notes[NOTES_KEY] = {"report": report.to_json()}
    uniform = skill.candidates(report)["uniform"]
    # Uniform (predicted drift ~0.055) screened at 30 dB: 40 dB needs the drift 10 dB lower.
    screened = CandidateResult("u", [uniform.model_dump(mode="json")], "tiny", True, fidelity={"psnr": 30.0})
    added = skill.refine(ctx, [screened])
    assert added and uniform not in added
    names = [n for g in report.groups for n in g.layers]
    first = added[0].assignment(names)
    assert not any(n.startswith("blocks.1.") for n in first)  # dropped the biggest drift first


def test_search_reports_front_evidence_and_unavailable_schemes(tiny, tiny_workload):
    from sol.integrator.skill_search import search_skill

    ctx = SearchContext(tiny.adapter, CPU, tiny_workload, budget={"min_psnr": 30.0})
    ctx.notes[NOTES_KEY] = {"calibration_calls": 2, "timing_repeats": 1, "top_k_groups": [1]}
    timed = Evaluator(tiny, tiny_workload, repeats=1, warmup=0)
    front = search_skill("quantization", ctx, timed, timed, top_k=2)
    assert front.screened and all(r.ok for r in front.screened), [r.reason for r in front.screened]
    assert front.front
    for scheme in ("torchao_fp8", "torchao_int8", "bnb_int8", "bnb_nf4"):
        assert "CUDA" in front.unavailable[f"quantization.linear:{scheme}"]
    assert "int8_dynamic" not in " ".join(front.unavailable)
    assert front.notes["report"]["groups"] and "uniform" in front.notes["candidates"]
    json.dumps(front.to_json())
