"""Shared training helpers: two-process gloo data parallelism, checkpoints, logs, batches.

On these 2-core machines two *processes* with one thread each run truly in parallel, two threads in
one process do not: every trainer runs `world` processes and averages gradients with all_reduce.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from sol.models.reference_data import sample_clip

RUNS = Path(__file__).parent / "runs"


def launch(fn: Callable, world: int, *args) -> None:
    """Run fn(rank, world, *args) in `world` processes (1 thread each) joined by gloo."""
    if world == 1:
        _worker(0, 1, fn, args, _free_port())
        return
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(world, fn, args, _free_port()), nprocs=world, start_method="fork")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, fn, args, port):
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        if world > 1:
            dist.destroy_process_group()


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """One flat all_reduce of every gradient (many small all_reduces cost more than the math here)."""
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    i = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        if p.grad is None:
            p.grad = flat[i : i + n].view_as(p).clone()
        else:
            p.grad.copy_(flat[i : i + n].view_as(p))
        i += n


def all_mean(x: float, world: int) -> float:
    if world == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item() / world)


def clip_batch(seeds, frames=17, height=64, width=64, held_out=False):
    """Videos [B, 3, T, H, W] in [-1, 1], object masks [B, 1, T, H, W], captions."""
    clips = [sample_clip(int(s), frames, height, width, held_out=held_out) for s in seeds]
    v = torch.from_numpy(np.stack([c.video for c in clips])).permute(0, 4, 1, 2, 3) * 2 - 1
    m = torch.from_numpy(np.stack([c.mask for c in clips]))[:, None]
    return v.contiguous(), m.contiguous(), [c.caption for c in clips]


def cosine_lr(step: int, total: int, base: float, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * p)))


class Logger:
    """Appends one JSON line per record to `path` (rank 0 only) and echoes it."""

    def __init__(self, path: Path, rank: int):
        self.path, self.rank, self.t0 = Path(path), rank, time.time()
        if rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **rec):
        if self.rank != 0:
            return
        rec = {"wall_s": round(time.time() - self.t0, 1), **rec}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)


def save_checkpoint(path: Path, **state) -> None:
    """Atomic torch.save (tmp + rename): a kill mid-write never leaves a broken checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
