"""The quantization skill's front next to the uniform "quantize every linear" baseline.

Runs the skill's search (sensitivity scan -> candidates -> screening -> refine -> full
evaluation), evaluates the uniform assignment with the same evaluator, then times the
fastest non-uniform front member against uniform directly (interleaved, one process), and
prints speedups (interleaved ratio of medians vs the full-precision pipeline) and fidelity.

    python -m benchmarks.quantization_skill --model wan2.1-1.3b-arch --layers 2 \
        --out benchmarks/results/quantization-wan2.1-1.3b-arch-l2.json
    python -m benchmarks.quantization_skill --model sol-tiny-wan \
        --out benchmarks/results/quantization-sol-tiny-wan.json

Architecture presets (random weights) run a one-prompt workload with 576 tokens
(13 frames, 192x192: latents 4x24x24, patch 2x2), where the linear layers dominate.
The reference model runs its own ``default`` workload (screened on its first prompt).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch


def _workload(model: str, args):
    from sol.models.builders import PRESETS
    from sol.workload import Workload, load_workload

    if args.workload:
        wl = load_workload(args.workload)
    elif model in PRESETS:
        wl = Workload(
            name="quant-576-tokens",
            description="one prompt, 576 transformer tokens: linear layers dominate",
            prompts=["a red circle moving right"],
            num_frames=13,
            height=192,
            width=192,
            num_inference_steps=3,
            guidance_scale=4.5,
        )
    else:
        wl = load_workload("default")
    update = {k: v for k, v in {"num_inference_steps": args.steps}.items() if v}
    return wl.model_copy(update=update) if update else wl


def _fmt(r) -> tuple[str, str, str]:
    sp = f"{r.speedup:.2f}x" if r.ok and r.speedup else "failed"
    ps = (f"{r.psnr:.1f}" if math.isfinite(r.psnr) else "inf") if r.ok else "-"
    ss = f"{r.fidelity.get('ssim', float('nan')):.4f}" if r.ok else "-"
    return sp, ps, ss


def _name_of(r, candidates: dict) -> str:
    for name, cfg in candidates.items():
        if r.techniques and r.techniques[0] == cfg:
            return name
    return "refined"


def _quantized_clone(pipe, config, adapter):
    from sol.skills.quantization import quantize

    components = dict(pipe.components)
    components["transformer"] = copy.deepcopy(pipe.transformer)
    clone = type(pipe)(**components)
    clone.set_progress_bar_config(disable=True)
    quantize(clone, config, adapter)
    return clone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="wan2.1-1.3b-arch")
    ap.add_argument("--layers", type=int, default=None, help="layers of an architecture preset (default 2)")
    ap.add_argument("--workload", default=None, help="a named workload or JSON file (default: see above)")
    ap.add_argument("--steps", type=int, default=None, help="override the workload's step count")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved pairs per full evaluation")
    ap.add_argument("--top-k", type=int, default=4, help="screened candidates evaluated in full")
    ap.add_argument("--min-psnr", type=float, default=30.0)
    ap.add_argument("--calibration-calls", type=int, default=4)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine, 2 threads wait on each other's"
        " scheduler slices at every op, which swamps the timings; 2 threads here are no faster than 1)",
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    args = ap.parse_args()

    import warnings

    warnings.filterwarnings("ignore", message=".*weights are not in this checkout.*")
    from sol.bench.evaluate import Evaluator
    from sol.bench.profile import stage_timer
    from sol.bench.runner import generate
    from sol.bench.timing import interleaved
    from sol.hardware import detect
    from sol.integrator.skill_search import search_skill
    from sol.models import load_model
    from sol.models.builders import PRESETS
    from sol.quality.metrics import json_safe
    from sol.skills import SearchContext, config_from_dict
    from sol.skills.quantization import QuantizeLinear

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    layers = args.layers if args.layers is not None else (2 if args.model in PRESETS else None)
    loaded = load_model(args.model, layers=layers)
    wl = _workload(args.model, args)
    screen_wl = wl.shortened(prompts=1)
    hardware = detect()
    torch.manual_seed(0)

    with torch.no_grad(), stage_timer(loaded.pipe) as stages:
        t0 = time.perf_counter()
        generate(loaded.pipe, screen_wl)
        total = time.perf_counter() - t0
    share = {k: v / total for k, v in stages.items()}
    print(
        f"{args.model} (layers={layers}, trained={loaded.trained}) · {wl.name}: one generation {total:.1f} s,"
        f" denoising {share.get('denoising', 0):.0%}, decoding {share.get('decoding', 0):.0%}"
    )

    full = Evaluator(loaded, wl, repeats=args.repeats, warmup=1)
    # Screening: the first prompt, one timed pair; the promising candidates are re-measured in full.
    screen = Evaluator(loaded, screen_wl, repeats=1, warmup=0)
    ctx = SearchContext(loaded.adapter, hardware, wl, budget={"min_psnr": args.min_psnr}, pipe=loaded.pipe)
    ctx.notes["quantization"] = {"calibration_calls": args.calibration_calls}

    def tick(r):
        sp, ps, _ = _fmt(r)
        print(f"  evaluated {r.label[:80]:<80} {sp:>7} {ps:>6} dB  ({r.eval_s:.0f} s)", flush=True)

    front = search_skill(
        "quantization", ctx, full, screen, top_k=args.top_k, min_psnr=args.min_psnr, progress=tick
    )
    notes = front.notes
    cands = notes.get("candidates", {})
    report = notes["report"]

    uniform_cfg = QuantizeLinear(scheme=report["scheme"])
    uniform = next((r for r in front.full if r.label == uniform_cfg.label()), None)
    if uniform is None:
        uniform = full.evaluate([uniform_cfg])
        tick(uniform)

    print(
        f"\nsensitivity scan ({report['calibration']}, {report['scan_s']:.0f} s), scheme {report['scheme']}:"
    )
    for g in sorted(report["groups"], key=lambda g: -g["rel_err"]):
        print(
            f"  {g['group']:<22} drift {g['rel_err']:.2e} ({g['snr_db']:.1f} dB)  saves {g['saved_s'] * 1e3:7.2f} ms/call"
        )
    shapes = {}
    for _n, s in report["layers"].items():
        shapes.setdefault(tuple(s["shape"]), s)
    print("  per-layer speed, [tokens, in, out]: " + ", ".join(
        f"{list(k)} {s['ratio']:.2f}x" for k, s in shapes.items()))  # fmt: skip
    print(f"  all quantized: drift {report['all_rel_err']:.2e}")
    if front.unavailable:
        print("unavailable here: " + "; ".join(f"{k}: {v}" for k, v in front.unavailable.items()))

    rows = list(front.full)
    if uniform not in rows:
        rows.append(uniform)
    print(
        f"\nfull evaluation · budget PSNR >= {args.min_psnr:g} dB · speedup = interleaved ratio of medians vs"
        f" full precision, {args.repeats} pairs\n"
    )
    # "gives up": the share of the per-layer time saving (scan timings) left in full precision by
    # the mix, a noise-free prediction of its speed cost next to the measured end-to-end ratios.
    saving = {n: s["fp_s"] - s["quant_s"] for n, s in report["layers"].items() if s["faster"]}
    given_up: dict[str, float] = {}
    print(
        f"{'candidate':<12} {'front':<6} {'speedup':>8} {'PSNR':>7} {'SSIM':>7} {'gives up':>9}"
        "  kept in full precision"
    )
    for r in sorted(rows, key=lambda r: -(r.speedup or 0)):
        sp, ps, ss = _fmt(r)
        name = "uniform" if r is uniform else _name_of(r, cands)
        cfg = config_from_dict(r.techniques[0])
        quantized = cfg.assignment(report["layers"])
        lost = sum(v for n, v in saving.items() if n not in quantized) / max(sum(saving.values()), 1e-12)
        given_up[r.label] = lost
        kept = [x.match for x in cfg.rules if x.scheme == "none"]
        print(
            f"{name:<12} {'yes' if r in front.front else '':<6} {sp:>8} {ps:>7} {ss:>7} {lost:>9.1%}"
            f"  {len(kept)} rules {kept[:3]}"
        )

    # The skill's pick: fastest front member within the budget. And the mixed assignment vs uniform,
    # timed against each other directly (both ratios above were measured against the baseline at
    # different times; a direct A/B removes that drift).
    within = [r for r in front.front if r.ok and r.psnr >= args.min_psnr]
    pick = max(within, key=lambda r: r.speedup or 0) if within else None
    mixed = [r for r in front.front if r.label != uniform.label and r.ok]
    direct = []
    if mixed:
        pipe_u = _quantized_clone(loaded.pipe, uniform_cfg, loaded.adapter)

        def run(p):
            with torch.no_grad():
                generate(p, wl)

        print(
            "\nmixed front members vs uniform, timed directly against each other (interleaved, one process):"
        )
        for m in sorted(mixed, key=lambda r: -(r.speedup or 0)):
            pipe_m = _quantized_clone(loaded.pipe, config_from_dict(m.techniques[0]), loaded.adapter)
            cmp = interleaved(lambda: run(pipe_u), lambda p=pipe_m: run(p), warmup=1, repeats=args.repeats)
            del pipe_m
            row = {
                "mixed": m.label,
                "mixed_name": _name_of(m, cands),
                "mixed_over_uniform_speed": cmp.speedup,
                "psnr_mixed": m.psnr,
                "psnr_uniform": uniform.psnr,
                "timing": cmp.to_json(),
            }
            direct.append(row)
            print(
                f"  {row['mixed_name']:<12} {cmp.speedup:.2f}x the speed of uniform;"
                f" PSNR {m.psnr:.1f} vs {uniform.psnr:.1f} dB ({m.psnr - uniform.psnr:+.1f} dB)"
            )
        del pipe_u
    else:
        print("\nno non-uniform assignment on the front: uniform dominates every mix here")
    if pick is not None:
        print(f"skill's pick within the budget: {_name_of(pick, cands) if pick is not uniform else 'uniform'}"
              f" {pick.speedup:.2f}x at {pick.psnr:.1f} dB")  # fmt: skip
    wall = time.perf_counter() - t_start
    print(f"benchmark wall time {wall / 60:.1f} min")

    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "model": args.model,
            "layers": layers,
            "trained": loaded.trained,
            "hardware": hardware.to_json(),
            "threads": torch.get_num_threads(),
            "workload": wl.model_dump(mode="json"),
            "min_psnr": args.min_psnr,
            "repeats": args.repeats,
            "generation_s": total,
            "stage_share": share,
            "uniform": uniform.to_json(),
            "pick": pick.label if pick else None,
            "mixed_vs_uniform": direct,
            "saving_given_up": given_up,
            "front": front.to_json(),
            "wall_s": wall,
        }
        args.out.write_text(json.dumps(json_safe(data), indent=1))
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
