"""The integrator: compose the skills' fronts, measure compositions end to end, flag interactions.

Speedups of stacked techniques do not multiply (fp8 on top of a cache adds far less than
alone: the cache already removed most of the work fp8 would speed up), so every composition
is measured; the prediction from its parts is kept next to the measurement to show where
techniques interact.

Search: greedy stacking by marginal gain per quality cost (log-speedup gained per dB of
PSNR lost, predicted), then local moves along each part's own front, within ``max_evals``.
A stack may hold several techniques of one family when the effect check accepts them
(text K/V reuse beside a step cache); lossless parts (PSNR = inf) are tried on top of the
best stack at the end and kept when they do not slow it down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sol.bench.evaluate import CandidateResult, Evaluator
from sol.errors import ConflictError
from sol.integrator.pareto import pareto_front
from sol.skills.base import compose, config_from_dict

# A composition whose measured speedup falls this far below the product of its parts'
# speedups (or whose PSNR falls this many dB below the predicted one) is flagged.
SPEEDUP_SHORTFALL = 0.85
PSNR_SHORTFALL_DB = 2.0
MIN_GAIN = 1.02  # speedups below this are timing noise, not gains


@dataclass
class Part:
    family: str
    result: CandidateResult

    @property
    def configs(self):
        return [config_from_dict(t) for t in self.result.techniques]


def predict(parts: list[Part]) -> tuple[float, float]:
    """Independent-effects prediction: speedups multiply, errors (MSE) add."""
    speed = math.prod(p.result.speedup or 1.0 for p in parts)
    mse = sum(0.0 if math.isinf(p.result.psnr) else 10 ** (-p.result.psnr / 10) for p in parts)
    return speed, (math.inf if mse == 0 else -10 * math.log10(mse))


@dataclass
class Composition:
    id: str
    families: list[str]
    parts: list[str]  # labels of the parts, from their skills' fronts
    result: CandidateResult
    predicted_speedup: float
    predicted_psnr: float
    interaction: str | None = None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "families": self.families,
            "parts": self.parts,
            "result": self.result.to_json(),
            "predicted_speedup": self.predicted_speedup,
            "predicted_psnr": self.predicted_psnr,
            "interaction": self.interaction,
        }

    @classmethod
    def from_json(cls, d: dict) -> Composition:
        return cls(**{**d, "result": CandidateResult.from_json(d["result"])})


@dataclass
class Integration:
    compositions: list[Composition] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def ranked(self, min_psnr: float) -> list[Composition]:
        """Compositions that ran and meet the PSNR floor, fastest first."""
        ok = [c for c in self.compositions if c.result.ok and c.result.psnr >= min_psnr]
        return sorted(ok, key=lambda c: -(c.result.speedup or 0))

    def to_json(self) -> dict:
        return {"compositions": [c.to_json() for c in self.compositions], "log": self.log}


def _interaction(result: CandidateResult, pred_speed: float, pred_psnr: float) -> str | None:
    if not result.ok or result.speedup is None:
        return None
    notes = []
    if result.speedup < SPEEDUP_SHORTFALL * pred_speed:
        notes.append(
            f"speedup {result.speedup:.2f}x vs {pred_speed:.2f}x predicted from the parts: they overlap"
            " (one removes work the other would have sped up)"
        )
    if not math.isinf(pred_psnr) and result.psnr < pred_psnr - PSNR_SHORTFALL_DB:
        notes.append(f"PSNR {result.psnr:.1f} dB vs {pred_psnr:.1f} dB predicted: errors compound")
    return "; ".join(notes) or None


class Integrator:
    """Builds and measures compositions from per-skill fronts.

    >>> integ = Integrator(fronts, evaluator, min_psnr=30.0, max_evals=8)  # doctest: +SKIP
    >>> best = integ.run().ranked(30.0)[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        fronts: dict[str, list[CandidateResult]],
        evaluator: Evaluator,
        *,
        min_psnr: float,
        max_evals: int = 8,
        exclude: tuple[str, ...] = (),
        progress=None,
    ):
        # A point that is not faster than the baseline has nothing to add to a stack, unless it is
        # exact (lossless parts are tried on top of the best stack and kept only if not slower).
        self.fronts = {
            fam: [
                r
                for r in pareto_front(rs)
                if r.psnr >= min_psnr and ((r.speedup or 0) > MIN_GAIN or math.isinf(r.psnr))
            ]
            for fam, rs in fronts.items()
            if fam not in exclude
        }
        self.evaluator = evaluator
        self.min_psnr = min_psnr
        self.max_evals = max_evals
        self.progress = progress or (lambda *_: None)
        self.out = Integration()
        self._seen: dict[str, Composition] = {}

    def _evaluate(self, parts: list[Part]) -> Composition | None:
        configs = [c for p in parts for c in p.configs]
        try:
            compose(configs, self.evaluator.adapter)
        except ConflictError as e:
            self.out.log.append(f"skip {' + '.join(p.result.label for p in parts)}: {e}")
            return None
        key = " + ".join(sorted(p.result.label for p in parts))
        if key in self._seen:
            return self._seen[key]
        if len(self._seen) >= self.max_evals:
            return None
        cid = f"c{len(self._seen) + 1}"
        result = self.evaluator.evaluate(configs, tag=cid)
        speed, psnr = predict(parts)
        comp = Composition(
            cid, [p.family for p in parts], [p.result.label for p in parts], result, speed, psnr,
            _interaction(result, speed, psnr),
        )  # fmt: skip
        self._seen[key] = comp
        self.out.compositions.append(comp)
        self.out.log.append(
            f"{cid}: {result.label}: "
            + (f"{result.speedup:.2f}x, {result.psnr:.1f} dB" if result.ok else f"failed: {result.reason}")
            + f" (predicted {speed:.2f}x, {psnr:.1f} dB)"
        )
        self.progress(comp)
        return comp

    def _passes(self, comp: Composition | None) -> bool:
        return comp is not None and comp.result.ok and comp.result.psnr >= self.min_psnr

    def run(self) -> Integration:
        # 1. Each skill's fastest point within budget, re-measured here next to the others.
        singles = []
        for fam, front in self.fronts.items():
            if front:
                comp = self._evaluate([Part(fam, front[0])])
                if self._passes(comp):
                    singles.append((comp, [Part(fam, front[0])]))
        if not singles:
            self.out.log.append("no skill has a candidate within the quality budget")
            return self.out
        best, parts = max(singles, key=lambda s: s[0].result.speedup or 0)
        # 2. Greedy stacking: add the part with the best predicted gain per dB lost.
        while len(self._seen) < self.max_evals:
            options = []
            for fam, front in self.fronts.items():
                for r in front:
                    if any(p.result.label == r.label for p in parts) or math.isinf(r.psnr):
                        continue  # lossless parts join at the end (4.)
                    trial = [*parts, Part(fam, r)]
                    if not self._composes(trial):
                        continue
                    speed, psnr = predict(trial)
                    if psnr < self.min_psnr:
                        continue
                    gain = math.log(max(speed, 1e-9) / (best.result.speedup or 1.0))
                    cost = max(0.1, best.result.psnr - psnr) if not math.isinf(best.result.psnr) else 0.1
                    options.append((gain / cost, trial))
            improved = False
            for _score, trial in sorted(options, key=lambda o: -o[0]):
                comp = self._evaluate(trial)
                if self._passes(comp) and (comp.result.speedup or 0) > (best.result.speedup or 0):
                    best, parts, improved = comp, trial, True
                    break
                if len(self._seen) >= self.max_evals:
                    break
            if not improved:
                break
        # 3. Local moves: step each part to a faster point on its own front.
        changed = True
        while changed and len(self._seen) < self.max_evals:
            changed = False
            for i, part in enumerate(parts):
                front = self.fronts[part.family]
                idx = next((k for k, r in enumerate(front) if r.label == part.result.label), None)
                for r in reversed(front[: idx or 0]):  # fronts run fastest first: nearest faster point first
                    trial = [*parts[:i], Part(part.family, r), *parts[i + 1 :]]
                    comp = self._evaluate(trial)
                    if self._passes(comp) and (comp.result.speedup or 0) > (best.result.speedup or 0):
                        best, parts, changed = comp, trial, True
                        break
                if changed or len(self._seen) >= self.max_evals:
                    break
        # 4. Lossless parts (exact: PSNR inf) on top of the best stack, kept when not slower.
        for fam, front in self.fronts.items():
            for r in front:
                if not math.isinf(r.psnr) or any(p.result.label == r.label for p in parts):
                    continue
                trial = [*parts, Part(fam, r)]
                if not self._composes(trial) or len(self._seen) >= self.max_evals:
                    continue
                comp = self._evaluate(trial)
                if self._passes(comp) and (comp.result.speedup or 0) >= (best.result.speedup or 0):
                    best, parts = comp, trial
        return self.out

    def _composes(self, parts: list[Part]) -> bool:
        try:
            compose([c for p in parts for c in p.configs], self.evaluator.adapter)
        except ConflictError:
            return False
        return True
