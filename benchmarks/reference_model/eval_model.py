"""Prompt-following of a saved sol-tiny-wan: pass fraction on trained and held-out combinations.

    python -m benchmarks.reference_model.eval_model sol/models/assets/sol-tiny-wan --seeds 2
    python -m benchmarks.reference_model.eval_model runs/transformer_motion/ckpt.pt   # mid-training (EMA)

Generates every held-out combination and an equal number of trained ones (a fixed spread over
colours, shapes and motions), `seeds` videos each, and runs `reference_data.check_video`.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from sol.models.reference_data import (
    COLOURS,
    HELD_OUT,
    MOTIONS,
    SHAPES,
    TRAIN_COMBOS,
    caption_for,
    check_video,
    generate,
)


def eval_prompts(n_trained: int | None = None) -> dict[str, list[str]]:
    """All held-out prompts, and as many trained ones cycling through motions, colours and shapes."""
    held = [caption_for(*c) for c in sorted(HELD_OUT)]
    train = set(TRAIN_COMBOS)
    colours, trained = list(COLOURS), []
    for i in range(n_trained or len(held)):
        c, m = colours[i % len(colours)], MOTIONS[i % len(MOTIONS)]
        s = next(s for k in range(len(SHAPES)) if (c, s := SHAPES[(i + k) % len(SHAPES)], m) in train)
        trained.append(caption_for(c, s, m))
    return {"trained": trained, "held_out": held}


def evaluate(pipe, seeds: int = 1, batch: int = 10, n_trained: int | None = None, **call) -> dict:
    res: dict = {}
    per_motion = defaultdict(lambda: [0, 0])
    failures = []
    for split, prompts in eval_prompts(n_trained).items():
        ok = tot = colour_ok = motion_ok = 0
        for seed in range(seeds):
            for i in range(0, len(prompts), batch):
                chunk = prompts[i : i + batch]
                videos = generate(pipe, chunk, seed=seed, **call)
                for p, v in zip(chunk, videos, strict=True):
                    r = check_video(v, p)
                    ok += r.passed
                    colour_ok += r.colour_ok
                    motion_ok += r.motion_ok
                    tot += 1
                    m = " ".join(p.split()[3:])
                    per_motion[m][0] += r.passed
                    per_motion[m][1] += 1
                    if not r.passed:
                        failures.append({"prompt": p, "seed": seed, "found_colour": r.colour, **r.detail})
        res[split] = {
            "pass": round(ok / tot, 3),
            "colour_ok": round(colour_ok / tot, 3),
            "motion_ok": round(motion_ok / tot, 3),
            "n": tot,
        }
    res["by_motion"] = {m: f"{a}/{b}" for m, (a, b) in per_motion.items()}
    res["failures"] = failures
    return res


def pipeline_from_checkpoint(ckpt, vae_dir, stats_from):
    """A pipeline with a training checkpoint's EMA transformer, without exporting anything."""
    import tempfile
    from pathlib import Path

    import torch

    from benchmarks.reference_model import arch, export

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model = arch.build_transformer(seed=0)
    model.load_state_dict(state["ema"])
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        torch.save(torch.load(Path(stats_from) / "latent_stats.pt"), Path(tmp) / "latent_stats.pt")
        print(f"checkpoint step {state['step']}")
        return export.assemble(Path(vae_dir), Path(tmp))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--cfg", type=float, default=None)
    ap.add_argument("--vae", default="benchmarks/reference_model/runs/vae/final", help="with a ckpt.pt")
    ap.add_argument("--stats", default="benchmarks/reference_model/runs/transformer", help="with a ckpt.pt")
    args = ap.parse_args(argv)
    import torch
    from diffusers import WanPipeline

    torch.set_num_threads(1)
    if args.model.endswith(".pt"):
        pipe = pipeline_from_checkpoint(args.model, args.vae, args.stats)
    else:
        pipe = WanPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    call = {}
    if args.steps:
        call["num_inference_steps"] = args.steps
    if args.cfg is not None:
        call["guidance_scale"] = args.cfg
    res = evaluate(pipe, seeds=args.seeds, **call)
    fails = res.pop("failures")
    print(json.dumps(res, indent=1))
    for f in fails:
        print("FAIL", json.dumps(f))


if __name__ == "__main__":
    main()
