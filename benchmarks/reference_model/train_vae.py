"""Stage 1: train the `AutoencoderKLWan` of sol-tiny-wan for reconstruction.

    python -m benchmarks.reference_model.train_vae --run benchmarks/reference_model/runs/vae --steps 900

Recipe (each line avoids a trap the first trial fell into, see docs/reference-model.md):
- deterministic: decode the posterior *mean* (+ a small L2 on it); a sampled posterior learned nothing;
- full 17-frame clips through Wan's own chunked causal encode/decode from step 0 (crops or short
  clips did not carry over to the later temporal chunks);
- colours drawn uniformly, object pixels weighted x`obj_weight` (objects are ~5% of the pixels;
  unweighted, green and blue objects turned into teal smudges);
- frame 0 (Wan decodes it alone) weighted x`first_frame_weight`;
- loss on the decoder's output before Wan's clamp to [-1, 1] (the clamp has zero gradient outside it).
Resumes from `<run>/ckpt.pt`.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

from benchmarks.reference_model import arch
from benchmarks.reference_model.common import (
    Logger,
    all_mean,
    average_gradients,
    clip_batch,
    cosine_lr,
    launch,
    load_checkpoint,
    save_checkpoint,
)


def encode_mean(vae, x: torch.Tensor) -> torch.Tensor:
    """Posterior mean through Wan's chunked causal encoder (first frame, then chunks of 4)."""
    return vae._encode(x)[:, : vae.config.z_dim]


def decode_raw(vae, z: torch.Tensor) -> torch.Tensor:
    """`AutoencoderKLWan._decode` without the final clamp: one latent frame at a time, same caches."""
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    outs = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        outs.append(
            vae.decoder(
                x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0
            )
        )
    out = torch.cat(outs, 2)
    if vae.config.patch_size is not None:
        out = unpatchify(out, patch_size=vae.config.patch_size)
    vae.clear_cache()
    return out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def _train(rank: int, world: int, args) -> None:
    run = Path(args.run)
    log = Logger(run / "log.jsonl", rank)
    vae = arch.build_vae(seed=0)
    vae.train()
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step = 0
    ck = load_checkpoint(run / "ckpt.pt")
    if ck is not None:
        vae.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        log.log(event="resume", step=step)
    eval_x, _, _ = clip_batch(range(10_000_000, 10_000_000 + 8))
    t_start, cpu_start = time.time(), time.process_time()
    cpu_before = ck.get("cpu_s", 0.0) if ck else 0.0
    while step < args.steps:
        lr = cosine_lr(step, args.steps, args.lr, warmup=30)
        for g in opt.param_groups:
            g["lr"] = lr
        b = args.batch
        seeds = [step * world * b + rank * b + i for i in range(b)]
        x, m, _ = clip_batch(seeds)
        # Object pixels (dilated by 1 px so edges count too) weigh obj_weight, background 1.
        md = F.max_pool3d(m, kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))
        w = 1.0 + args.obj_weight * md
        # Frame 0 is encoded and decoded alone (Wan's causal first chunk): 1/17 of the loss learns it
        # too slowly, and the trial's videos all started blank.
        w[:, :, 0] *= args.first_frame_weight
        z = encode_mean(vae, x)
        z_in = z + args.latent_noise * z.detach().std() * torch.randn_like(z)
        r = decode_raw(vae, z_in)
        err = r - x
        rec = (w * (err.abs() + err.pow(2))).sum() / (w.sum() * 3)
        loss = rec + args.l2 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params, world)
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 10 == 0 or step == 1:
            log.log(
                step=step,
                loss=round(all_mean(loss.item(), world), 5),
                rec=round(all_mean(rec.item(), world), 5),
                z_rms=round(z.detach().pow(2).mean().sqrt().item(), 3),
                grad_norm=round(float(gn), 3),
                lr=round(lr, 6),
                s_per_step=round((time.time() - t_start) / max(1, step - (ck["step"] if ck else 0)), 3),
            )
        if step % args.eval_every == 0 or step == args.steps:
            if rank == 0:
                vae.eval()
                with torch.no_grad():
                    p = psnr(decode_raw(vae, encode_mean(vae, eval_x)), eval_x)
                vae.train()
                log.log(step=step, eval_psnr=round(p, 2))
        if step % args.ckpt_every == 0 or step == args.steps:
            cpu = all_mean(time.process_time() - cpu_start, world) * world + cpu_before
            if rank == 0:
                save_checkpoint(
                    run / "ckpt.pt", model=vae.state_dict(), opt=opt.state_dict(), step=step, cpu_s=cpu
                )
    if rank == 0:
        vae.eval()
        vae.save_pretrained(run / "final", safe_serialization=True)
        log.log(event="done", step=step, wall_s_run=round(time.time() - t_start, 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(Path(__file__).parent / "runs" / "vae"))
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--batch", type=int, default=4, help="clips per process")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--obj-weight", type=float, default=6.0)
    ap.add_argument("--first-frame-weight", type=float, default=4.0)
    ap.add_argument("--l2", type=float, default=1e-4)
    ap.add_argument(
        "--latent-noise", type=float, default=0.03, help="decoder robustness to imperfect latents"
    )
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--ckpt-every", type=int, default=25)
    args = ap.parse_args(argv)
    launch(_train, args.world, args)


if __name__ == "__main__":
    main()
