"""Candidate evaluation: apply → run the workload → fidelity and counted work → revert; timing apart.

Every failure (conflict, exception, NaN/Inf, out of memory, time limit) becomes a failed
:class:`CandidateResult` with its reason; a search never crashes on one bad candidate.

Quality and timing are separate steps, so a search pays for timing only where it matters:
:meth:`Evaluator.evaluate` gives a candidate's outputs, fidelity, counted work and (with a cost
model) its predicted latency, on the workload's first ``runs`` (prompt, seed) pairs or all of
them, and :meth:`Evaluator.extend` adds the rest later (cheap first); :meth:`Evaluator.time`
races finalists against the baseline (:func:`sol.bench.timing.race`): interleaved pairs, the
steadier of thread CPU time and wall time, a bootstrap interval on every speedup.
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
from sol.bench.timing import Timing, race
from sol.errors import SolError
from sol.skills.base import TechniqueConfig, apply_all, compose, skill_for
from sol.workload import Workload


@dataclass
class CandidateResult:
    """Evidence for one evaluated stack of techniques.

    ``speedup`` is measured (None until timed): the ratio of medians per generation on the
    steadier clock; ``timing`` holds its interval, clock, pairs and every clock's ratio.
    ``predicted`` is the cost model's prediction from the counted work (``calls``, ``work``).
    ``runs`` are the indices of the workload's (prompt, seed) pairs the fidelity covers (a
    screening subset, or all of them); ``outputs`` and ``fidelity["videos"]`` follow that order.
    """

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
    runs: list[int] = field(default_factory=list)  # the workload's (prompt, seed) pairs covered
    tag: str = ""  # file tag of its outputs
    timing: dict = field(default_factory=dict)  # Comparison.summary() of the race that timed it
    predicted: dict = field(default_factory=dict)  # Prediction.to_json() from the cost model
    screen: dict = field(default_factory=dict)  # the search's quality screen (sol.integrator.screening)

    @property
    def psnr(self) -> float:
        """The worst video's PSNR: the gate holds every video to the floor, so searches do too."""
        return float(self.fidelity.get("psnr_min", self.fidelity.get("psnr", float("nan"))))

    @property
    def interval(self) -> tuple[float, float] | None:
        """The measured speedup's bootstrap interval (None until timed)."""
        iv = self.timing.get("interval")
        return (float(iv[0]), float(iv[1])) if iv else None

    @property
    def beats_baseline(self) -> bool:
        """Timed, with enough pairs, and the whole interval above 1.0 (see ``Comparison``)."""
        return bool(self.timing.get("beats_baseline"))

    @property
    def videos(self) -> int:
        return len(self.runs)

    @property
    def predicted_speedup(self) -> float | None:
        return self.predicted.get("speedup")

    @property
    def modelled(self) -> bool:
        return bool(self.predicted.get("modelled", False))

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


def merge_fidelity(a: dict, b: dict) -> dict:
    """The fidelity of two disjoint sets of videos as one (the formulas of ``quality.fidelity``)."""
    from sol.quality.metrics import psnr_from_mse

    videos = sorted(
        [*a.get("videos", []), *b.get("videos", [])], key=lambda v: v.get("run", 0)
    )  # workload order
    if not videos:
        return dict(a or b)
    lp = [v["lpips"] for v in videos if v.get("lpips") is not None]
    return {
        "psnr": psnr_from_mse(float(np.mean([v["mse"] for v in videos]))),
        "psnr_min": min(v["psnr"] for v in videos),
        "ssim": float(np.mean([v["ssim"] for v in videos])),
        "ssim_min": min(v["ssim"] for v in videos),
        "lpips": float(np.mean(lp)) if lp and len(lp) == len(videos) else None,
        "lpips_reason": a.get("lpips_reason", b.get("lpips_reason")),
        "flicker": float(np.mean([v["flicker"] for v in videos])),
        "flicker_ref": float(np.mean([v["flicker_ref"] for v in videos])),
        "videos": videos,
    }


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


def _reason(e: BaseException) -> str:
    if isinstance(e, SolError):
        return str(e)
    if isinstance(e, TimeLimitExceeded):
        return f"time limit: {e}"
    if _is_oom(e):
        return "out of memory"
    frame = traceback.extract_tb(e.__traceback__)[-1]
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {first} ({Path(frame.filename).name}:{frame.lineno})"


class _Applied:
    """One candidate applied to its own copy of the denoisers, with work probes inside."""

    def __init__(self, ev: Evaluator, configs: list[TechniqueConfig]):
        self.configs = compose(configs, ev.adapter)
        share = all(skill_for(c).reversible for c in self.configs)
        self.pipe, self.adapter = candidate_pipeline(ev.pipe, ev.adapter, share_weights=share)
        self.probes: list[Probes] = []

        def instrument():
            self.probes.append(Probes(self.adapter))
            return self.probes[-1]

        self.applied = apply_all(self.pipe, self.configs, self.adapter, instrument=instrument)

    @property
    def seams(self) -> set[str]:
        return {str(s) for c in self.configs for s in skill_for(c).writes}

    def revert(self) -> None:
        self.applied.revert()


class Evaluator:
    """Evaluates stacks of techniques on one loaded model and one workload.

    The baseline's outputs are computed once. Each candidate is applied once, to a copy of the
    pipeline's denoisers (parameters shared, unless a skill rewrites weights), so the baseline
    and the candidate coexist: the candidate's first generation gives its outputs, its work
    counts (probes inside every cache, outside compiled regions, plus the techniques' own
    counters) and its warm-up time (compiles included); then, when ``timing`` is on, it is raced
    against the baseline (``repeats`` to ``max_pairs`` interleaved pairs, one generation each)
    and reverted once. ``cost_model`` (:class:`sol.bench.costmodel.CostModel`) adds a predicted
    latency to every result. ``baseline`` (outputs, probe counts) reuses a baseline another job
    generated, once this process reproduces its first video exactly.

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
        max_pairs: int | None = None,
        time_limit_factor: float = 5.0,
        lease=None,
        output_dir: Path | None = None,
        timing: bool = True,
        cost_model=None,
        timing_budget_s: float | None = None,
        baseline: tuple[list, dict] | None = None,
    ):
        self.loaded = loaded
        self.pipe = loaded.pipe
        self.adapter = loaded.adapter
        self.workload = workload
        self.repeats = repeats
        self.max_pairs = max(repeats, max_pairs or repeats)
        self.warmup = warmup
        self.time_limit_factor = time_limit_factor
        self.lease = lease or contextlib.nullcontext
        self.output_dir = Path(output_dir) if output_dir else None
        self.timing = timing
        self.cost_model = cost_model
        self.timing_budget_s = timing_budget_s
        self._n = 0
        self.runs = list(workload.runs)
        self.baseline_outputs, self.baseline_calls = self._baseline(baseline)
        self.baseline_paths = self._save("baseline", self.baseline_outputs)

    def _baseline(self, given) -> tuple[list[np.ndarray], dict]:
        """The baseline's outputs and probe counts: ``given`` (another job generated them) after
        checking that this process reproduces its first video bit for bit, else generated here.
        The baseline's generation time bounds every candidate's (generously); no speedup rests on it."""
        if given is not None and len(given[0]) == len(self.runs):
            t0 = time.perf_counter()
            with torch.no_grad():
                first = generate(self.pipe, self._one(0))[0]
            if np.array_equal(first, np.asarray(given[0][0], dtype=first.dtype)):
                self.baseline_timing = Timing([(time.perf_counter() - t0) * len(self.runs)])
                return [np.asarray(v, dtype=np.float32) for v in given[0]], dict(given[1])
        t0 = time.perf_counter()
        with torch.no_grad(), count_calls(self.adapter) as counts:
            outputs = generate(self.pipe, self.workload)
        self.baseline_timing = Timing([time.perf_counter() - t0])
        return outputs, dict(counts)

    # --- workload pieces ---------------------------------------------------------------------

    def _one(self, i: int) -> Workload:
        """The workload's ``i``-th (prompt, seed) pair alone (modulo the number of pairs)."""
        prompt, seed = self.runs[i % len(self.runs)]
        return self.workload.model_copy(update={"prompts": [prompt], "seeds": [seed]})

    def screening_order(self) -> list[int]:
        """Run indices, seed-major: the first ``k`` cover as many prompts as possible (a cheap
        subset that still sees the workload's variety), then the next seed of each."""
        return sorted(range(len(self.runs)), key=lambda i: (self.workload.seeds.index(self.runs[i][1]), i))

    def _run_baseline(self):
        with torch.no_grad():
            return generate(self.pipe, self.workload)

    def _save(self, tag: str, videos: list[np.ndarray], indices: list[int] | None = None) -> list[str]:
        if self.output_dir is None:
            return []
        self.output_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, v in zip(indices if indices is not None else range(len(videos)), videos, strict=True):
            p = self.output_dir / f"{tag}-{i}.npy"
            np.save(p, v.astype(np.float16))  # half the bytes; 1e-3 precision is far below 8-bit video
            paths.append(str(p))
        return paths

    # --- quality and counted work -----------------------------------------------------------

    def evaluate(
        self,
        configs: list[TechniqueConfig],
        *,
        tag: str | None = None,
        runs: int | None = None,
        timing: bool | None = None,
    ) -> CandidateResult:
        """Apply, generate ``runs`` (prompt, seed) pairs (the first of :meth:`screening_order`;
        all by default), compare, count, predict; time it when ``timing`` (default: the
        evaluator's setting); revert."""
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
        result.tag = tag or f"cand{self._n:03d}"
        applied = None
        try:
            applied = _Applied(self, configs)
            order = self.screening_order()
            self._quality(result, applied, order if runs is None else order[:runs])
            if result.reason is None and (self.timing if timing is None else timing):
                self._race({"c": (result, applied)})
            result.ok = result.reason is None
        except Exception as e:  # noqa: BLE001 — every failure is evidence, never a crash
            result.reason = _reason(e)
        finally:
            if applied is not None:
                applied.revert()
            result.eval_s = time.perf_counter() - t_start
        return result

    def extend(self, result: CandidateResult, *, runs: int | None = None) -> CandidateResult:
        """Evaluate ``result``'s stack on ``runs`` more (default: every) pair it has not covered, in
        :meth:`screening_order`, and merge into it (in place)."""
        todo = [i for i in self.screening_order() if i not in set(result.runs)]
        if not result.ok or not todo:
            return result
        t_start = time.perf_counter()
        from sol.skills.base import config_from_dict

        applied = None
        try:
            applied = _Applied(self, [config_from_dict(t) for t in result.techniques])
            self._quality(result, applied, todo if runs is None else todo[:runs])
            result.ok = result.reason is None
        except Exception as e:  # noqa: BLE001
            result.ok, result.reason = False, _reason(e)
        finally:
            if applied is not None:
                applied.revert()
            result.eval_s += time.perf_counter() - t_start
        return result

    def _quality(self, result: CandidateResult, applied: _Applied, indices: list[int]) -> None:
        per_run = self.baseline_timing.median_s / max(1, len(self.runs))
        # Generous: it stops pathological candidates, not slightly slow ones on a busy machine.
        limit = max(30.0, self.time_limit_factor * per_run)
        outputs = []
        with torch.no_grad():
            for i in indices:
                t0 = time.perf_counter()
                outputs += generate(applied.pipe, self._one(i), time_limit_s=limit)
                if result.first_run_s is None:
                    result.first_run_s = time.perf_counter() - t0
        # Each application is fresh (one per evaluate / extend), so its counts are this part's work.
        result.calls = _add(result.calls, dict(applied.probes[0].counts))
        result.work = _add(result.work, applied.applied.counters())
        bad = check_finite(outputs)
        if bad:
            result.reason = bad
            return
        fid = _fidelity([self.baseline_outputs[i] for i in indices], outputs)
        for v, i in zip(fid["videos"], indices, strict=True):
            v["run"] = i
        paths = dict(zip(result.runs, result.outputs, strict=False))
        paths.update(zip(indices, self._save(result.tag, outputs, indices), strict=False))
        result.fidelity = merge_fidelity(result.fidelity, fid) if result.runs else merge_fidelity(fid, {})
        result.runs = sorted([*result.runs, *indices])
        result.outputs = [paths[i] for i in result.runs if i in paths]
        if self.cost_model is not None:
            result.predicted = self.cost_model.predict(
                result.calls, result.work, videos=len(result.runs), seams=applied.seams
            ).to_json()

    # --- timing -----------------------------------------------------------------------------

    def time(
        self,
        results: list[CandidateResult],
        *,
        min_pairs: int | None = None,
        max_pairs: int | None = None,
        budget_s: float | None = None,
    ) -> dict:
        """Race ``results``' stacks against the baseline (see :func:`sol.bench.timing.race`); each
        result gets its measured ``speedup``, per-generation latencies and ``timing`` (in place).
        Returns the race's summary (rounds, why it stopped, who left early)."""
        from sol.skills.base import config_from_dict

        entries: dict[str, tuple[CandidateResult, _Applied]] = {}
        try:
            for k, r in enumerate(results):
                if not r.ok:
                    continue
                try:
                    entries[f"c{k}"] = (r, _Applied(self, [config_from_dict(t) for t in r.techniques]))
                except Exception as e:  # noqa: BLE001
                    r.ok, r.reason = False, _reason(e)
            if not entries:
                return {"rounds": 0, "stopped": "nothing to time"}
            return self._race(entries, min_pairs=min_pairs, max_pairs=max_pairs, budget_s=budget_s)
        finally:
            for _r, a in entries.values():
                a.revert()

    def _race(self, entries: dict, *, min_pairs=None, max_pairs=None, budget_s=None) -> dict:
        def base(i: int):
            with torch.no_grad():
                generate(self.pipe, self._one(i))

        def cand(applied: _Applied):
            def run(i: int):
                with torch.no_grad():
                    generate(applied.pipe, self._one(i))

            return run

        lo = min_pairs or self.repeats
        hi = max(lo, max_pairs or self.max_pairs)
        # The baseline carries probes during timing as the candidates do: both pay the same bookkeeping.
        with self.lease(), count_calls(self.adapter):
            res = race(base, {n: cand(a) for n, (_r, a) in entries.items()}, min_pairs=lo, max_pairs=hi,
                       budget_s=budget_s or self.timing_budget_s, warmup=self.warmup)  # fmt: skip
        for name, (r, _a) in entries.items():
            cmp = res.comparisons[name]
            summary = cmp.summary()
            summary["stopped"] = res.dropped.get(name) or res.stopped
            r.timing = summary
            r.speedup = summary["speedup"]
            r.baseline_s = summary["baseline_s"][summary["clock"]]
            r.latency_s = summary["latency_s"][summary["clock"]]
        return res.to_json()


def _add(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out
