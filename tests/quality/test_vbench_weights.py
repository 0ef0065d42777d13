"""VBench's model-based dimensions load the user's weights: from VBench's cache or a ``--vbench-weights``
folder. Tested with small stand-in checkpoints made here in VBench's own format (OpenAI CLIP state
dicts built by the ``clip`` package VBench ships with, and the LAION aesthetic head), since the real
ones (~1 GB, a download) cannot be fetched: VBench's own loaders read them and score real videos.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from sol.errors import SolError
from sol.quality.vbench import RUNNER, check_weights_dir, find_vbench_python, measurable, run_vbench

VBENCH = find_vbench_python()
needs_vbench = pytest.mark.skipif(VBENCH is None, reason="no VBench environment (make vbench-env)")

# Run with VBench's interpreter: CLIP's own model class, saved as OpenAI's files are, a TorchScript archive
# (clip.load reads a JIT archive and rebuilds the architecture from its state dict's shapes; its fallback
# for a plain state dict never works: the failed JIT read leaves the file at its end). Widths of 64
# give one attention head each. The aesthetic head is a plain state dict, as LAION's.
STAND_INS = """
import os, runpy, sys, torch
root, runner = sys.argv[1], sys.argv[2]
runpy.run_path(runner)["_define_torchvision_ops"]()  # as the runner does: clip imports torchvision
from clip.model import CLIP
torch.manual_seed(0)
def tiny(embed_dim):
    m = CLIP(embed_dim=embed_dim, image_resolution=224, vision_layers=2, vision_width=64, vision_patch_size=32,
             context_length=77, vocab_size=512, transformer_width=64, transformer_heads=1, transformer_layers=1)
    return torch.jit.trace(m.eval(), (torch.zeros(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long)))
for rel in ("clip_model", "aesthetic_model/emb_reader"):
    os.makedirs(os.path.join(root, rel), exist_ok=True)
tiny(512).save(os.path.join(root, "clip_model/ViT-B-32.pt"))
tiny(768).save(os.path.join(root, "clip_model/ViT-L-14.pt"))
head = torch.nn.Linear(768, 1).state_dict()
torch.save(head, os.path.join(root, "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth"))
"""


def _videos() -> list[np.ndarray]:
    """A square moving right, and the same with every other frame darkened (it flickers)."""
    frames = np.zeros((9, 64, 64, 3), dtype=np.float32)
    for t in range(9):
        frames[t, 20:40, 4 + 4 * t : 24 + 4 * t] = (0.9, 0.2, 0.1)
    flicker = frames.copy()
    flicker[1::2] *= 0.5
    return [frames, flicker]


def test_a_weights_folder_is_checked_before_any_run(tmp_path):
    with pytest.raises(SolError, match="--vbench-weights .*no such folder") as err:
        check_weights_dir(tmp_path / "missing")
    assert "\n" not in str(err.value)
    assert check_weights_dir(tmp_path) == tmp_path.resolve()
    status = measurable(["temporal_flickering", "background_consistency"], tmp_path)
    assert status["temporal_flickering"] is None
    assert (
        "weights missing" in status["background_consistency"]
        and str(tmp_path) in status["background_consistency"]
    )


@needs_vbench
def test_model_based_dimensions_load_stand_in_weights_from_a_folder(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    subprocess.run([str(VBENCH), "-c", STAND_INS, str(weights), str(RUNNER)], check=True, timeout=600)
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "empty-cache"))  # VBench's own cache: nothing there
    dims = ["temporal_flickering", "background_consistency", "aesthetic_quality", "subject_consistency"]
    assert measurable(dims, weights) == {**measurable(dims, weights), "background_consistency": None,
                                         "aesthetic_quality": None}  # fmt: skip
    res = run_vbench(_videos(), dims, workdir=tmp_path / "work", weights=weights)
    for dim in ("temporal_flickering", "background_consistency", "aesthetic_quality"):
        assert "score" in res[dim], (dim, res[dim])
        assert len(res[dim]["videos"]) == 2 and all(np.isfinite(res[dim]["videos"]))
    # a random tiny CLIP still sees the darkened frames as a change: the flickering video scores lower
    assert res["background_consistency"]["videos"][1] < res["background_consistency"]["videos"][0]
    # what is absent is reported, with the place it was looked for
    assert res["subject_consistency"]["available"] is False
    assert (
        "weights missing" in res["subject_consistency"]["reason"]
        and str(weights) in res["subject_consistency"]["reason"]
    )
    # the same files in VBench's usual cache are found there too, without the folder option
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(weights))
    assert measurable(["background_consistency"]) == {"background_consistency": None}


# --- the wiring: `sol optimize --vbench-weights`, the gate node, the report ---------------------------


@pytest.mark.parametrize("bad", ["missing", "a-file"])
def test_optimize_refuses_a_bad_weights_folder_in_one_line_before_loading(tmp_path, monkeypatch, capsys, bad):
    import sol.models.loading as loading
    from sol.cli import main

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before --vbench-weights was checked")

    monkeypatch.setattr(loading, "load_model", no_load)
    monkeypatch.setattr("sol.models.load_model", no_load)
    (tmp_path / "a-file").write_text("not a folder")
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        main(["optimize", "--gpu", "cpu", "--vbench-weights", str(tmp_path / bad), "--runs-dir", str(runs)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: --vbench-weights") and "no such folder" in lines[0]
    assert not runs.exists()


def test_the_gate_records_unmeasured_dimensions_and_the_report_lists_them(tmp_path, monkeypatch):
    """The gate node with an empty --vbench-weights folder and no VBench environment: every gate
    dimension is listed as not measured with why, once, in the run summary, summary.md and report.html."""
    import json

    from sol.agent.nodes import Nodes
    from sol.agent.reporting import run_summary
    from sol.quality.vbench import GATE_DIMENSIONS
    from sol.report.html import render_html
    from sol.report.markdown import render_markdown

    monkeypatch.setenv("SOL_VBENCH_PYTHON", str(tmp_path / "no-vbench-python"))
    weights = tmp_path / "weights"
    weights.mkdir()
    videos = []
    for i, v in enumerate(_videos()):
        np.save(tmp_path / f"b{i}.npy", v)
        videos.append(str(tmp_path / f"b{i}.npy"))
    comp = {"id": "c1", "predicted_speedup": 1.2, "predicted_psnr": None, "interaction": None,
            "result": {"ok": True, "outputs": videos, "label": "same", "techniques": [], "speedup": 1.2,
                       "fidelity": {"psnr": 99.0}, "latency_s": 1.0, "baseline_s": 1.2}}  # fmt: skip
    integ = tmp_path / "integration.json"
    integ.write_text(json.dumps({"baseline_videos": videos, "compositions": [comp]}))
    spec = {"run_dir": str(tmp_path), "model": "tiny-wan-random", "workload": "smoke",
            "vbench_weights": str(weights)}  # fmt: skip
    state = {"spec": spec, "settings": {"round": 1, "budget": "near-lossless"}, "integration": str(integ)}
    state.update(Nodes(lambda: None).gate(state))

    missing = json.loads(open(state["candidates"]).read())["vbench_not_measured"]
    assert list(missing) == list(GATE_DIMENSIONS)
    assert "vbench environment missing" in missing["temporal_flickering"]
    assert missing["aesthetic_quality"].startswith(f"weights not found in --vbench-weights {weights}")
    assert "clip_model/ViT-L-14.pt" in missing["aesthetic_quality"]
    # a dimension whose weights are absent is not a skipped check on every candidate
    checks = [
        c["name"] for c in json.loads(open(state["candidates"]).read())["candidates"][0]["verdict"]["checks"]
    ]
    assert "vbench.aesthetic_quality.drop" not in checks

    summary = run_summary(state)
    assert summary["vbench"] == {"measured": [], "not_measured": missing, "weights": str(weights)}
    md = render_markdown(summary)
    assert "## VBench" in md and f"| aesthetic_quality | {missing['aesthetic_quality']} |" in md
    html = render_html(summary, tmp_path)
    assert "VBench dimension not measured" in html and "weights not found in --vbench-weights" in html


def test_the_run_spec_keeps_the_weights_folder_as_an_absolute_path(tmp_path, monkeypatch):
    """What `resume` reads back (run.json), so a resumed run's gate uses the same folder."""
    from sol.agent import driver

    class Stop(Exception):
        pass

    def stop(run_dir):
        raise Stop(run_dir)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    with pytest.raises(Stop) as e:
        driver.start(model="tiny-wan-random", gpu="cpu", workload="smoke", executor="local",
                     runs_dir=tmp_path / "runs", vbench_weights="weights", on_start=stop)  # fmt: skip
    assert driver.read_spec(e.value.args[0])["vbench_weights"] == str((tmp_path / "weights").resolve())
    with pytest.raises(SolError, match="--vbench-weights is empty"):
        driver.start(model="tiny-wan-random", gpu="cpu", workload="smoke", runs_dir=tmp_path / "r2",
                     vbench_weights=" ")  # fmt: skip
