"""A realistic ``run`` dict, as the orchestrator writes it, with real videos and real gate verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sol.quality import fidelity, gate, json_safe, write_mp4
from tests.quality.conftest import moving_square

PROMPTS = ["a red square sliding right over a gradient", "a red square sliding left, seed 1"]


def make_run(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    base = [moving_square(frames=17, height=64, width=96, seed=0),
            moving_square(frames=17, height=64, width=96, seed=1)[:, :, ::-1].copy()]  # fmt: skip
    baseline_paths = []
    for i, v in enumerate(base):
        np.save(root / f"baseline_{i}.npy", v)
        baseline_paths.append(str(root / f"baseline_{i}.npy"))
    rng = np.random.default_rng(0)
    # c1: bit-exact (text K/V cache); c2: cache + int8 (small drift, as mp4); c3: aggressive (fails).
    c1 = [v.copy() for v in base]
    c2 = [np.clip(v + rng.normal(0, 0.006, v.shape), 0, 1).astype(np.float32) for v in base]
    c3 = [np.clip(v + rng.normal(0, 0.08, v.shape), 0, 1).astype(np.float32) for v in base]
    c3[1] = np.repeat(c3[1][:1], len(c3[1]), axis=0)  # frozen
    paths = {}
    for name, vids in (("c1", c1), ("c2", c2), ("c3", c3)):
        paths[name] = []
        for i, v in enumerate(vids):
            if name == "c2":
                p = write_mp4(v, root / f"{name}_{i}.mp4", lossless=True)
            else:
                p = root / f"{name}_{i}.npy"
                np.save(p, v)
            paths[name].append(str(p))
    kv = {"kind": "text_kv_cache", "version": 1}
    fbc = {"kind": "first_block_cache", "version": 1, "threshold": 0.1}
    q8 = {"kind": "int8_dynamic", "version": 1, "skip_layers": ["proj_out"]}
    sparse = {"kind": "sparse_attention", "version": 1, "window": [3, 4, 4], "dense_steps": 2}

    def candidate(cid, label, techniques, speedup, predicted, vids, vid_paths):
        return {
            "id": cid,
            "label": label,
            "techniques": techniques,
            "speedup": speedup,
            "predicted_speedup": predicted,
            "fidelity": json_safe({k: v for k, v in fidelity(base, vids).items() if k != "videos"}),
            "verdict": gate(base, vids, "near-lossless").model_dump(mode="json"),
            "videos": vid_paths,
        }

    candidates = [
        candidate("c1", "text K/V cache", [kv], 1.04, 1.04, c1, paths["c1"]),
        candidate("c2", "K/V cache + first-block cache + int8", [kv, fbc, q8], 1.71, 1.86, c2, paths["c2"]),
        candidate("c3", "everything, aggressive", [kv, fbc, q8, sparse], 3.9, 2.7, c3, paths["c3"]),
    ]
    return {
        "model": "sol-tiny-wan",
        "run_dir": str(root),
        "hardware": {"kind": "cpu", "name": "cpu (AMD EPYC, 2 cores)", "torch": "2.13.0+cpu"},
        "workload": {
            "name": "default",
            "num_frames": 17,
            "height": 64,
            "width": 96,
            "num_inference_steps": 20,
            "guidance_scale": 4.5,
            "seeds": [0],
            "prompts": PROMPTS,
        },  # fmt: skip
        "quality_budget": "near-lossless",
        "profile": {
            "stages": {"text_encoder": 41.0, "transformer": 2310.5, "vae_decode": 402.3, "other": 38.2},
            "op_classes": {"attention": 880.0, "linear": 1120.4, "norm_elementwise": 260.1, "other": 50.0},
        },
        "fronts": {
            "cache": [
                {
                    "label": "text K/V",
                    "techniques": [kv],
                    "speedup": 1.04,
                    "psnr": "inf",
                    "ssim": 1.0,
                    "on_front": True,
                    "failed": False,
                    "reason": None,
                    "calls": {"blocks": 480},
                },
                {
                    "label": "FBC 0.1",
                    "techniques": [fbc],
                    "speedup": 1.31,
                    "psnr": 42.0,
                    "ssim": 0.99,
                    "on_front": True,
                    "failed": False,
                    "reason": None,
                    "calls": {"blocks": 366},
                },
                {
                    "label": "FBC 0.2",
                    "techniques": [{**fbc, "threshold": 0.2}],
                    "speedup": 5.2,
                    "psnr": 33.5,
                    "ssim": 0.93,
                    "on_front": True,
                    "failed": False,
                    "reason": None,
                    "calls": {"blocks": 92},
                },
                {
                    "label": "PAB 3",
                    "techniques": [{"kind": "pab", "version": 1, "skip": 3}],
                    "speedup": 1.2,
                    "psnr": 35.0,
                    "ssim": 0.95,
                    "on_front": False,
                    "failed": False,
                    "reason": None,
                    "calls": {},
                },
                {
                    "label": "FasterCache",
                    "techniques": [{"kind": "faster_cache", "version": 1}],
                    "speedup": None,
                    "psnr": None,
                    "ssim": None,
                    "on_front": False,
                    "failed": True,
                    "reason": "IndexError in faster_cache.py",
                    "calls": {},
                },
            ],
            "quantization": [
                {
                    "label": "int8 all",
                    "techniques": [{**q8, "skip_layers": []}],
                    "speedup": 1.37,
                    "psnr": 28.0,
                    "ssim": 0.88,
                    "on_front": True,
                    "failed": False,
                    "reason": None,
                    "calls": {},
                },
                {
                    "label": "int8 skip proj_out",
                    "techniques": [q8],
                    "speedup": 1.3,
                    "psnr": 36.0,
                    "ssim": 0.96,
                    "on_front": True,
                    "failed": False,
                    "reason": None,
                    "calls": {},
                },
            ],
        },  # fmt: skip
        "candidates": candidates,
        "baseline_videos": baseline_paths,
        "prompts": PROMPTS,
        "chosen": "c2",
        "plan": {
            "schema_version": 1,
            "model": {"family": "wan", "fingerprint": "WanTransformer3DModel:3f2a9c"},
            "hardware": {"kind": "cpu", "name": "cpu"},
            "techniques": [kv, fbc, q8],
            "measured": {"speedup": 1.71, "psnr": candidates[1]["fidelity"]["psnr"]},
            "approval": {"by": "auto", "at": "2026-11-24T00:00:00"},
        },
    }


@pytest.fixture(scope="module")
def run_dict(tmp_path_factory) -> dict:
    """Built once per module: the tests read it and never change its files."""
    return make_run(tmp_path_factory.mktemp("run"))
