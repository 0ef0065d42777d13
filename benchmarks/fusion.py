"""Kernel fusion on this machine: per-kernel timing (CUDA), interpreter correctness, the skill end to end.

Three parts, one command:

1. **Kernels on CUDA**: every ``torch.ops.sol`` op against the eager chain it replaces and against
   ``torch.compile`` of that chain, with ``triton.testing.do_bench``, at Wan2.1-1.3B's width
   (1536, 12 heads x 128, ffn 8960) and 480x832x81's 32,760 tokens. Skipped here without a GPU
   (the JSON says so).
2. **Interpreter correctness**: each kernel under ``TRITON_INTERPRET=1`` (a subprocess: the
   variable must be set before triton is imported) against its float32 reference, fp32 and bf16.
3. **The skill end to end**: the evaluator's interleaved A/B timing (one torch thread, thread CPU
   time beside wall time, the steadier clock's ratio of medians) of ``fusion.compile`` with every
   part inside and with each part left out, and of a cache alone and stacked with fusion (the
   interaction: measured stack vs the product of the two speedups).

    python -m benchmarks.fusion --model sol-tiny-wan --workload default --out benchmarks/results/fusion.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

# --- 1. kernels on CUDA ----------------------------------------------------------------------------

WAN_1_3B = {"tokens": 32760, "dim": 1536, "heads": 12, "ffn": 8960}


def _chains(dtype, dev, shape=WAN_1_3B):
    """(name, fused op call, eager chain) at Wan2.1-1.3B's width."""
    import torch.nn.functional as F

    s, d, h, f = shape["tokens"], shape["dim"], shape["heads"], shape["ffn"]
    x = torch.randn(1, s, d, device=dev, dtype=dtype)
    y = torch.randn(1, s, d, device=dev, dtype=dtype)
    scale, shift, gate = (torch.randn(1, 1, d, device=dev) for _ in range(3))
    w_norm = torch.ones(d, device=dev, dtype=dtype)
    angle = torch.rand(1, s, 1, d // h // 2, device=dev, dtype=torch.float32)
    cos, sin = angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1)
    w1 = torch.randn(f, d, device=dev, dtype=dtype) / d**0.5
    b1 = torch.zeros(f, device=dev, dtype=dtype)

    def rope_eager():
        q = F.rms_norm(x, (d,), w_norm, 1e-6).unflatten(2, (h, -1))
        x1, x2 = q.unflatten(-1, (-1, 2)).unbind(-1)
        out = torch.empty_like(q)
        out[..., 0::2] = x1 * cos[..., 0::2] - x2 * sin[..., 1::2]
        out[..., 1::2] = x1 * sin[..., 1::2] + x2 * cos[..., 0::2]
        return out

    return [
        (
            "layernorm_modulate",
            lambda: torch.ops.sol.layernorm_modulate(x, None, None, scale, shift, 1e-6),
            lambda: (F.layer_norm(x.float(), (d,), eps=1e-6) * (1 + scale) + shift).type_as(x),
        ),
        ("rmsnorm_rope", lambda: torch.ops.sol.rmsnorm_rope(x, w_norm, 1e-6, h, cos, sin), rope_eager),
        (
            "gated_residual",
            lambda: torch.ops.sol.gated_residual(x, y, gate),
            lambda: (x.float() + y.float() * gate).type_as(x),
        ),
        (
            "linear_gelu",
            lambda: torch.ops.sol.linear_gelu(x, w1, b1, "tanh"),
            lambda: F.gelu(F.linear(x, w1, b1), approximate="tanh"),
        ),
    ]


def kernels_cuda(dtype=torch.bfloat16) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device here: per-kernel timing (triton.testing.do_bench) needs a GPU"}
    try:
        import triton.testing
    except ImportError:
        return {"skipped": "triton is not installed: pip install 'sol[gpu]'"}
    import sol.kernels  # noqa: F401

    out = {"device": torch.cuda.get_device_name(0), "dtype": str(dtype), "shape": WAN_1_3B, "ops": {}}
    for name, fused, eager in _chains(dtype, "cuda"):
        compiled = torch.compile(eager)
        ms = {
            k: triton.testing.do_bench(fn)
            for k, fn in (("fused", fused), ("eager", eager), ("compiled", compiled))
        }
        err = (fused().float() - eager().float()).abs().max().item()
        out["ops"][name] = {
            "ms": ms,
            "vs_eager": ms["eager"] / ms["fused"],
            "vs_compile": ms["compiled"] / ms["fused"],
            "max_abs_err": err,
        }
        print(
            f"  {name:20s} fused {ms['fused']:.3f} ms  eager {ms['eager']:.3f}  compiled {ms['compiled']:.3f}"
        )
    return out


# --- 2. interpreter correctness ----------------------------------------------------------------------


def _interpreter_check() -> dict:
    """Runs in a subprocess with TRITON_INTERPRET=1 (see ``main``)."""
    import sol.kernels as K

    g = torch.Generator().manual_seed(0)
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn((2, 37, 72), generator=g).to(dtype)
        mod = torch.randn((2, 1, 72), generator=g)
        angle = torch.rand((1, 37, 1, 12), generator=g, dtype=torch.float64)
        cos, sin = angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1)
        w = torch.randn((45, 72), generator=g).to(dtype) / 8
        cases = {
            "layernorm_modulate": (x, None, None, mod, mod, 1e-6),
            "rmsnorm_rope": (x, torch.ones(72, dtype=dtype), 1e-6, 3, cos, sin),
            "gated_residual": (x, x.flip(1).contiguous(), mod),
            "linear_gelu": (x, w, None, "tanh"),
        }
        for name, args in cases.items():
            _op, triton_fn, reference = K.OPS[name]
            t0 = time.perf_counter()
            got = triton_fn(*args)
            s = time.perf_counter() - t0
            want = reference(*args).float()
            err = (got.float() - want).abs().max().item()
            # bfloat16 rounds to 8 significant bits: its errors read best relative to the output's scale.
            out[f"{name}/{str(dtype).removeprefix('torch.')}"] = {
                "max_abs_err": err,
                "max_rel_err": err / max(want.abs().max().item(), 1e-12),
                "interpreter_s": s,
            }
    return out


def interpreter_check() -> dict:
    try:
        import triton  # noqa: F401
    except ImportError:
        return {"skipped": "triton is not installed: pip install 'sol[gpu]'"}
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    code = "import json, benchmarks.fusion as b; print(json.dumps(b._interpreter_check()))"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        return {"failed": p.stderr[-2000:]}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    for k, v in res.items():
        print(
            f"  {k:28s} max |err| {v['max_abs_err']:.2e} ({v['max_rel_err']:.1e} of max |ref|)"
            f"  {v['interpreter_s']:.2f} s in the interpreter"
        )
    return res


# --- 3. the skill end to end ----------------------------------------------------------------------


def _stack_with(path: str | None) -> list | None:
    """A cache stack to measure fusion beside: a JSON list of techniques, or the best front entry of a
    ``cache_skill.json`` benchmark result."""
    from sol.skills import config_from_dict

    p = Path(path) if path else Path("benchmarks/results/cache_skill.json")
    if not p.exists():
        return None
    data = json.loads(p.read_text())
    if isinstance(data, dict):
        front = data.get("search", {}).get("front") or data.get("front") or []
        ok = [r for r in front if r.get("ok")]
        if not ok:
            return None
        data = max(ok, key=lambda r: r.get("speedup") or 0)["techniques"]
    return [config_from_dict(t) for t in data]


def _row(r) -> dict:
    return {
        "label": r.label,
        "ok": r.ok,
        "reason": r.reason,
        "speedup": r.speedup,
        "interval": (r.timing or {}).get("interval"),
        "clock": (r.timing or {}).get("clock"),
        "pairs": (r.timing or {}).get("pairs"),
        "by_clock": (r.timing or {}).get("by_clock"),
        "psnr_worst": r.psnr if r.ok else None,
        "first_run_s": r.first_run_s,
        "latency_s": r.latency_s,
        "baseline_s": r.baseline_s,
        "work": r.work,
    }


def end_to_end(model: str, workload: str, pairs: int, stack_path: str | None) -> dict:
    from sol.bench.evaluate import Evaluator
    from sol.hardware import configure_cpu_threads
    from sol.models import load_model
    from sol.skills.fusion import CompileBlocks
    from sol.skills.fusion.compiled import PARTS
    from sol.workload import load_workload

    threads = configure_cpu_threads()
    loaded = load_model(model)
    wl = load_workload(workload)
    ev = Evaluator(loaded, wl, repeats=pairs, max_pairs=pairs, warmup=1, timing=True)
    candidates = {"all parts": [CompileBlocks()]}
    for p in PARTS:
        candidates[f"without {p}"] = [CompileBlocks(inside=tuple(x for x in PARTS if x != p))]
    cache = _stack_with(stack_path)
    if cache:
        candidates["cache alone"] = cache
        candidates["cache + fusion"] = [*cache, CompileBlocks()]
    out = {"model": model, "workload": workload, "threads": threads, "pairs": pairs, "candidates": {}}
    for name, cfgs in candidates.items():
        t0 = time.perf_counter()
        r = ev.evaluate(cfgs)
        out["candidates"][name] = {**_row(r), "eval_s": time.perf_counter() - t0}
        sp = f"{r.speedup:.3f}x" if r.ok and r.speedup else f"failed ({r.reason})"
        ps = f"{r.psnr:.1f}" if r.ok and math.isfinite(r.psnr) else ("inf" if r.ok else "-")
        first = f"{r.first_run_s:.1f}" if r.first_run_s else "-"
        print(f"  {name:26s} {sp:>9s}  worst video {ps:>5s} dB  first run {first} s")
    c = out["candidates"]
    if cache and c["cache alone"]["ok"] and c["cache + fusion"]["ok"] and c["all parts"]["ok"]:
        predicted = c["cache alone"]["speedup"] * c["all parts"]["speedup"]
        measured = c["cache + fusion"]["speedup"]
        out["interaction"] = {"predicted": predicted, "measured": measured, "ratio": measured / predicted}
        print(
            f"  interaction: stack {measured:.3f}x vs product {predicted:.3f}x ({measured / predicted:.2f})"
        )
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sol-tiny-wan")
    ap.add_argument("--workload", default="default")
    ap.add_argument("--pairs", type=int, default=5, help="interleaved A/B pairs per candidate")
    ap.add_argument(
        "--stack-with", default=None, help="JSON techniques (or cache_skill.json) to stack fusion on"
    )
    ap.add_argument("--skip-end-to-end", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print("kernels on CUDA (triton.testing.do_bench):")
    result = {"kernels_cuda": kernels_cuda()}
    if "skipped" in result["kernels_cuda"]:
        print(f"  skipped: {result['kernels_cuda']['skipped']}")
    print("interpreter correctness (TRITON_INTERPRET=1, vs float32 references):")
    result["interpreter"] = interpreter_check()
    if not args.skip_end_to_end:
        print(f"fusion.compile end to end ({args.model}, {args.workload}, {args.pairs} interleaved pairs):")
        result["end_to_end"] = end_to_end(args.model, args.workload, args.pairs, args.stack_with)
    result["elapsed_s"] = time.perf_counter() - t0
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
