"""One skill family's search: cheap screening, a local refinement, then the full workload.

Cost (documented in docs/skills.md): ``len(search_space) + len(refine)`` screening
evaluations on a one-prompt workload with a single timed pair, then at most ``top_k``
full evaluations (every prompt, ``repeats`` interleaved pairs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sol.bench.evaluate import CandidateResult, Evaluator
from sol.integrator.pareto import pareto_front
from sol.skills.base import SearchContext, capability_refusal, config_from_dict, skills_by_family


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
        return len(self.screened) + len(self.full)

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


def _promising(screened: list[CandidateResult], min_psnr: float | None, top_k: int) -> list[CandidateResult]:
    """The screening front first, then the next fastest that still meet the budget (with slack)."""
    slack = 3.0  # dB: screening uses one prompt, so its PSNR is a noisy estimate of the full one
    ok = [r for r in screened if r.ok and (min_psnr is None or r.psnr >= min_psnr - slack)]
    front = pareto_front(ok)
    rest = sorted((r for r in ok if r not in front), key=lambda r: -(r.speedup or 0))
    picked = []
    for r in front + rest:
        if r.label not in {p.label for p in picked}:
            picked.append(r)
    return picked[:top_k]


def search_skill(
    family: str,
    context: SearchContext,
    full: Evaluator,
    screen: Evaluator | None = None,
    *,
    top_k: int = 4,
    min_psnr: float | None = None,
    progress=None,
) -> SkillFront:
    """Search one skill family's knobs; returns its front over the full workload.

    >>> front = search_skill("cache", ctx, full_evaluator, screen_evaluator)  # doctest: +SKIP
    """
    skills = skills_by_family().get(family, [])
    screen = screen or full
    if context.pipe is None:  # skills that calibrate (e.g. step caching) run it on the screening pipeline
        context = replace(context, pipe=screen.pipe)
    out = SkillFront(family, [])
    tick = progress or (lambda *_: None)
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
        results = []
        try:
            for c in skill.search_space(context):
                results.append(screen.evaluate([c]))
                tick(results[-1])
            for c in skill.refine(context, results):
                results.append(screen.evaluate([c]))
                tick(results[-1])
        except Exception as e:  # noqa: BLE001 — one technique's broken search must not sink its family
            out.unavailable[kind] = (
                f"search failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            )
        out.screened.extend(results)
    for r in _promising(out.screened, min_psnr, top_k):
        configs = [config_from_dict(t) for t in r.techniques]
        out.full.append(full.evaluate(configs) if screen is not full else r)
        tick(out.full[-1])
    out.front = pareto_front(out.full)
    if isinstance(context.notes.get(family), dict):
        out.notes.update(context.notes[family])  # the skill's own evidence (e.g. a sensitivity scan)
    return out
