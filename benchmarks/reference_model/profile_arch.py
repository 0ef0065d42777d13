"""Where a `sol-tiny-wan` generation spends its time: transformer share, VAE decode, attention share.

    python -m benchmarks.reference_model.profile_arch                      # untrained architecture
    python -m benchmarks.reference_model.profile_arch --model sol/models/assets/sol-tiny-wan
    python -m benchmarks.reference_model.profile_arch --frames 33 --size 128 --steps 8 --op-profile

Transformer share = wall time inside `pipe.transformer.forward` / wall time of the whole `pipe(...)`.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


class _Timer:
    """Wraps a module's forward and sums the wall time spent inside it."""

    def __init__(self, module):
        self.module, self.total, self.calls = module, 0.0, 0
        self._orig = module.forward

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return self._orig(*a, **k)
            finally:
                self.total += time.perf_counter() - t0
                self.calls += 1

        module.forward = timed

    def reset(self):
        self.total, self.calls = 0.0, 0

    def remove(self):
        self.module.forward = self._orig


def time_generation(
    pipe, frames, height, width, steps, cfg, max_seq, repeats=2, prompt="a red circle moving left"
):
    """Median over `repeats` (after one warm-up) of total, transformer, VAE-decode and text-encoder time."""
    t_tr = _Timer(pipe.transformer)
    t_vae = _Timer(pipe.vae.decoder)
    t_te = _Timer(pipe.text_encoder)
    rows = []
    for i in range(repeats + 1):
        for t in (t_tr, t_vae, t_te):
            t.reset()
        t0 = time.perf_counter()
        with torch.no_grad():
            pipe(
                prompt=prompt,
                negative_prompt="",
                num_frames=frames,
                height=height,
                width=width,
                num_inference_steps=steps,
                guidance_scale=cfg,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
                max_sequence_length=max_seq,
            )
        total = time.perf_counter() - t0
        if i > 0:
            rows.append((total, t_tr.total, t_vae.total, t_te.total, t_tr.calls))
    for t in (t_tr, t_vae, t_te):
        t.remove()
    rows.sort()
    total, tr, vae, te, calls = rows[len(rows) // 2]
    return {
        "frames": frames,
        "height": height,
        "width": width,
        "steps": steps,
        "cfg": cfg,
        "total_s": round(total, 3),
        "transformer_s": round(tr, 3),
        "transformer_share": round(tr / total, 4),
        "transformer_calls": calls,
        "vae_decode_s": round(vae, 3),
        "text_encoder_s": round(te, 4),
        "other_s": round(total - tr - vae - te, 3),
    }


def op_profile(transformer, frames, height, width, vae_t=4, vae_s=8, text_len=8, text_dim=64):
    """One transformer forward under torch.profiler: share of attention vs linear ops (self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    c = transformer.config.in_channels
    lt = (frames - 1) // vae_t + 1
    x = torch.randn(1, c, lt, height // vae_s, width // vae_s)
    enc = torch.randn(1, text_len, text_dim)
    ts = torch.tensor([500.0])
    with torch.no_grad():
        transformer(x, ts, enc, return_dict=False)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            transformer(x, ts, enc, return_dict=False)
            wall = time.perf_counter() - t0
    tot = 0.0
    buckets = {"attention": 0.0, "linear": 0.0, "other": 0.0}
    for ev in prof.key_averages():
        if ev.key.startswith("aten::") is False:
            continue
        t = ev.self_cpu_time_total
        tot += t
        k = ev.key
        if (
            "attention" in k
            or "flash" in k
            or k in ("aten::_softmax", "aten::softmax", "aten::bmm", "aten::baddbmm")
        ):
            buckets["attention"] += t
        elif k in ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul"):
            buckets["linear"] += t
        else:
            buckets["other"] += t
    p = transformer.config.patch_size
    tokens = lt * (height // vae_s // p[1]) * (width // vae_s // p[2])
    return {
        "tokens": tokens,
        "forward_wall_s": round(wall, 3),
        **{f"{k}_share": round(v / tot, 3) for k, v in buckets.items()},
        "top_ops": [
            (e.key, round(e.self_cpu_time_total / 1e3, 1))
            for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
        ],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a saved pipeline folder (default: untrained architecture)")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument(
        "--op-profile", action="store_true", help="also profile one transformer forward by op class"
    )
    ap.add_argument("--vae", default="{}", help="JSON overrides of arch.VAE_CONFIG")
    ap.add_argument("--transformer", default="{}", help="JSON overrides of arch.TRANSFORMER_CONFIG")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from benchmarks.reference_model import arch

    if args.model:
        from diffusers import WanPipeline

        pipe = WanPipeline.from_pretrained(args.model)
    else:
        pipe = arch.build_pipeline(
            vae=arch.build_vae(**json.loads(args.vae)),
            transformer=arch.build_transformer(**json.loads(args.transformer)),
        )
    pipe.set_progress_bar_config(disable=True)
    n_tr = sum(p.numel() for p in pipe.transformer.parameters())
    n_vae = sum(p.numel() for p in pipe.vae.parameters())
    print(json.dumps({"transformer_params": n_tr, "vae_params": n_vae, "threads": torch.get_num_threads()}))
    res = time_generation(
        pipe, args.frames, args.size, args.size, args.steps, args.cfg, arch.MAX_SEQUENCE_LENGTH, args.repeats
    )
    res["threads"] = torch.get_num_threads()
    print(json.dumps(res))
    if args.op_profile:
        print(json.dumps(op_profile(pipe.transformer, args.frames, args.size, args.size)))


if __name__ == "__main__":
    main()
