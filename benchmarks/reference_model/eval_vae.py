"""Does every colour survive the VAE? Run before training the transformer: the VAE sets the ceiling.

    python -m benchmarks.reference_model.eval_vae runs/vae/final        # a saved VAE folder
    python -m benchmarks.reference_model.eval_vae runs/vae/ckpt.pt      # a training checkpoint

Reconstructs clips of every (colour, motion), runs the prompt-following check on the
reconstruction, and reports PSNR (all frames and the first frame alone) and pass rates per colour.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import torch

from benchmarks.reference_model import arch
from benchmarks.reference_model.train_vae import decode_raw, encode_mean
from sol.models.reference_data import COLOURS, MOTIONS, SHAPES, check_video, render


def load_any(path: str):
    p = Path(path)
    if p.is_dir():
        from diffusers import AutoencoderKLWan

        return AutoencoderKLWan.from_pretrained(p).eval()
    vae = arch.build_vae()
    vae.load_state_dict(torch.load(p, map_location="cpu", weights_only=False)["model"])
    return vae.eval()


@torch.no_grad()
def evaluate(vae, per_cell: int = 1, seed: int = 777) -> dict:
    rows = defaultdict(lambda: [0, 0])
    psnrs, first = [], []
    i = 0
    for c in COLOURS:
        for m in MOTIONS:
            for k in range(per_cell):
                shape = SHAPES[(i + k) % len(SHAPES)]
                clip = render(c, shape, m, seed=seed + i * 13 + k)
                i += 1
                x = torch.from_numpy(clip.video).permute(3, 0, 1, 2)[None] * 2 - 1
                r = decode_raw(vae, encode_mean(vae, x)).clamp(-1, 1)
                mse = ((r - x) / 2).pow(2)
                psnrs.append(10 * math.log10(1 / mse.mean().item()))
                first.append(10 * math.log10(1 / mse[:, :, 0].mean().item()))
                video = ((r[0].permute(1, 2, 3, 0) + 1) / 2).numpy()
                res = check_video(video, clip.caption)
                rows[c][0] += int(res.passed)
                rows[c][1] += 1
    out = {
        "psnr": round(sum(psnrs) / len(psnrs), 2),
        "psnr_first_frame": round(sum(first) / len(first), 2),
        "pass_by_colour": {c: f"{a}/{b}" for c, (a, b) in rows.items()},
        "pass_fraction": round(sum(a for a, _ in rows.values()) / sum(b for _, b in rows.values()), 3),
    }
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vae")
    ap.add_argument("--per-cell", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(evaluate(load_any(args.vae), args.per_cell)))


if __name__ == "__main__":
    main()
