"""One skill family's search: cheap quality screens, knob bisection, successive halving, a race.

The funnel (docs/optimize.md, "Cost"):

1. **Screen** every config of each technique's ``search_space`` on ``screen_runs`` (prompt, seed)
   pairs of the search split — quality and counted work only, no timing. The cost model turns
   the counted work into a predicted speedup; :class:`~sol.integrator.screening.Screen` turns the
   per-video PSNRs into a predicted worst video on unseen prompts (the gate's question).
2. **Refine**: ``refine`` rounds (each technique bisects its knobs per variant toward the floor,
   ``sol.skills.search``), on the same cheap subset, until they converge or ``refine_rounds``.
3. **Halve**: the candidates predicted to pass, fastest predicted first, are extended to more
   videos (``halving`` stages up to the whole split) and judged again; those still passing go on.
   A candidate judged on every video of the split has had its *full evaluation*; the share of
   full evaluations that pass is reported (the screen's accuracy).
4. **Race** the ``top_k`` survivors against the baseline: interleaved pairs until their
   intervals separate (``sol.bench.timing.race``). Only now is anything timed.

Candidates whose speed the cost model cannot price (another precision, fused kernels) are kept
in their technique's order and always reach the race when they pass: they must be timed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from sol.bench.evaluate import CandidateResult, Evaluator
from sol.integrator.pareto import pareto_front
from sol.integrator.screening import Screen
from sol.skills.base import SearchContext, capability_refusal, config_from_dict, skills_by_family

MIN_PREDICTED = 1.02  # a modelled candidate predicted below this cannot beat the baseline: never timed


@dataclass
class SearchPlan:
    """How much one family's search measures (``sol.agent.jobs.EFFORT`` sets these)."""

    screen_runs: int = 2  # videos per cheap screen
    halving: tuple[int, ...] = (4,)  # intermediate video counts before the whole split
    refine_rounds: int = 4
    top_k: int = 3  # finalists raced
    min_pairs: int = 5
    max_pairs: int = 12
    timing_budget_s: float | None = None
    unseen: int = 8  # videos the screen predicts the worst of (the validation split's size)

    def stages(self, n_full: int) -> list[tuple[int, int]]:
        """Successive halving's ``(videos, candidates kept)`` per stage after the cheap screen:
        twice the finalists at each intermediate stage, the finalists on the whole split.

        >>> SearchPlan(top_k=2, halving=(4,)).stages(8)
        [(4, 4), (8, 2)]
        """
        top = max(self.top_k, 1)
        mid = [(n, 2 * top) for n in self.halving if self.screen_runs < n < n_full]
        return mid + [(n_full, top)]


@dataclass
class SkillFront:
    """A skill's Pareto front with the evidence of every candidate it evaluated."""

    skill: str
    front: list[CandidateResult]
    screened: list[CandidateResult] = field(default_factory=list)
    full: list[CandidateResult] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    @property
    def evaluations(self) -> int:
        return len(self.screened)

    def to_json(self) -> dict:
        return {
            "skill": self.skill,
            "front": [r.to_json() for r in self.front],
            "screened": [r.to_json() for r in self.screened],
            "full": [r.to_json() for r in self.full],
            "unavailable": self.unavailable,
            "evaluations": self.evaluations,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, d: dict) -> SkillFront:
        conv = lambda xs: [CandidateResult.from_json(x) for x in xs]  # noqa: E731
        return cls(
            d["skill"],
            conv(d["front"]),
            conv(d["screened"]),
            conv(d["full"]),
            d.get("unavailable", {}),
            d.get("notes", {}),
        )


def _key(r: CandidateResult) -> str:
    import json

    return json.dumps(r.techniques, sort_keys=True)


def _rank(results: list[CandidateResult], order: dict[str, int]) -> list[CandidateResult]:
    """Fastest predicted first; unmodelled ones (must be timed) interleaved by their technique's order."""

    def key(r):
        s = r.predicted_speedup if r.modelled else None
        return (-(s if s is not None else (r.speedup or 1.0)), order.get(_key(r), 0))

    return sorted(results, key=key)


def judge(screen: Screen, results: list[CandidateResult]) -> None:
    """Pool every result's spread first, then judge each (in place: ``result.screen``)."""
    for r in results:
        if r.ok:
            screen.observe(r)
    for r in results:
        r.screen = screen.judge(r)


def search_skill(
    family: str,
    context: SearchContext,
    full: Evaluator,
    screen: Evaluator | None = None,
    *,
    top_k: int | None = None,
    min_psnr: float | None = None,
    progress=None,
    plan: SearchPlan | None = None,
    budget=None,
) -> SkillFront:
    """Search one skill family's knobs; returns its front on the search split (timed finalists).

    ``full`` evaluates on the search split; ``screen`` (optional, legacy) a cheaper workload
    whose results are re-evaluated on ``full`` before they count. ``budget``: the quality budget
    the screen predicts (a ``QualityBudget`` or ``{"min_psnr": …}``; default the context's).

    >>> front = search_skill("cache", ctx, evaluator, plan=SearchPlan(top_k=3))  # doctest: +SKIP
    """
    plan = plan or SearchPlan()
    if top_k is not None:
        plan = replace(plan, top_k=top_k)
    budget = budget if budget is not None else (context.budget or {})
    if min_psnr is not None:
        budget = {**_budget_dict(budget), "min_psnr": float(min_psnr)}
    elif not _budget_dict(budget).get("min_psnr"):
        budget = {**_budget_dict(budget), "min_psnr": context.min_psnr}
    sc = Screen.for_budget(budget, plan.unseen)
    # Cheap screens filter at the early confidence; the whole split holds the stated one.
    sc.full_videos = len(full.runs)
    floor = sc.min_psnr
    skills = skills_by_family().get(family, [])
    cheap = screen if screen is not None and screen is not full else full
    if context.pipe is None:  # skills that calibrate (e.g. step caching) run it on the search pipeline
        context = replace(context, pipe=cheap.pipe)
    out = SkillFront(family, [])
    tick = progress or (lambda *_: None)
    order: dict[str, int] = {}
    runs = None if cheap is not full else plan.screen_runs

    def evaluate(c):
        r = cheap.evaluate([c], runs=runs, timing=False)
        order.setdefault(_key(r), len(order))
        tick(r)
        return r

    for skill in skills:
        kind = skill.config_type.model_fields["kind"].default
        why = skill.available(context.hardware)
        if why:
            out.unavailable[kind] = why
            continue
        refused = capability_refusal(skill, context.adapter) if context.adapter is not None else None
        if refused:  # the family lacks what it needs: recorded with the family's reason, nothing evaluated
            out.unavailable[kind] = f"refused on this model: {refused}"
            continue
        for option, why_not in skill.unavailable_options(context.hardware).items():
            out.unavailable[f"{kind}:{option}"] = why_not
        ceiling = _ceiling(skill, context, full)
        if ceiling is not None:
            out.notes.setdefault("ceilings", {})[kind] = ceiling
            if ceiling["speedup"] < MIN_PREDICTED:  # it cannot beat the baseline here: no video made
                ceiling["skipped"] = True
                out.unavailable[kind] = f"cannot beat the baseline on this hardware: {ceiling['why']}"
                continue
        results: list[CandidateResult] = []
        try:
            results += [evaluate(c) for c in skill.search_space(context)]
            judge(sc, results)
            tried = {_key(r) for r in results}
            for _ in range(plan.refine_rounds):
                new = [c for c in skill.refine(context, results) if _cfg_key(c) not in tried]
                if not new:
                    break
                fresh = [evaluate(c) for c in new]
                tried |= {_key(r) for r in fresh}
                results += fresh
                judge(sc, results)
        except Exception as e:  # noqa: BLE001 — one technique's broken search must not sink its family
            out.unavailable[kind] = (
                f"search failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            )
        out.screened.extend(results)
    judge(sc, out.screened)
    finalists = _halve(out, sc, full, cheap, plan, order, tick)
    if finalists:
        race = full.time(finalists, min_pairs=plan.min_pairs, max_pairs=plan.max_pairs,
                         budget_s=plan.timing_budget_s)  # fmt: skip
        out.notes["race"] = race
    out.front = pareto_front([r for r in finalists if r.ok])
    # Exact parts (bit-identical outputs: text K/V reuse) gain too little to win a race alone, but
    # join any stack their seams allow: the integrator measures them there, untimed here.
    out.front += [
        r
        for r in out.screened
        if r.ok and math.isinf(r.psnr) and r not in out.front and (r.predicted_speedup or 1.0) >= 1.0
    ]
    full_evals = [r for r in out.full if r.videos >= len(full.runs)]
    out.notes["screen"] = {
        "full_evaluations": len(full_evals),
        "full_passed": sum(bool(r.screen.get("passes")) for r in full_evals),
        "pass_share": (sum(bool(r.screen.get("passes")) for r in full_evals) / len(full_evals))
        if full_evals
        else None,
        "floor_db": floor,
        "unseen": plan.unseen,
        "pooled_spread_db": (sc.pooled or (None,))[0],
        "screened": len(out.screened),
    }
    if isinstance(context.notes.get(family), dict):
        out.notes.update(context.notes[family])  # the skill's own evidence (e.g. a sensitivity scan)
    return out


def _ceiling(skill, context, full: Evaluator) -> dict | None:
    """The technique's measured ceiling (``Skill.ceiling``) priced by the search's cost model, or
    None (no cost model, nothing measured, or the probe failed: then the technique is searched)."""
    cost_model = getattr(full, "cost_model", None)
    if cost_model is None:
        return None
    try:
        with full.lease():  # a latency measurement: never beside another one on this device
            got = skill.ceiling(context, cost_model)
    except Exception as e:  # noqa: BLE001 — a broken probe must not hide a technique: search it
        return {"speedup": math.inf, "why": f"probe failed ({type(e).__name__}: {e}); searched anyway"}
    if not got or not isinstance(got.get("speedup"), (int, float)):
        return None
    return dict(got)


def _cfg_key(c) -> str:
    import json

    return json.dumps([c.model_dump(mode="json")], sort_keys=True)


def _budget_dict(budget) -> dict:
    if isinstance(budget, dict):
        return dict(budget)
    if hasattr(budget, "model_dump"):
        return budget.model_dump()
    return {}


def _halve(out: SkillFront, sc: Screen, full: Evaluator, cheap: Evaluator, plan: SearchPlan, order, tick):
    """Successive halving on videos: the passing candidates, fastest predicted first, get more videos
    stage by stage; the ``top_k`` that pass on the whole split are the finalists."""
    n_full = len(full.runs)
    # Time only what can win: a candidate the cost model prices at no gain never reaches the race.
    pool = [
        r
        for r in _rank(out.screened, order)
        if r.ok and r.screen.get("passes") and not (r.modelled and (r.predicted_speedup or 0) < MIN_PREDICTED)
    ]
    out.notes["predicted_no_gain"] = sum(
        1 for r in out.screened if r.ok and r.modelled and (r.predicted_speedup or 0) < MIN_PREDICTED
    )
    for n, keep in plan.stages(n_full):
        survivors = []
        for r in pool:
            if len(survivors) >= keep:
                break
            if cheap is not full:  # legacy: a screening workload apart from the search split
                r = full.evaluate([config_from_dict(t) for t in r.techniques], timing=False)
            elif r.videos < n:
                full.extend(r, runs=n - r.videos)
            if r.videos >= n_full and r not in out.full:
                out.full.append(r)
            judge(sc, [r])
            tick(r)
            if r.ok and r.screen.get("passes"):
                survivors.append(r)
        pool = _rank(survivors, order)
    finalists = pool[: max(plan.top_k, 1)]
    # Unmodelled candidates cannot be ranked by prediction: one of them joins the race if none did.
    if not any(not r.modelled for r in finalists):
        extra = next((r for r in pool if not r.modelled), None)
        if extra is not None:
            finalists.append(extra)
    return [r for r in finalists if math.isfinite(r.psnr) or r.ok]
