"""Candidate evaluation: apply → run the workload → fidelity → interleaved timing → revert.

Every failure (conflict, exception, NaN/Inf, out of memory, time limit) becomes a failed
:class:`CandidateResult` with its reason; a search never crashes on one bad candidate.
"""

from __future__ import annotations

import contextlib
import copy
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from sol.bench.runner import Probes, TimeLimitExceeded, check_finite, count_calls, generate
from sol.bench.timing import interleaved, measure
from sol.errors import SolError
from sol.skills.base import TechniqueConfig, apply_all, compose, skill_for
from sol.workload import Workload


@dataclass
class CandidateResult:
    """Evidence for one evaluated stack of techniques."""

    label: str
    techniques: list[dict]
    workload: str
    ok: bool
    reason: str | None = None
    speedup: float | None = None
    baseline_s: float | None = None
    latency_s: float | None = None
    fidelity: dict = field(default_factory=dict)
    calls: dict = field(default_factory=dict)  # probe counts: work that really ran
    baseline_calls: dict = field(default_factory=dict)
    work: dict = field(default_factory=dict)  # the techniques' own counters (tokens kept, density…)
    first_run_s: float | None = None  # first generation after apply: includes compiles and lazy init
    outputs: list[str] = field(default_factory=list)
    eval_s: float = 0.0

    @property
    def psnr(self) -> float:
        """The worst video's PSNR: the gate holds every video to the floor, so searches do too."""
        return float(self.fidelity.get("psnr_min", self.fidelity.get("psnr", float("nan"))))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> CandidateResult:
        return cls(**data)


def stack_label(configs: list[TechniqueConfig]) -> str:
    return " + ".join(c.label() for c in configs) if configs else "baseline"


def _fidelity(ref: list[np.ndarray], out: list[np.ndarray]) -> dict:
    from sol.quality.metrics import fidelity

    return fidelity(ref, out)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError | torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def _copy_module(module, share_weights: bool):
    """A copy of ``module`` whose hooks, processors and submodules are its own; with
    ``share_weights`` its parameters and buffers are the original's (no memory)."""
    if not share_weights:
        return copy.deepcopy(module)
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)


def candidate_pipeline(pipe, adapter, *, share_weights: bool):
    """A pipeline beside ``pipe`` whose denoisers are copies (see :func:`_copy_module`), and its
    adapter. Techniques applied to it leave ``pipe`` untouched, so the baseline and the candidate
    run side by side (interleaved timing) and the candidate is applied exactly once."""
    clone = copy.copy(pipe)  # a new __dict__: per-call attributes the pipeline sets stay apart
    for expert in adapter.experts:
        clone.__dict__[expert.name] = _copy_module(expert.transformer, share_weights)
    from sol.models.base import adapter_for

    return clone, adapter_for(clone)


class Evaluator:
    """Evaluates stacks of techniques on one loaded model and one workload.

    The baseline's outputs are computed once. Each candidate is applied once, to a copy of the
    pipeline's denoisers (parameters shared, unless a skill rewrites weights), so the baseline
    and the candidate coexist: the candidate's first generation gives its outputs, its work
    counts (probes inside every cache, outside compiled regions, plus the techniques' own
    counters) and its warm-up time (compiles included); then both are timed interleaved
    (A B A B …) in this process, and the candidate is reverted once.

    >>> ev = Evaluator(loaded, load_workload("smoke"))  # doctest: +SKIP
    >>> ev.evaluate([TextKVCacheConfig()]).speedup  # doctest: +SKIP
    """

    def __init__(
        self,
        loaded,
        workload: Workload,
        *,
        repeats: int = 3,
        warmup: int = 1,
        time_limit_factor: float = 5.0,
        lease=None,
        output_dir: Path | None = None,
        timing: bool = True,
    ):
        self.loaded = loaded
        self.pipe = loaded.pipe
        self.adapter = loaded.adapter
        self.workload = workload
        self.repeats = repeats
        self.warmup = warmup
        self.time_limit_factor = time_limit_factor
        self.lease = lease or contextlib.nullcontext
        self.output_dir = Path(output_dir) if output_dir else None
        self.timing = timing
        self._n = 0
        with torch.no_grad(), count_calls(self.adapter) as counts:
            self.baseline_outputs = generate(self.pipe, workload)
        self.baseline_calls = dict(counts)
        with self.lease():
            self.baseline_timing = measure(self._run_baseline, warmup=0, repeats=1)
        self.baseline_paths = self._save("baseline", self.baseline_outputs)

    def _run_baseline(self):
        with torch.no_grad():
            return generate(self.pipe, self.workload)

    def _save(self, tag: str, videos: list[np.ndarray]) -> list[str]:
        if self.output_dir is None:
            return []
        self.output_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, v in enumerate(videos):
            p = self.output_dir / f"{tag}-{i}.npy"
            np.save(p, v.astype(np.float16))  # half the bytes; 1e-3 precision is far below 8-bit video
            paths.append(str(p))
        return paths

    def evaluate(self, configs: list[TechniqueConfig], *, tag: str | None = None) -> CandidateResult:
        t_start = time.perf_counter()
        configs = list(configs)
        result = CandidateResult(
            label=stack_label(configs),
            techniques=[c.model_dump(mode="json") for c in configs],
            workload=self.workload.name,
            ok=False,
            baseline_calls=self.baseline_calls,
        )
        self._n += 1
        tag = tag or f"cand{self._n:03d}"
        applied = None
        probes: list[Probes] = []
        try:
            configs = compose(configs, self.adapter)
            share = all(skill_for(c).reversible for c in configs)
            pipe, adapter = candidate_pipeline(self.pipe, self.adapter, share_weights=share)
            # Generous: it stops pathological candidates, not slightly slow ones on a busy machine.
            limit = max(30.0, self.time_limit_factor * self.baseline_timing.median_s)

            def instrument():
                probes.append(Probes(adapter))
                return probes[-1]

            applied = apply_all(pipe, configs, adapter, instrument=instrument)
            t0 = time.perf_counter()
            with torch.no_grad():
                outputs = generate(pipe, self.workload, time_limit_s=limit)
            result.first_run_s = time.perf_counter() - t0
            result.calls = dict(probes[0].counts)
            result.work = applied.counters()
            bad = check_finite(outputs)
            if bad:
                result.reason = bad
                return result
            result.fidelity = _fidelity(self.baseline_outputs, outputs)
            result.outputs = self._save(tag, outputs)
            if self.timing:
                result = self._time(result, pipe)
            result.ok = True
        except SolError as e:
            result.reason = str(e)
        except TimeLimitExceeded as e:
            result.reason = f"time limit: {e}"
        except Exception as e:  # noqa: BLE001 — every failure is evidence, never a crash
            if _is_oom(e):
                result.reason = "out of memory"
            else:
                frame = traceback.extract_tb(e.__traceback__)[-1]
                result.reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} ({Path(frame.filename).name}:{frame.lineno})"
        finally:
            if applied is not None:
                applied.revert()
            result.eval_s = time.perf_counter() - t_start
        return result

    def _time(self, result: CandidateResult, pipe) -> CandidateResult:
        def run_candidate():
            with torch.no_grad():
                generate(pipe, self.workload)

        # The candidate carries its work probes; the baseline gets the same for the timing, so
        # the two pay the same (tiny) bookkeeping.
        with self.lease(), count_calls(self.adapter):
            cmp = interleaved(self._run_baseline, run_candidate, warmup=self.warmup, repeats=self.repeats)
        result.speedup = cmp.speedup
        result.baseline_s = cmp.a.median_s
        result.latency_s = cmp.b.median_s
        return result
