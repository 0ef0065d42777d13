"""Model loading: presets, folders, pickled weights, the hub cache, fingerprints."""

import pytest
import torch

from sol.errors import SolError
from sol.models import adapter_for, fingerprint, list_models, load_model


def test_presets_and_layers_override():
    m = load_model("wan2.1-1.3b-arch", layers=1)
    d = m.adapter.describe()
    assert d["family"] == "wan" and d["blocks"] == 1
    assert (
        m.pipe.transformer.config.num_attention_heads * m.pipe.transformer.config.attention_head_dim == 1536
    )
    names = {r["name"] for r in list_models()}
    assert {"sol-tiny-wan", "wan2.1-1.3b-arch", "tiny-wan-random"} <= names


def test_bad_names_are_clear_errors(tmp_path):
    with pytest.raises(SolError, match="unknown model"):
        load_model("nope")
    with pytest.raises(SolError, match="not in the local Hugging Face cache.*never downloads"):
        load_model("Wan-AI/Wan2.1-T2V-1.3B-Diffusers-not-cached")
    with pytest.raises(SolError, match="only applies to architecture presets"):
        load_model("sol-tiny-wan", layers=2)
    with pytest.raises(SolError, match="no model_index.json"):
        load_model(str(tmp_path))
    with pytest.raises(SolError, match="does not exist"):
        load_model(str(tmp_path / "missing.d"))
    with pytest.raises(SolError, match="at least 1"):
        load_model("wan2.1-1.3b-arch", layers=0)


def test_folder_roundtrip_and_pickle_refusal(tiny, tmp_path):
    safe = tmp_path / "safe"
    tiny.pipe.save_pretrained(safe, safe_serialization=True)
    loaded = load_model(str(safe))
    assert loaded.fingerprint == tiny.fingerprint  # same weights, same fingerprint

    pickled = tmp_path / "pickled"
    tiny.pipe.save_pretrained(pickled, safe_serialization=False)
    with pytest.raises(SolError, match="pickled weights.*--allow-pickle"):
        load_model(str(pickled))
    assert load_model(str(pickled), allow_pickle=True).fingerprint == tiny.fingerprint


def test_fingerprint_tells_weights_apart(tiny):
    other = load_model("tiny-wan-random")
    assert fingerprint(other.pipe) == tiny.fingerprint
    with torch.no_grad():
        other.pipe.transformer.blocks[0].ffn.net[0].proj.weight.mul_(1.001)
    assert fingerprint(other.pipe).weights_hash != tiny.fingerprint.weights_hash
    assert fingerprint(other.pipe).config_hash == tiny.fingerprint.config_hash


def test_unsupported_family_is_clear():
    with pytest.raises(SolError, match="not supported yet"):
        adapter_for(torch.nn.Linear(2, 2))
