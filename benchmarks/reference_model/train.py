"""Train and ship `sol-tiny-wan` from scratch with one command (resumable; ~2 h on 2 CPU cores).

    python -m benchmarks.reference_model.train --out sol/models/assets/sol-tiny-wan

Stages (each resumes from its checkpoint under benchmarks/reference_model/runs/, and is skipped
when its final output exists):
1. VAE reconstruction             (train_vae.py)
2. VAE check: every colour must survive reconstruction (eval_vae.py) — the VAE is the ceiling
3. transformer, flow matching     (train_transformer.py)
3b. transformer, motion phase: continues 3 with the loss weighted up where clips move
4. export: an atomic WanPipeline folder (export.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from benchmarks.reference_model import eval_vae, export, train_transformer, train_vae

RUNS = Path(__file__).parent / "runs"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="sol/models/assets/sol-tiny-wan")
    ap.add_argument("--runs", default=str(RUNS))
    ap.add_argument("--vae-steps", type=int, default=1500)
    ap.add_argument("--transformer-steps", type=int, default=1500)
    ap.add_argument("--transformer-budget-min", type=float, default=40.0, help="wall-clock cap of stage 3")
    ap.add_argument("--motion-steps", type=int, default=2000, help="stage 3b; 0 skips it")
    ap.add_argument("--motion-budget-min", type=float, default=30.0, help="wall-clock cap of stage 3b")
    ap.add_argument("--motion-weight", type=float, default=4.0)
    ap.add_argument("--motion-lr", type=float, default=4e-4)
    ap.add_argument("--min-vae-pass", type=float, default=0.9, help="stop if VAE reconstructions pass less")
    args = ap.parse_args(argv)
    # One thread: OpenMP threads spin-waiting on a shared 2-core machine cost more than they give.
    torch.set_num_threads(1)
    runs = Path(args.runs)
    vae_final = runs / "vae" / "final"
    tr_final = runs / "transformer" / "final"

    if not (vae_final / "config.json").is_file():
        train_vae.main(["--run", str(runs / "vae"), "--steps", str(args.vae_steps)])
    report = eval_vae.evaluate(eval_vae.load_any(str(vae_final)), per_cell=2)
    print("VAE check:", json.dumps(report), flush=True)
    if report["pass_fraction"] < args.min_vae_pass:
        sys.exit(
            f"VAE reconstructions pass {report['pass_fraction']:.2f} < {args.min_vae_pass}: fix the VAE first"
        )

    if not (tr_final / "config.json").is_file():
        train_transformer.main(
            [
                "--vae",
                str(vae_final),
                "--run",
                str(runs / "transformer"),
                "--steps",
                str(args.transformer_steps),
                "--budget-min",
                str(args.transformer_budget_min),
            ]
        )
    if args.motion_steps:
        motion_final = runs / "transformer_motion" / "final"
        if not (motion_final / "config.json").is_file():
            train_transformer.main(
                [
                    "--vae",
                    str(vae_final),
                    "--run",
                    str(runs / "transformer_motion"),
                    "--init-from",
                    str(runs / "transformer"),
                    "--steps",
                    str(args.motion_steps),
                    "--budget-min",
                    str(args.motion_budget_min),
                    "--motion-weight",
                    str(args.motion_weight),
                    "--lr",
                    str(args.motion_lr),
                ]
            )
        tr_final = motion_final
    info = export.export(vae_final, tr_final, args.out)
    print(f"exported {args.out}: {info['bytes'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
