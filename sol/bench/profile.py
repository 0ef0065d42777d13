"""Profiling: where a generation's time goes, by stage and by op class inside the transformer."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch

from sol.bench.runner import generate
from sol.bench.timing import peak_memory_mb, reset_peak_memory, sync
from sol.models.base import adapter_for, denoisers
from sol.workload import Workload

ATTENTION_NAMES = (
    "scaled_dot_product",
    "flash_attention",
    "flex_attention",
    "efficient_attention",
    "sdpa",
    "sageattn",
)
LINEAR_NAMES = (
    "addmm",
    "::mm",
    "matmul",
    "linear",
    "bmm",
    "baddbmm",
    "conv",
    "quantized",
    "_int_mm",
    "scaled_mm",
)
NORM_ELEMENTWISE_NAMES = (
    "norm", "add", "mul", "sub", "div", "gelu", "silu", "tanh", "pow", "rsqrt", "mean", "exp", "sigmoid",
    "softmax", "neg", "cos", "sin", "where", "clamp", "sqrt", "var",
)  # fmt: skip


def op_class(name: str) -> str:
    """attention | linear | norm_elementwise | other, from an aten op name."""
    low = name.lower()
    if any(k in low for k in ATTENTION_NAMES):
        return "attention"
    if any(k in low for k in LINEAR_NAMES):
        return "linear"
    if any(k in low for k in NORM_ELEMENTWISE_NAMES):
        return "norm_elementwise"
    return "other"


@contextlib.contextmanager
def stage_timer(pipe) -> Iterator[dict[str, float]]:
    """Accumulate wall time (s) in text encoding, denoising (transformer) and decoding (VAE)."""
    totals: dict[str, float] = defaultdict(float)
    handles = []

    def wrap_module(module, stage):
        starts = []

        def pre(*_a, **_k):
            sync()
            starts.append(time.perf_counter())

        def post(*_a, **_k):
            sync()
            totals[stage] += time.perf_counter() - starts.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))

    # Whatever the family has: Cosmos3 embeds its prompt inside the transformer (no text encoder),
    # HunyuanVideo 1.5 has two text encoders, LTX-2 text connectors, an audio VAE and a vocoder.
    for name in ("text_encoder", "text_encoder_2", "connectors"):
        if isinstance(getattr(pipe, name, None), torch.nn.Module):
            wrap_module(getattr(pipe, name), "text_encoding")
    for _name, denoiser in denoisers(pipe):
        wrap_module(denoiser, "denoising")
    if isinstance(getattr(pipe, "vocoder", None), torch.nn.Module):
        wrap_module(pipe.vocoder, "decoding")
    decoders = [v for v in (getattr(pipe, "vae", None), getattr(pipe, "audio_vae", None)) if v is not None]

    def timed(original):
        def timed_decode(*a, **k):
            sync()
            t0 = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                sync()
                totals["decoding"] += time.perf_counter() - t0

        return timed_decode

    for vae in decoders:
        vae.decode = timed(vae.decode)  # instance attribute; removed below
    try:
        yield totals
    finally:
        for h in handles:
            h.remove()
        for vae in decoders:
            del vae.decode  # the class's decode shows through again


def capture_transformer_call(pipe, workload: Workload) -> tuple[tuple, dict]:
    """The args/kwargs of one real transformer call of this workload (for op-level profiling)."""
    captured: list = []

    def grab(_module, args, kwargs):
        if not captured:
            captured.append((args, dict(kwargs)))

    h = pipe.transformer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        generate(
            pipe, workload.model_copy(update={"num_inference_steps": 1, "prompts": workload.prompts[:1]})
        )
    finally:
        h.remove()
    return captured[0]


def op_breakdown(transformer, args: tuple, kwargs: dict, repeats: int = 2) -> dict[str, float]:
    """Milliseconds per transformer call by op class, from torch.profiler.

    Attention ops are counted inclusive (their internals are attention); every other op by
    its self time, so nothing is counted twice.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch.no_grad():
        transformer(*args, **kwargs)  # warm-up outside the profile
        with profile(activities=activities) as prof:
            for _ in range(repeats):
                transformer(*args, **kwargs)
            sync()
    use_cuda = torch.cuda.is_available()
    totals: dict[str, float] = {"attention": 0.0, "linear": 0.0, "norm_elementwise": 0.0, "other": 0.0}
    for ev in prof.events():
        if not ev.name.startswith("aten::") and op_class(ev.name) != "attention":
            continue
        parent, inside_attention = ev.cpu_parent, False
        while parent is not None:
            if op_class(parent.name) == "attention":
                inside_attention = True
                break
            parent = parent.cpu_parent
        if inside_attention:
            continue
        cls = op_class(ev.name)
        if use_cuda:
            t = ev.device_time_total if cls == "attention" else ev.self_device_time_total
        else:
            t = ev.cpu_time_total if cls == "attention" else ev.self_cpu_time_total
        totals[cls] += t / 1000.0 / repeats
    return totals


def profile_pipeline(pipe, workload: Workload, *, repeats: int = 1, warmup: int = 1, progress=None) -> dict:
    """Baseline profile: wall time by stage (fastest of ``repeats`` passes after warm-up) and op classes.

    Returns JSON-ready data: ``{"total_ms", "stages": {...ms}, "stage_share": {...},
    "op_classes": {...ms per transformer call}, "op_share", "transformer_calls", "peak_memory_mb"}``.
    """
    stages_runs, totals = [], []
    for _ in range(warmup):  # first calls pay for allocation and lazy init
        generate(
            pipe, workload.model_copy(update={"prompts": workload.prompts[:1], "seeds": workload.seeds[:1]})
        )
    reset_peak_memory()
    for _ in range(repeats):
        with stage_timer(pipe) as st:
            sync()
            t0 = time.perf_counter()
            generate(pipe, workload)
            sync()
            total = time.perf_counter() - t0
        st = dict(st)
        st["other"] = max(0.0, total - sum(st.values()))
        stages_runs.append(st)
        totals.append(total)
        if progress is not None:
            progress()
    best = min(range(repeats), key=lambda i: totals[i])
    stages = {k: v * 1000 for k, v in stages_runs[best].items()}
    total_ms = totals[best] * 1000
    args, kwargs = capture_transformer_call(pipe, workload)
    ops = op_breakdown(pipe.transformer, args, kwargs)
    op_total = sum(ops.values()) or 1.0
    # The adapter knows the family's latent layout (5-D latents, packed tokens, per-item lists).
    grid = adapter_for(pipe).call_token_grid(args, kwargs)
    tokens = None if grid is None else int(grid[0] * grid[1] * grid[2])
    return {
        "workload": workload.name,
        "total_ms": total_ms,
        "stages": stages,
        "stage_share": {k: v / total_ms for k, v in stages.items()},
        "op_classes": ops,
        "op_share": {k: v / op_total for k, v in ops.items()},
        "tokens_per_frame_sequence": tokens,
        "token_grid": None if grid is None else list(grid),
        "peak_memory_mb": peak_memory_mb(),
    }
