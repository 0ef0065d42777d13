"""Agent jobs: the heavy work of each graph node, runnable in this process or in a Ray actor.

Arguments and results are small JSON; tensors and videos go to the run folder. Every job
first looks for its own result file and returns it when present, so a resumed run never
redoes a finished search.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from sol.agent.progress import ProgressWriter, integrator_writer, skill_writer

# Effort presets: how much a search measures (docs/optimize.md, "Cost"). Per skill family:
# cheap quality screens on `screen_runs` videos, `refine_rounds` of knob bisection, successive
# halving through `halving` videos to the whole search split, a race of `top_k` finalists between
# `repeats` (the fewest interleaved pairs any interval rests on) and `max_pairs` pairs. The
# integrator judges at most `max_evals` compositions and races `finalists` of them.
EFFORT: dict[str, dict] = {
    "quick": {"screen_runs": 1, "halving": (), "refine_rounds": 2, "top_k": 2, "repeats": 5, "max_pairs": 8,
              "max_evals": 4, "finalists": 3},
    "standard": {"screen_runs": 2, "halving": (4,), "refine_rounds": 4, "top_k": 2, "repeats": 5,
                 "max_pairs": 10, "max_evals": 8, "finalists": 4},
    "thorough": {"screen_runs": 2, "halving": (4,), "refine_rounds": 6, "top_k": 5, "repeats": 8,
                 "max_pairs": 20, "max_evals": 12, "finalists": 5},
}  # fmt: skip


def read_result(path: Path) -> dict | None:
    """A job's result file, or None when it is missing or unreadable (then the job runs again).

    Results are written atomically, so a kill leaves a whole file or none; a file damaged or emptied
    afterwards must still mean "not done", never a crash on every resume.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Any) -> Path:
    """Atomic JSON write (a kill mid-write leaves the old file or none, never half of one)."""
    from sol.quality.metrics import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False))
    tmp.replace(path)
    return path


# The local executor runs agents as threads of one process; diffusers' from_pretrained uses a
# process-wide "empty weights" context (accelerate), so two loads at once fail ("Cannot copy out
# of meta tensor"). Loads are serialised; each agent still gets its own copy of the model.
_LOAD_LOCK = threading.Lock()


class _Cost:
    """A job's cost from its creation to ``stop()``: wall seconds and the CPU seconds of its thread.

    With one torch thread every op runs on the calling thread, so its CPU time is the job's work
    whatever else the machine runs (a Ray actor and a local-executor thread alike); the run's
    status sums them, so a run on a loaded machine still tells what it would take on a quiet one.

    >>> sorted(_Cost().stop())
    ['cpu_s', 'wall_s']
    """

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.thread_time()

    def stop(self) -> dict:
        return {
            "wall_s": round(time.perf_counter() - self._wall, 1),
            "cpu_s": round(time.thread_time() - self._cpu, 1),
        }


def _setup(spec: dict):
    from sol.hardware import configure_cpu_threads, resolve
    from sol.models import load_model
    from sol.workload import load_workload

    configure_cpu_threads()
    hw = resolve(spec.get("gpu", "auto"))
    with _LOAD_LOCK:
        loaded = load_model(
            spec["model"],
            layers=spec.get("layers"),
            allow_pickle=spec.get("allow_pickle", False),
            device=hw.torch_device,
        )
    return loaded, load_workload(spec["workload"]), hw


def _effort(spec: dict) -> dict:
    return EFFORT[spec.get("effort", "standard")]


def _plan(spec: dict, wl):
    from sol.integrator.skill_search import SearchPlan

    e = _effort(spec)
    val = wl.validation()
    return SearchPlan(
        screen_runs=e["screen_runs"],
        halving=tuple(e["halving"]),
        refine_rounds=e["refine_rounds"],
        top_k=e["top_k"],
        min_pairs=e["repeats"],
        max_pairs=e["max_pairs"],
        # The screen predicts the worst video of the held-out split (or of a split as large as
        # the search's when the workload has none).
        unseen=len(val.runs) if val is not None else len(wl.runs),
    )


def _baseline(run_dir: Path, wl) -> tuple[list, dict] | None:
    """The profile job's baseline outputs and probe counts for ``wl`` (None when absent)."""
    path = run_dir / "profile.json"
    if not path.is_file():
        return None
    prof = json.loads(path.read_text())
    paths, calls = prof.get("baseline_outputs") or [], prof.get("baseline_calls")
    if len(paths) != len(wl.runs) or not calls or not all(Path(p).is_file() for p in paths):
        return None
    return [np.load(p) for p in paths], calls


def _cost_model(run_dir: Path):
    from sol.bench.costmodel import CostModel

    path = run_dir / "profile.json"
    data = json.loads(path.read_text()).get("cost_model") if path.is_file() else None
    return CostModel.from_json(data) if data else None


def profile(spec: dict, lease=None) -> dict:
    """Baseline profile, the cost model, and the baseline's outputs (for the report, the gate and
    every evaluator of the run: they reuse them instead of generating the baseline again)."""
    from sol.bench.costmodel import fit_cost_model
    from sol.bench.profile import profile_pipeline
    from sol.bench.runner import count_calls, generate

    run_dir = Path(spec["run_dir"])
    path = run_dir / "profile.json"
    if (done := read_result(path)) is not None:
        return done
    cost = _Cost()
    loaded, wl, hw = _setup(spec)
    import torch

    one = wl.model_copy(update={"prompts": wl.prompts[:1], "seeds": wl.seeds[:1]})
    # Progress in the run folder (the CLI and `sol serve` read it): the profile, then each baseline video.
    with ProgressWriter(run_dir, "profile", 1 + len(wl.runs), unit="generations") as prog, torch.no_grad():
        with (lease or contextlib.nullcontext)():
            # Stage and op-class shares do not depend on the prompt: one generation is enough.
            prof = profile_pipeline(loaded.pipe, one)
            cm = fit_cost_model(loaded.pipe, loaded.adapter, wl, op_shares=prof.get("op_share"))
        prog.tick()
        with count_calls(loaded.adapter) as calls:
            videos = generate(loaded.pipe, wl, progress=prog.tick)
    baseline, outputs = [], []
    for i, v in enumerate(videos):
        p = run_dir / "baseline" / f"{i}.npy"
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, v.astype(np.float16))
        baseline.append(str(p))
        # Full precision for the evaluators: an exact technique must read inf dB against it.
        q = run_dir / "baseline" / f"{i}.f32.npy"
        np.save(q, v.astype(np.float32))
        outputs.append(str(q))
    prof.update(
        model=spec["model"],
        hardware=hw.to_json(),
        model_info=loaded.adapter.describe(),
        fingerprint=loaded.fingerprint.to_json(),
        baseline_videos=baseline,
        baseline_outputs=outputs,
        baseline_calls=dict(calls),
        prompts=[p for p, _ in wl.runs],
        cost_model=cm.to_json(),
    )
    prof["cost"] = cost.stop()
    write_json(path, prof)
    return prof


def _evaluator(loaded, wl, spec: dict, lease, out_dir: Path, **kw):
    from sol.bench.evaluate import Evaluator

    e = _effort(spec)
    run_dir = Path(spec["run_dir"])
    return Evaluator(loaded, wl, repeats=e["repeats"], max_pairs=e["max_pairs"], lease=lease, output_dir=out_dir,
                     cost_model=_cost_model(run_dir), baseline=_baseline(run_dir, wl), **kw)  # fmt: skip


def skill_search(spec: dict, family: str, lease=None) -> dict:
    """One skill agent: search ``family``'s knobs; returns the path of its front JSON."""
    from sol.integrator.skill_search import search_skill
    from sol.quality.gate import get_budget
    from sol.skills.base import SearchContext

    run_dir = Path(spec["run_dir"])
    path = run_dir / "skills" / f"{family}.json"
    if read_result(path) is not None:
        return {"family": family, "path": str(path), "cached": True}
    cost = _Cost()
    loaded, wl, hw = _setup(spec)
    budget = get_budget(spec.get("budget"))
    ev = _evaluator(loaded, wl, spec, lease, run_dir / "outputs" / family)
    ctx = SearchContext(adapter=loaded.adapter, hardware=hw, workload=wl, budget=budget)
    plan = _plan(spec, wl)
    with skill_writer(spec, family, hw, plan) as prog:  # progress in the run folder
        front = search_skill(family, ctx, ev, plan=plan, budget=budget, progress=prog.candidate)
    write_json(path, {**front.to_json(), "cost": cost.stop()})
    return {"family": family, "path": str(path), "cached": False, "evaluations": front.evaluations}


def integrate(spec: dict, fronts: dict[str, str], settings: dict, lease=None) -> dict:
    """The integrator agent: compose fronts, race and validate; returns its result file."""
    from sol.bench.evaluate import CandidateResult, Evaluator
    from sol.integrator.compose import Integrator
    from sol.integrator.screening import Screen
    from sol.quality.gate import get_budget

    run_dir = Path(spec["run_dir"])
    rnd = int(settings.get("round", 1))
    path = run_dir / f"integration-{rnd}.json"
    if read_result(path) is not None:
        return {"path": str(path), "cached": True}
    cost = _Cost()
    loaded, wl, _hw = _setup(spec)
    effort, plan = _effort(spec), _plan(spec, wl)
    parts, ladders = {}, {}
    for fam, p in fronts.items():
        data = json.loads(Path(p).read_text())
        parts[fam] = [CandidateResult.from_json(r) for r in data["front"]]
        ladders[fam] = [CandidateResult.from_json(r) for r in data.get("full", [])]
    evaluator = _evaluator(loaded, wl, spec, lease, run_dir / "outputs" / f"integration-{rnd}")
    val_wl = wl.validation()
    built: list = []

    def validator():  # the held-out baseline is generated only when a composition is to be validated
        built.append(Evaluator(loaded, val_wl, timing=False, lease=lease,
                               output_dir=run_dir / "outputs" / f"validation-{rnd}"))  # fmt: skip
        return built[-1]

    budget = get_budget(settings.get("budget") or spec.get("budget"))
    screen = Screen.for_budget({**budget.model_dump(), "min_psnr": float(settings["min_psnr"])}, plan.unseen)
    prog = integrator_writer(spec, rnd, len(parts), effort["max_evals"])  # progress in the run folder
    integ = Integrator(
        parts,
        evaluator,
        min_psnr=float(settings["min_psnr"]),
        max_evals=effort["max_evals"],
        exclude=tuple(settings.get("exclude", ())),
        ladders=ladders,
        screen=screen,
        validator=validator if val_wl is not None else None,
        finalists=effort["finalists"],
        min_pairs=effort["repeats"],
        max_pairs=effort["max_pairs"],
        progress=prog.composition,
    )
    with prog:  # finish (or fail) once the run is over
        integ = integ.run()
    data = integ.to_json()
    data.update(
        baseline_videos=evaluator.baseline_paths or _baseline_paths(run_dir),
        validation_baseline_videos=built[0].baseline_paths if built else [],
        validation_prompts=[p for p, _ in val_wl.runs] if val_wl is not None else [],
        settings=settings,
        fingerprint=loaded.fingerprint.to_json(),
        cost_model=evaluator.cost_model.to_json() if evaluator.cost_model is not None else None,
    )
    data["cost"] = cost.stop()
    write_json(path, data)
    return {"path": str(path), "cached": False}


def _baseline_paths(run_dir: Path) -> list[str]:
    prof = json.loads((run_dir / "profile.json").read_text())
    return prof.get("baseline_outputs") or prof.get("baseline_videos") or []
