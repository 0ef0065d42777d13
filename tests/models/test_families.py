"""Every model family on tiny random pipelines built in code (as diffusers' own fast tests build
their dummy components), saved with ``save_pretrained`` and loaded back from the folder:
SANA-Video, LTX-2, Cosmos3, HunyuanVideo 1.5 and Wan 2.2 (two experts).

- the folder loads as its family, fingerprinted over every denoiser;
- workload rules come from the family (frames, size multiple, text length, guider);
- every registered technique applies (and reverts bit-identically) or is refused with the
  family's reason; the shared skill contract holds for each one that applies;
- self-attention from q/k/v, the modulated input and text K/V reuse (masks included) are exact;
- block caches bypass every stream of a two-stream block.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from sol.bench.runner import Probes, count_calls, generate
from sol.errors import SolError
from sol.models import Capability, adapter_for, fingerprint, load_model
from sol.models.builders import build_preset
from sol.skills import apply_all, config_from_dict, registered_kinds, skill_for
from sol.skills.cache import BlockResidualCacheConfig, TextKVCacheConfig
from sol.workload import Workload
from tests.skills.skill_mixin import SkillContract

# family -> tiny preset. Wan 2.2 stands for the two-expert case (Wan 2.1 is tests/models' `tiny`).
FAMILIES = {
    "sana_video": "tiny-sana-video-random",
    "ltx2": "tiny-ltx2-random",
    "cosmos3": "tiny-cosmos3-random",
    "hunyuan_video15": "tiny-hunyuan-video1.5-random",
    "wan": "tiny-wan2.2-random",
}
# Fits every family: 8k+1 frames (LTX-2), multiples of 32 (SANA-Video, LTX-2, Cosmos3), CFG 5
# (the tiny HunyuanVideo 1.5 guider's scale), a prompt shorter than max_sequence_length (padded:
# masked cross-attention on SANA-Video and LTX-2).
WL = Workload(
    name="families",
    prompts=["a red circle moving right"],
    num_frames=9,
    height=32,
    width=32,
    num_inference_steps=3,
    guidance_scale=5.0,
    max_sequence_length=12,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: a second thread only waits on a shared machine
    yield
    torch.set_num_threads(n)


@functools.cache
def _folder(preset: str, root: str) -> str:
    from pathlib import Path

    path = Path(root) / preset
    build_preset(preset).save_pretrained(path, safe_serialization=True)
    return str(path)


@functools.cache
def family_model(family: str, root: str):
    """The family's tiny pipeline, loaded from the folder ``save_pretrained`` wrote."""
    return load_model(_folder(FAMILIES[family], root))


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("family-folders"))


@pytest.fixture(scope="module", params=list(FAMILIES))
def fam(request, folders):
    return request.param, family_model(request.param, folders)


def _run(pipe, wl=WL):
    with torch.no_grad():
        return generate(pipe, wl)


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@functools.cache
def _baseline(family: str, root: str):
    return _run(family_model(family, root).pipe)


# --- loading, fingerprints, workload rules -----------------------------------------------------------


def test_the_folder_loads_as_its_family_and_every_denoiser_is_fingerprinted(fam):
    family, m = fam
    a = m.adapter
    assert a.family == family and m.source.startswith("folder")
    fp = fingerprint(m.pipe)
    if family == "wan":  # Wan 2.2 A14B: two experts, both in the fingerprint
        assert [e.name for e in a.experts] == ["transformer", "transformer_2"] and len(fp.experts) == 2
    else:
        assert len(a.experts) == 1 and fp.cls == type(m.pipe.transformer).__name__
    info = a.describe()
    assert info["family"] == family and info["blocks"] == len(a.blocks()) > 0
    # Every capability the family lacks says why (docs/models.md is written from these).
    assert set(info["missing"]) == {str(c) for c in Capability} - set(info["capabilities"])
    assert all(isinstance(why, str) and len(why) > 20 for why in info["missing"].values()), info["missing"]
    assert a.linear_layers() and a.call_probes()["blocks"] == list(a.blocks())


def test_workload_rules_are_the_familys_and_a_misfit_is_one_line(fam):
    family, m = fam
    rules = m.adapter.workload_rules(m.pipe)
    m.adapter.check_workload(WL, m.pipe)  # the shared test workload fits every family
    frames = rules.frame_step + 2  # never frame_step*k + 1
    with pytest.raises(
        SolError, match=rf"num_frames={frames} must be {rules.frame_step}k\+1 for {family}"
    ) as e:
        m.adapter.check_workload(WL.model_copy(update={"num_frames": frames}), m.pipe)
    assert "\n" not in str(e.value) and "try" in str(e.value)
    bad = rules.size_multiple + rules.size_multiple // 2
    with pytest.raises(SolError, match=rf"height={bad} must be a multiple of {rules.size_multiple}"):
        m.adapter.check_workload(WL.model_copy(update={"height": bad}), m.pipe)
    expected = {
        "ltx2": (8, 32),
        "sana_video": (4, 32),
        "cosmos3": (4, 32),
        "hunyuan_video15": (4, 16),
        "wan": (4, 16),
    }
    assert (rules.frame_step, rules.size_multiple) == expected[family]
    if family == "hunyuan_video15":  # guidance comes from the pipeline's guider, not a call argument
        with pytest.raises(SolError, match=r"guider \(5.0\)"):
            m.adapter.check_workload(WL.model_copy(update={"guidance_scale": 6.0}), m.pipe)


def test_the_architecture_presets_keep_published_widths():
    from sol.models.builders import PRESETS

    def width(name):
        return PRESETS[name][1]

    assert width("sana-video-2b-arch")["num_heads"] * width("sana-video-2b-arch")["head_dim"] == 2240
    assert width("ltx2-arch")["num_heads"] * width("ltx2-arch")["head_dim"] == 4096
    assert (
        width("cosmos3-nano-arch")["hidden_size"] == 4096 and width("cosmos3-nano-arch")["num_layers"] == 36
    )
    assert width("hunyuan-video-1.5-arch")["num_heads"] * width("hunyuan-video-1.5-arch")["head_dim"] == 2048
    assert width("wan2.2-a14b-arch")["boundary_ratio"] == 0.875
    # --layers keeps the width and builds the family's real pipeline class (one layer here: seconds).
    pipe = build_preset("sana-video-2b-arch", layers=1)
    assert type(pipe).__name__ == "SanaVideoPipeline" and len(adapter_for(pipe).blocks()) == 1
    assert pipe.transformer.config.num_attention_heads * pipe.transformer.config.attention_head_dim == 2240


# --- every technique: applies (reverting exactly) or is refused with the family's reason -------------


def _outcome(family: str, root: str, config) -> str:
    """``applied`` (ran, finite, reverted bit-identically) or ``refused: <reason>`` (once per config)."""
    return _outcome_of(family, root, json.dumps(config.model_dump(mode="json"), sort_keys=True))


@functools.cache
def _outcome_of(family: str, root: str, config_json: str) -> str:
    config = config_from_dict(json.loads(config_json))
    m = family_model(family, root)
    skill = skill_for(config)
    if not skill.reversible:
        from sol.bench.evaluate import Evaluator

        res = Evaluator(m, WL, repeats=1, warmup=0, timing=False).evaluate([config])
        if res.ok:
            return "applied"
        return f"refused: {res.reason}"
    try:
        applied = apply_all(m.pipe, [config], m.adapter)
    except SolError as e:
        return f"refused: {e}"
    try:
        out = _run(m.pipe)
    finally:
        applied.revert()
    assert all(np.isfinite(v).all() for v in out), f"{config.kind} on {family}: NaN/Inf"
    assert _same(_run(m.pipe), _baseline(family, root)), (
        f"{config.kind} on {family} left the pipeline changed"
    )
    return "applied"


# Wan 2.1 runs every technique in the skills' own tests (Wan 2.2's two experts: test_adapter_contract);
# HunyuanVideo 1.5's ~2,000 conditioning tokens make it the slow one. Both run with -m slow.
@pytest.mark.parametrize(
    "family",
    [
        "sana_video",
        "ltx2",
        "cosmos3",
        pytest.param("hunyuan_video15", marks=pytest.mark.slow),
        pytest.param("wan", marks=pytest.mark.slow),
    ],
)
def test_every_technique_applies_or_is_refused_with_a_reason(family, folders):
    outcomes = {}
    for kind, cls in sorted(registered_kinds().items()):
        if kind.startswith("test."):
            continue  # test-only skills registered by other modules' fixtures
        config = skill_for(cls.model_construct(kind=kind)).examples()[0]
        outcomes[kind] = _outcome(family, folders, config)
    refused = {k: v for k, v in outcomes.items() if v != "applied"}
    for kind, why in refused.items():
        # One line, naming the technique and a reason (the family's, for a missing capability).
        assert why.startswith("refused: ") and len(why) > 40 and "\n" not in why, (kind, why)
    # What each family must accelerate with (docs/models.md's table), whatever else joins later.
    must = {
        "sana_video": {"cache.text_kv", "cache.block_residual", "cache.step_output", "quantization.linear"},
        "ltx2": {"cache.text_kv", "cache.block_residual", "cache.step_output", "quantization.linear"},
        "cosmos3": {"cache.block_residual", "quantization.linear"},
        "hunyuan_video15": {"cache.block_residual", "cache.step_output", "quantization.linear"},
        "wan": {"cache.text_kv", "cache.block_residual", "cache.diffusers_fbc", "quantization.linear"},
    }[family]
    assert must <= {k for k, v in outcomes.items() if v == "applied"}, refused


def test_sparse_attention_is_refused_on_sana_video_with_the_reason(folders):
    m = family_model("sana_video", folders)
    why = m.adapter.missing_reason(Capability.SELF_ATTENTION_QKV)
    assert "linear attention" in why
    for kind, cls in registered_kinds().items():
        skill = skill_for(cls.model_construct(kind=kind))
        if Capability.SELF_ATTENTION_QKV in skill.requires:
            with pytest.raises(SolError, match="linear attention"):
                apply_all(m.pipe, skill.examples()[:1], m.adapter)


# --- exactness of the adapter contract ---------------------------------------------------------------


def _captured(module, pipe):
    """(args, kwargs, output) of ``module``'s first call in one short generation."""
    seen = {}

    def pre(_m, args, kwargs):
        seen.setdefault("call", (args, dict(kwargs)))

    def post(_m, _args, out):
        seen.setdefault("out", out)

    h1 = module.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = module.register_forward_hook(post)
    try:
        _run(pipe, WL.model_copy(update={"num_inference_steps": 1}))
    finally:
        h1.remove()
        h2.remove()
    return (*seen["call"], seen["out"])


@pytest.mark.parametrize("family", ["ltx2", "wan"])
def test_self_attention_from_qkv_is_bit_identical_to_the_processor(family, folders):
    m = family_model(family, folders)
    a = m.adapter
    attn = next(iter(a.self_attention_modules().values()))
    args, kwargs, out = _captured(attn, m.pipe)
    hs = kwargs.get("hidden_states", args[0] if args else None)
    # LTX-2 passes its RoPE by keyword; Wan's block calls attn1(hidden_states, None, None, rotary_emb).
    rope = kwargs.get("query_rotary_emb", kwargs.get("rotary_emb", args[3] if len(args) > 3 else None))
    with torch.no_grad():
        assert torch.equal(a.self_attention(attn, attn.processor, hs, rope), out)


def test_ltx23_gated_attention_keeps_its_gates_and_timestep_modulated_prompts_refuse_text_kv():
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(0)
    t = LTX2VideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
        audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=8,
        audio_cross_attention_dim=16, num_layers=1, caption_channels=32, gated_attn=True, cross_attn_mod=True,
        rope_type="split", rope_double_precision=False,
    ).eval()  # fmt: skip
    a = adapter_for(t)
    attn = a.blocks()[0].attn1
    hs = torch.randn(1, 6, 32)
    with torch.no_grad():
        assert torch.equal(a.self_attention(attn, attn.processor, hs), attn(hs))
    with pytest.raises(SolError, match="modulates the prompt by the timestep"):
        skill_for(TextKVCacheConfig()).apply(None, TextKVCacheConfig(), a)


@pytest.mark.parametrize("family", ["sana_video", "ltx2", "hunyuan_video15", "wan"])
def test_modulated_input_is_what_the_block_feeds_its_self_attention(family, folders):
    m = family_model(family, folders)
    a = m.adapter
    block = a.blocks()[0]
    attn = next(iter(a.self_attention_modules().values()))
    bargs, bkw, _ = _captured(block, m.pipe)
    aargs, akw, _ = _captured(attn, m.pipe)
    io = a.block_io
    hs, temb = io.ref(io.hidden_states).get(bargs, bkw), io.ref(io.modulation).get(bargs, bkw)
    with torch.no_grad():
        mod = a.modulated_input(block, hs, temb)
    assert torch.equal(mod, akw.get("hidden_states", aargs[0] if aargs else None))


@pytest.mark.parametrize("family", ["sana_video", "ltx2"])
def test_text_kv_reuse_honours_the_prompt_mask_exactly(family, folders):
    m = family_model(family, folders)
    masks = []
    attn = next(iter(m.adapter.cross_attention_modules().values()))
    h = attn.register_forward_pre_hook(
        lambda _m, _a, kw: masks.append(kw.get("attention_mask")), with_kwargs=True
    )
    try:
        applied = apply_all(m.pipe, [TextKVCacheConfig()], m.adapter)
        try:
            out = _run(m.pipe)
            work = applied.counters()
        finally:
            applied.revert()
    finally:
        h.remove()
    # Cross-attention ran with the pipeline's mask (SANA-Video's pads the prompt; LTX-2's connectors
    # hand on a mask of ones), through the cached keys and values, and stayed exact.
    assert masks and all(mk is not None for mk in masks)
    if family == "sana_video":
        assert all((mk < 0).any() for mk in masks)
    assert _same(out, _baseline(family, folders))
    assert work["text_kv_reused"] > 0 and work["text_kv_passed"] == 0


@pytest.mark.parametrize("family", ["sana_video", "ltx2", "wan"])
def test_cross_attention_from_cached_kv_applies_a_padding_mask_as_the_processor(family, folders):
    m = family_model(family, folders)
    a = m.adapter
    attn = next(iter(a.cross_attention_modules().values()))
    args, kwargs, _ = _captured(attn, m.pipe)
    hs = kwargs.get("hidden_states", args[0] if args else None)
    text = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
    # A padding bias as the transformers build it ([B, 1, L], -10000 where padded): last 5 tokens off.
    keep = torch.ones(text.shape[:2])
    keep[:, -5:] = 0
    mask = ((1 - keep) * -10000.0).unsqueeze(1)
    with torch.no_grad():
        ref = attn(hs, encoder_hidden_states=text, attention_mask=mask)
        key, value = a.text_kv(attn, text)
        got = a.cross_attention_from_kv(attn, attn.processor, hs, key, value, mask)
        unmasked = a.cross_attention_from_kv(attn, attn.processor, hs, key, value)
    assert torch.equal(got, ref) and not torch.equal(unmasked, ref)


@pytest.mark.parametrize("family", ["ltx2", "cosmos3", "hunyuan_video15"])
def test_block_caches_bypass_every_stream_of_two_stream_blocks(family, folders):
    m = family_model(family, folders)
    assert len(m.adapter.block_io.streams) == 2
    with count_calls(m.adapter) as dense:
        _run(m.pipe)
    probes = []
    applied = apply_all(
        m.pipe,
        [BlockResidualCacheConfig(threshold=100.0, warmup_steps=1)],  # skip every step it may
        m.adapter,
        instrument=lambda: probes.append(Probes(m.adapter)) or probes[-1],
    )
    try:
        out = _run(m.pipe)
    finally:
        applied.revert()
    assert probes[0].counts["blocks"] < dense["blocks"]
    assert all(np.isfinite(v).all() for v in out) and not _same(out, _baseline(family, folders))


# --- the shared skill contract, per family, for every technique that applies ---------------------------


class _FamilyContract(SkillContract):
    """SkillContract on one family: ``tiny`` is its folder-loaded pipeline, kinds are those that apply."""

    family = ""
    kinds = tuple(k for k in registered_kinds() if not k.startswith("test."))

    @pytest.fixture
    def tiny(self, folders):
        return family_model(self.family, folders)

    @pytest.fixture
    def tiny_workload(self):
        return WL

    @pytest.fixture(autouse=True)
    def _root(self, folders):
        self._folders = folders

    def configs(self):
        return [c for c in super().configs() if _outcome(self.family, self._folders, c) == "applied"]

    def test_effect_check_refuses_conflicts(self, tiny):
        # Other kinds may need a capability this family lacks and be refused for that first; the seam
        # conflicts are the family-independent part, so they are checked without the model.
        class SeamsOnly:
            adapter = None
            pipe = tiny.pipe

        super().test_effect_check_refuses_conflicts(SeamsOnly())


class TestSanaVideoContract(_FamilyContract):
    family = "sana_video"


class TestLTX2Contract(_FamilyContract):
    family = "ltx2"


class TestCosmos3Contract(_FamilyContract):
    family = "cosmos3"


@pytest.mark.slow  # ~2,000 text, glyph and image tokens in every joint attention: the slowest tiny family
class TestHunyuanVideo15Contract(_FamilyContract):
    family = "hunyuan_video15"


# --- end to end: a folder through sol profile, sol optimize and sol apply --------------------------------


@pytest.mark.slow  # a full search per family: minutes each on this CPU
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_family_folder_goes_through_profile_optimize_and_apply(family, folders, tmp_path):
    import subprocess
    import sys

    folder = _folder(FAMILIES[family], folders)
    wl = tmp_path / "wl.json"
    wl.write_text(json.dumps({**WL.model_dump(mode="json"), "num_inference_steps": 8}))
    sol = [sys.executable, "-m", "sol.cli"]

    def run(*args, timeout=1800):
        p = subprocess.run([*sol, *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, (args[0], p.stderr[-3000:])
        return p

    run(
        "profile", "--model", folder, "--gpu", "cpu", "--workload", str(wl), "--out", str(tmp_path / "p.json")
    )
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["model_info"]["family"] == family and prof["tokens_per_frame_sequence"] > 0
    run("optimize", "--model", folder, "--gpu", "cpu", "--workload", str(wl), "--effort", "quick",
        "--executor", "local", "--approve", "auto", "--runs-dir", str(tmp_path / "runs"))  # fmt: skip
    run_dir = next((tmp_path / "runs").iterdir())
    summary = (run_dir / "summary.md").read_text()
    # The report says which techniques ran on this model and which were refused, and why.
    assert f"## Techniques on this model ({family})" in summary and "| measured |" in summary
    if family != "wan":
        assert "| refused | needs " in summary
    plan = run_dir / "plan.json"
    assert plan.is_file(), summary  # some technique beat the baseline within the budget
    run(
        "apply",
        str(plan),
        "--model",
        folder,
        "--prompt",
        "a blue square moving up",
        "--out",
        "a.mp4",
        "--gpu",
        "cpu",
    )
    assert (tmp_path / "a.mp4").stat().st_size > 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_pab_applies_to_a_pipeline_that_never_ran(family):
    """`sol apply` in a fresh process applies before the pipeline's first call: HunyuanVideo 1.5's
    ``current_timestep`` raised until then, so a plan its own optimize run approved was refused."""
    from sol.skills.cache import DiffusersPABConfig

    m = load_model(FAMILIES[family])  # built here, never called
    if Capability.SWAPPABLE_ATTENTION not in m.adapter.capabilities:
        pytest.skip(f"{family} refuses PAB: {m.adapter.missing_reason(Capability.SWAPPABLE_ATTENTION)}")
    if not hasattr(type(m.pipe), "current_timestep"):  # SANA-Video's pipeline has none: one line
        with pytest.raises(SolError, match="needs pipe.current_timestep"):
            apply_all(m.pipe, [DiffusersPABConfig()], m.adapter)
        return
    apply_all(m.pipe, [DiffusersPABConfig()], m.adapter).revert()
