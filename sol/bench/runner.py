"""Run a workload on a pipeline: outputs, work probes, and a time limit."""

from __future__ import annotations

import contextlib
import inspect
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import torch

from sol.hooks import Installation, ModelHook, hooked
from sol.models.base import pipeline_video
from sol.workload import Workload

PROBE_HOOK = "sol_work_probe"


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


@contextlib.contextmanager
def _per_step(pipe, guard) -> Iterator[dict]:
    """Call ``guard`` at every denoising step: through ``callback_on_step_end`` where the pipeline takes
    one, else (HunyuanVideo 1.5) after each ``scheduler.step``, which every pipeline calls once a step."""
    if guard is None:
        yield {}
        return
    if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
        yield {"callback_on_step_end": guard}
        return
    scheduler = pipe.scheduler
    original, count = scheduler.step, [0]

    def step(*a, **k):
        out = original(*a, **k)
        guard(pipe, count[0], None, {})
        count[0] += 1
        return out

    scheduler.step = step  # instance attribute; removed below
    try:
        yield {}
    finally:
        del scheduler.step


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
    guard = _step_guard(deadline, step_callback)
    videos = []
    for prompt, seed in workload.runs:
        generator = torch.Generator("cpu").manual_seed(seed)
        with _per_step(pipe, guard) as extra:
            out = pipe(**workload.pipe_kwargs(prompt, pipe), generator=generator, output_type="np", **extra)
        videos.append(np.asarray(pipeline_video(pipe, out), dtype=np.float32))
        if progress is not None:
            progress()
    return videos


def check_finite(videos: list[np.ndarray]) -> str | None:
    """The reason a set of outputs is unusable (NaN/Inf), or None."""
    for i, v in enumerate(videos):
        if not np.isfinite(v).all():
            return f"output {i} holds NaN or Inf"
    return None


class _Probe(ModelHook):
    """Counts the calls that reach a module's own forward (inside every cache hook)."""

    def __init__(self, counts: Counter, name: str):
        super().__init__()
        self.counts, self.name = counts, name

    def new_forward(self, module, *args, **kwargs):
        # Inside a region torch.compile traces, a count would be traced once or not at all: no
        # count is better than a wrong one (compiled regions must not hold probe points).
        # is_dynamo_compiling(), not is_compiling(): the latter reads a process-wide flag, so while
        # one thread compiles (agents of the local executor are threads) every other thread's
        # probes read True and dropped counts; the former is constant-folded into traced code.
        if not torch.compiler.is_dynamo_compiling():
            self.counts[self.name] += 1
        return self.fn_ref.original_forward(*args, **kwargs)


class Probes(Installation):
    """Count what actually ran: transformer calls, blocks, self/cross attention, text K/V projections.

    Probes are diffusers hooks on the modules the adapter names (``call_probes``), on every
    denoiser. Installed *before* a cache's hooks they sit inside them, so a block a cache skips
    never reaches its probe; ``apply_all(..., instrument=...)`` installs them at that point
    (after weights and kernels, before attention, token and step techniques).

    >>> probes = Probes(adapter)  # doctest: +SKIP
    >>> generate(pipe, workload); probes.counts["blocks"]  # doctest: +SKIP
    """

    def __init__(self, adapter):
        super().__init__("work probes")
        self.counts: Counter = Counter()
        for expert in getattr(adapter, "experts", None) or [adapter]:
            for name, modules in expert.call_probes().items():
                for m in modules:
                    if not hooked(m, PROBE_HOOK):
                        self.hook(m, _Probe(self.counts, name), PROBE_HOOK, root=expert.transformer)


@contextlib.contextmanager
def count_calls(adapter) -> Iterator[Counter]:
    """Probes for the duration of a block, on a pipeline with no technique applied (the baseline).

    With techniques applied, install :class:`Probes` through ``apply_all(..., instrument=...)``
    instead: probes registered after a cache's hooks would sit outside them and count skipped work.
    """
    probes = Probes(adapter)
    try:
        yield probes.counts
    finally:
        probes.revert()
