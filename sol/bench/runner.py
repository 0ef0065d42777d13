"""Run a workload on a pipeline: outputs, call counts, and a time limit."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import torch

from sol.bench.workload import Workload


class TimeLimitExceeded(RuntimeError):
    """A generation ran past its time limit (checked at every denoising step)."""


def _step_guard(deadline: float | None, step_callback=None):
    if deadline is None and step_callback is None:
        return None

    def on_step_end(pipe, step, timestep, callback_kwargs):
        if deadline is not None and time.perf_counter() > deadline:
            raise TimeLimitExceeded(f"time limit exceeded at step {step}")
        if step_callback is not None:
            step_callback()
        return callback_kwargs

    return on_step_end


def generate(
    pipe,
    workload: Workload,
    *,
    time_limit_s: float | None = None,
    progress=None,
    step_callback=None,
) -> list[np.ndarray]:
    """Every (prompt, seed) of the workload through ``pipe``: float32 videos ``[F, H, W, 3]`` in [0, 1].

    >>> videos = generate(pipe, load_workload("smoke"))  # doctest: +SKIP
    """
    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s
    videos = []
    for prompt, seed in workload.runs:
        generator = torch.Generator("cpu").manual_seed(seed)
        out = pipe(
            **workload.pipe_kwargs(prompt),
            generator=generator,
            output_type="np",
            callback_on_step_end=_step_guard(deadline, step_callback),
        )
        videos.append(np.asarray(out.frames[0], dtype=np.float32))
        if progress is not None:
            progress()
    return videos


def check_finite(videos: list[np.ndarray]) -> str | None:
    """The reason a set of outputs is unusable (NaN/Inf), or None."""
    for i, v in enumerate(videos):
        if not np.isfinite(v).all():
            return f"output {i} holds NaN or Inf"
    return None


@contextlib.contextmanager
def count_calls(adapter) -> Iterator[Counter]:
    """Count what actually ran: transformer calls, blocks, self/cross attention, text K/V projections.

    Probes sit on modules that only run when the work really happens (a skipped block
    never calls its feed-forward), so caches that bypass work show up as fewer calls.
    """
    counts: Counter = Counter()
    handles = []
    for name, modules in adapter.call_probes().items():
        for m in modules:
            handles.append(m.register_forward_pre_hook(lambda *_a, _n=name: counts.update([_n])))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()
