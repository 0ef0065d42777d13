"""Stage 2: train the `WanTransformer3DModel` of sol-tiny-wan as flow-matching text-to-video.

    python -m benchmarks.reference_model.train_transformer --vae runs/vae/final --run runs/transformer

1. latent statistics: per-channel mean/std of VAE posterior means over `stats_clips` clips
   (stored later as the VAE's latents_mean/latents_std, so WanPipeline de-normalises correctly);
2. a latent pool: `pool` clips per process from the training combinations, encoded once
   (encoding on the fly would cost ~25% of each step);
3. flow matching exactly as `FlowMatchEulerDiscreteScheduler(shift=2)` samples at inference:
   x_s = (1 - s) x0 + s noise, target noise - x0, timestep 1000 s, s logit-normal then shifted;
   text embeddings made by the pipeline's own `_get_t5_prompt_embeds` at MAX_SEQUENCE_LENGTH,
   with `p_uncond` of them replaced by the empty prompt's (what CFG's negative_prompt="" gives).
Resumes from `<run>/ckpt.pt` (the pool and stats are cached in the run folder too).

A second phase (`--init-from <first run> --motion-weight 4`) continues from the first run's weights
with the flow-matching error weighted up where the clip moves: per latent position, 1 + w * |x0 -
its mean over frames| (normalised per clip). A moving object covers a few percent of the positions, so
a uniform MSE spends most of its signal on static backgrounds; v1 learned colour but not motion.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from benchmarks.reference_model import arch
from benchmarks.reference_model.common import (
    Logger,
    all_mean,
    average_gradients,
    clip_batch,
    launch,
    load_checkpoint,
    save_checkpoint,
)
from benchmarks.reference_model.train_vae import encode_mean
from sol.models.reference_data import ALL_COMBOS, caption_for


def load_vae(path):
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan.from_pretrained(path).eval().requires_grad_(False)


@torch.no_grad()
def _encode_clips(vae, seeds, batch=8):
    zs, caps = [], []
    for i in range(0, len(seeds), batch):
        x, _, c = clip_batch(seeds[i : i + batch])
        zs.append(encode_mean(vae, x))
        caps += c
    return torch.cat(zs), caps


def latent_stats(vae, rank, world, n_clips, run: Path):
    """Per-channel mean and std over all latent positions (both processes' clips)."""
    path = run / "latent_stats.pt"
    if path.is_file():
        return torch.load(path)
    per = n_clips // world
    z, _ = _encode_clips(vae, [50_000_000 + rank * per + i for i in range(per)])
    c = z.shape[1]
    flat = z.transpose(0, 1).reshape(c, -1).double()
    s = torch.stack(
        [flat.sum(1), flat.pow(2).sum(1), torch.full((c,), float(flat.shape[1]), dtype=torch.float64)]
    )
    if world > 1:
        dist.all_reduce(s)
    mean = s[0] / s[2]
    std = (s[1] / s[2] - mean.pow(2)).clamp_min(1e-8).sqrt()
    stats = {"mean": mean.float(), "std": std.float()}
    if rank == 0:
        torch.save(stats, path)
    return stats


def latent_pool(vae, rank, n, stats, run: Path):
    """`n` normalised latents of training clips for this rank, cached on disk."""
    path = run / f"pool_rank{rank}.pt"
    if path.is_file():
        return torch.load(path)
    z, caps = _encode_clips(vae, [100_000_000 + rank * 10_000_000 + i for i in range(n)])
    mean = stats["mean"].view(1, -1, 1, 1, 1)
    std = stats["std"].view(1, -1, 1, 1, 1)
    pool = {"z": ((z - mean) / std).contiguous(), "captions": caps}
    torch.save(pool, path)
    return pool


def sample_sigmas(b: int, shift: float, gen: torch.Generator) -> torch.Tensor:
    """Logit-normal s, then the scheduler's shift s' = shift s / (1 + (shift - 1) s)."""
    u = torch.sigmoid(torch.randn(b, generator=gen))
    return shift * u / (1 + (shift - 1) * u)


def motion_weights(x0: torch.Tensor, weight: float) -> torch.Tensor:
    """[B, 1, T, H, W] loss weights 1 + weight * m, m = |x0 - its mean over frames| (channel mean),
    normalised to 1 per clip: large where the clip moves, 1 where it is static."""
    moving = (x0 - x0.mean(2, keepdim=True)).abs().mean(1, keepdim=True)
    moving = moving / moving.flatten(1).amax(1).clamp_min(1e-6).view(-1, 1, 1, 1, 1)
    return 1 + weight * moving


def _save(run, rank, world, model, ema, opt, step, cpu_before, cpu_start, wall_before, t_start):
    cpu = all_mean(time.process_time() - cpu_start, world) * world + cpu_before
    if rank == 0:
        save_checkpoint(
            run / "ckpt.pt",
            model=model.state_dict(),
            ema=ema.state_dict(),
            opt=opt.state_dict(),
            step=step,
            cpu_s=cpu,
            wall_s=wall_before + time.time() - t_start,
        )


def _train(rank: int, world: int, args) -> None:
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    log = Logger(run / "log.jsonl", rank)
    t0 = time.time()
    if args.init_from and not (Path(args.init_from) / "ckpt.pt").is_file():
        raise SystemExit(f"--init-from {args.init_from}: no ckpt.pt there; train the first phase first")
    vae = load_vae(args.vae)
    data = Path(args.init_from) if args.init_from else run  # a second phase reuses the first's pool
    stats = latent_stats(vae, rank, world, args.stats_clips, data)
    pool = latent_pool(vae, rank, args.pool, stats, data)
    del vae
    log.log(event="pool_ready", s=round(time.time() - t0, 1), pool=int(pool["z"].shape[0]) * world)

    # Text embeddings exactly as the pipeline makes them (frozen seeded encoder).
    pipe = arch.build_pipeline(vae=arch.build_vae(), transformer=None)
    captions = sorted({caption_for(*c) for c in ALL_COMBOS})
    emb = arch.encode_prompts(pipe, captions + [""])
    cap_index = {c: i for i, c in enumerate(captions)}
    empty = len(captions)
    pool_cap = torch.tensor([cap_index[c] for c in pool["captions"]])
    del pipe

    model = arch.build_transformer(seed=0)
    model.train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    step = 0
    ck = load_checkpoint(run / "ckpt.pt")
    # Resume this run; else a second phase starts from the first run's weights, EMA and optimizer.
    init = ck if ck is not None or not args.init_from else load_checkpoint(Path(args.init_from) / "ckpt.pt")
    if init is not None:
        model.load_state_dict(init["model"])
        ema.load_state_dict(init["ema"])
        opt.load_state_dict(init["opt"])
    if ck is not None:
        step = ck["step"]
        log.log(event="resume", step=step)
    elif init is not None:
        log.log(event="init_from", run=str(args.init_from), step=init["step"])
    cpu_before = ck.get("cpu_s", 0.0) if ck else 0.0
    wall_before = ck.get("wall_s", 0.0) if ck else 0.0
    t_start, cpu_start, step0 = time.time(), time.process_time(), step
    z_pool = pool["z"]
    budget = args.budget_min * 60 if args.budget_min else float("inf")

    def progress() -> float:
        # The CPU is shared, so a step costs 1-3 s: the schedule runs to `steps` or to the wall-clock
        # budget, whichever comes first (both processes agree: rank 0's clock is broadcast).
        p = torch.tensor([max(step / args.steps, (wall_before + time.time() - t_start) / budget)])
        if world > 1:
            dist.broadcast(p, 0)
        return float(p.item())

    while (prog := progress()) < 1.0:
        gen = torch.Generator().manual_seed(1_000_003 * step + rank)
        # Warm-up by steps, then cosine (to 10%) over the schedule's progress.
        if step < args.warmup:
            lr = args.lr * (step + 1) / args.warmup
        else:
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, z_pool.shape[0], (args.batch,), generator=gen)
        x0 = z_pool[idx]
        text = emb[pool_cap[idx]].clone()
        drop = torch.rand(args.batch, generator=gen) < args.p_uncond
        text[drop] = emb[empty]
        s = sample_sigmas(args.batch, arch.SCHEDULER_CONFIG["shift"], gen)
        noise = torch.randn(x0.shape, generator=gen)
        sv = s.view(-1, 1, 1, 1, 1)
        xt = (1 - sv) * x0 + sv * noise
        pred = model(hidden_states=xt, timestep=s * 1000, encoder_hidden_states=text, return_dict=False)[0]
        err = (pred - (noise - x0)).pow(2)
        if args.motion_weight:
            w = motion_weights(x0, args.motion_weight).expand_as(err)
            loss = (err * w).sum() / w.sum()
        else:
            loss = err.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params, world)
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        if step % 10 == 0 or step == 1:
            log.log(
                step=step,
                loss=round(all_mean(loss.item(), world), 5),
                grad_norm=round(float(gn), 3),
                lr=round(lr, 6),
                s_per_step=round((time.time() - t_start) / (step - step0), 3),
            )
        if step % args.ckpt_every == 0:
            _save(run, rank, world, model, ema, opt, step, cpu_before, cpu_start, wall_before, t_start)
    _save(run, rank, world, model, ema, opt, step, cpu_before, cpu_start, wall_before, t_start)
    if rank == 0:
        ema.save_pretrained(run / "final", safe_serialization=True)
        torch.save(stats, run / "final" / "latent_stats.pt")
        ck = load_checkpoint(run / "ckpt.pt")
        log.log(
            event="done", step=step, wall_s_total=round(ck["wall_s"], 1), cpu_s_total=round(ck["cpu_s"], 1)
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).parent / "runs"
    ap.add_argument("--vae", default=str(here / "vae" / "final"))
    ap.add_argument("--run", default=str(here / "transformer"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--budget-min", type=float, default=40.0, help="wall-clock cap of the training loop")
    ap.add_argument("--batch", type=int, default=16, help="clips per process")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--p-uncond", type=float, default=0.1)
    ap.add_argument("--pool", type=int, default=3000, help="latent clips per process")
    ap.add_argument("--stats-clips", type=int, default=256)
    ap.add_argument("--ckpt-every", type=int, default=25)
    ap.add_argument("--init-from", default=None, help="a finished run to continue from (and take its pool)")
    ap.add_argument("--motion-weight", type=float, default=0.0, help="extra loss weight where the clip moves")
    args = ap.parse_args(argv)
    np.random.seed(0)
    launch(_train, args.world, args)


if __name__ == "__main__":
    main()
