"""The reference model's transformer trainer: the motion phase continues a run and resumes.

Real components at toy size: the shipped VAE encodes a 4-clip pool, the real WanTransformer3DModel
trains 2-3 steps in this process (world 1), checkpoints go to real files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks.reference_model import train_transformer as tt

VAE = Path(__file__).resolve().parents[2] / "sol" / "models" / "assets" / "sol-tiny-wan" / "vae"
TOY = [
    "--world",
    "1",
    "--batch",
    "2",
    "--pool",
    "4",
    "--stats-clips",
    "4",
    "--ckpt-every",
    "1",
    "--warmup",
    "1",
]


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def test_motion_weights_are_one_where_static_and_largest_where_the_clip_moves():
    x0 = torch.zeros(2, 16, 5, 8, 8)
    for t in range(5):
        x0[1, :, t, 2, t] = 3.0  # a blob walking right along row 2
    w = tt.motion_weights(x0, 4.0)
    assert w.shape == (2, 1, 5, 8, 8)
    assert torch.all(w[0] == 1)  # a static clip: the plain MSE
    assert w[1].max().item() == pytest.approx(5.0)  # normalised per clip: 1 + 4 at the most
    assert w[1, 0, 0, 2, 0] > 2 and w[1, 0, 0, 6, 6] == 1  # the path, not the background


@pytest.mark.timeout(300)
def test_motion_phase_continues_the_first_run_and_resumes_from_its_checkpoint(tmp_path):
    p1, p2 = tmp_path / "phase1", tmp_path / "phase2"
    tt.main(["--vae", str(VAE), "--run", str(p1), "--steps", "2", *TOY])
    assert (p1 / "final" / "config.json").is_file() and (p1 / "final" / "latent_stats.pt").is_file()

    phase2 = ["--vae", str(VAE), "--run", str(p2), "--init-from", str(p1), "--motion-weight", "4", *TOY]
    tt.main([*phase2, "--steps", "2"])
    assert {"event": "init_from", "step": 2} in [
        {k: r[k] for k in ("event", "step")} for r in _log(p2) if r.get("event") == "init_from"
    ]
    assert not (p2 / "pool_rank0.pt").exists()  # the pool is phase 1's, not encoded again
    assert torch.load(p2 / "ckpt.pt", weights_only=False)["step"] == 2

    # Killed after its checkpoint (final removed): a longer schedule resumes at step 2, not 0.
    shutil.rmtree(p2 / "final")
    tt.main([*phase2, "--steps", "3"])
    assert any(r.get("event") == "resume" and r["step"] == 2 for r in _log(p2))
    assert torch.load(p2 / "ckpt.pt", weights_only=False)["step"] == 3
    assert (p2 / "final" / "config.json").is_file()


def test_motion_phase_without_a_first_run_says_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="train the first phase first"):
        tt.main(
            ["--vae", str(VAE), "--run", str(tmp_path / "p2"), "--init-from", str(tmp_path / "none"), *TOY]
        )
