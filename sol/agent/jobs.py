"""Agent jobs: the heavy work of each graph node, runnable in this process or in a Ray actor.

Arguments and results are small JSON; tensors and videos go to the run folder. Every job
first looks for its own result file and returns it when present, so a resumed run never
redoes a finished search.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

# Effort presets: how much a search measures. Evaluations per skill ≈ screening
# (search space + refinement) + top_k full; the integrator adds at most max_evals.
EFFORT: dict[str, dict[str, int]] = {
    "quick": {"top_k": 2, "repeats": 2, "screen_repeats": 1, "max_evals": 4},
    "standard": {"top_k": 3, "repeats": 3, "screen_repeats": 1, "max_evals": 6},
    "thorough": {"top_k": 5, "repeats": 5, "screen_repeats": 2, "max_evals": 12},
}


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


def _effort(spec: dict) -> dict[str, int]:
    return EFFORT[spec.get("effort", "standard")]


def profile(spec: dict, lease=None) -> dict:
    """Baseline profile and the baseline's outputs (for the report and the gate)."""
    from sol.bench.profile import profile_pipeline
    from sol.bench.runner import generate

    run_dir = Path(spec["run_dir"])
    path = run_dir / "profile.json"
    if path.is_file():
        return json.loads(path.read_text())
    loaded, wl, hw = _setup(spec)
    import torch

    with torch.no_grad():
        with (lease or contextlib.nullcontext)():
            prof = profile_pipeline(loaded.pipe, wl)
        videos = generate(loaded.pipe, wl)
    baseline = []
    for i, v in enumerate(videos):
        p = run_dir / "baseline" / f"{i}.npy"
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, v.astype(np.float16))
        baseline.append(str(p))
    prof.update(
        model=spec["model"],
        hardware=hw.to_json(),
        model_info=loaded.adapter.describe(),
        fingerprint=loaded.fingerprint.to_json(),
        baseline_videos=baseline,
        prompts=[p for p, _ in wl.runs],
    )
    write_json(path, prof)
    return prof


def skill_search(spec: dict, family: str, lease=None) -> dict:
    """One skill agent: search ``family``'s knobs; returns the path of its front JSON."""
    from sol.bench.evaluate import Evaluator
    from sol.integrator.skill_search import search_skill
    from sol.quality.gate import get_budget
    from sol.skills.base import SearchContext

    run_dir = Path(spec["run_dir"])
    path = run_dir / "skills" / f"{family}.json"
    if path.is_file():
        return {"family": family, "path": str(path), "cached": True}
    loaded, wl, hw = _setup(spec)
    effort = _effort(spec)
    budget = get_budget(spec.get("budget"))
    out_dir = run_dir / "outputs" / family
    full = Evaluator(loaded, wl, repeats=effort["repeats"], lease=lease, output_dir=out_dir)
    screen_wl = wl.shortened(prompts=1)
    screen = Evaluator(loaded, screen_wl, repeats=effort["screen_repeats"], warmup=0, lease=lease)
    ctx = SearchContext(adapter=loaded.adapter, hardware=hw, workload=wl, budget=budget)
    front = search_skill(family, ctx, full, screen, top_k=effort["top_k"], min_psnr=budget.min_psnr)
    write_json(path, front.to_json())
    return {"family": family, "path": str(path), "cached": False, "evaluations": front.evaluations}


def integrate(spec: dict, fronts: dict[str, str], settings: dict, lease=None) -> dict:
    """The integrator agent: compose fronts, measure end to end; returns its result file."""
    from sol.bench.evaluate import CandidateResult, Evaluator
    from sol.integrator.compose import Integrator

    run_dir = Path(spec["run_dir"])
    rnd = int(settings.get("round", 1))
    path = run_dir / f"integration-{rnd}.json"
    if path.is_file():
        return {"path": str(path), "cached": True}
    loaded, wl, _hw = _setup(spec)
    effort = _effort(spec)
    parts = {}
    for fam, p in fronts.items():
        data = json.loads(Path(p).read_text())
        parts[fam] = [CandidateResult.from_json(r) for r in data["front"]]
    evaluator = Evaluator(
        loaded,
        wl,
        repeats=effort["repeats"],
        lease=lease,
        output_dir=run_dir / "outputs" / f"integration-{rnd}",
    )
    integ = Integrator(
        parts,
        evaluator,
        min_psnr=float(settings["min_psnr"]),
        max_evals=effort["max_evals"],
        exclude=tuple(settings.get("exclude", ())),
    ).run()
    data = integ.to_json()
    data.update(
        baseline_videos=evaluator.baseline_paths, settings=settings, fingerprint=loaded.fingerprint.to_json()
    )
    write_json(path, data)
    return {"path": str(path), "cached": False}
