"""The integrator: compose the skills' fronts, judge compositions, race them, validate the winner.

Speedups of stacked techniques do not multiply (int8 on top of a cache adds far less than
alone: the cache already removed most of the work it would speed up), so every composition's
speed is predicted from its own counted work (the cost model; the parts' measured factors for
what the model does not price) and the finalists are measured end to end, in one race.

Search (``run``):

1. each family's fastest part that beat the baseline (interval above 1.0) — its quality evidence
   comes from its own search on the same split, so it is not evaluated again;
2. every pair of those parts, each judged once (most predicted gain per dB lost first), then
   greedy growth of the best passing stack; a stack whose quality screen fails is
   *re-tuned*: its tunable part steps down its own ladder (the settings its search judged on
   the whole split, fastest first) until the stack passes — the knob follows what is left of the
   budget once another part has spent some of it;
3. lossless parts (PSNR inf, e.g. text K/V reuse) on top of the best stacks when seams allow;
4. the passing compositions with the best predicted speed are raced against the baseline
   together (``sol.bench.timing.race``); a composition whose interval does not lie above 1.0
   never ranks;
5. validation: the ranked compositions, fastest first, are re-checked on the held-out split
   (prompts and seeds the search never saw) until one passes; each keeps both verdicts.

Each composition keeps its measured and predicted speedup and PSNR; one that falls short
(measured < 85% of the predicted speedup, or PSNR 2 dB under the prediction) is flagged as an
interaction in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sol.bench.evaluate import CandidateResult, Evaluator
from sol.errors import ConflictError
from sol.integrator.pareto import pareto_front
from sol.integrator.screening import Screen
from sol.skills.base import compose, config_from_dict, skill_for

# A composition whose measured speedup falls this far below its prediction (or whose PSNR falls
# this many dB below the predicted one) is flagged.
SPEEDUP_SHORTFALL = 0.85
PSNR_SHORTFALL_DB = 2.0
MIN_GAIN = 1.02  # untimed legacy results: speedups below this are timing noise, not gains


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


def _gains(r: CandidateResult) -> bool:
    """A part worth stacking: timed with its interval above 1.0 (legacy untimed-interval results:
    a speedup above ``MIN_GAIN``), or exact (lossless parts join only when they do not slow a stack)."""
    if math.isinf(r.psnr):
        return True
    if r.timing:
        return r.beats_baseline
    return (r.speedup or 0) > MIN_GAIN


@dataclass
class Composition:
    id: str
    families: list[str]
    parts: list[str]  # labels of the parts, from their skills' fronts
    result: CandidateResult
    predicted_speedup: float
    predicted_psnr: float
    interaction: str | None = None
    validation: CandidateResult | None = None  # the held-out split, when it was re-checked there
    reused: bool = False  # a single part whose quality evidence comes from its own skill search

    @property
    def passes(self) -> bool:
        return bool(self.result.ok and self.result.screen.get("passes", True))

    @property
    def validated(self) -> bool | None:
        """True / False after validation; None when it was not re-checked on the held-out split."""
        if self.validation is None:
            return None
        return bool(self.validation.ok and self.validation.screen.get("passes"))

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "families": self.families,
            "parts": self.parts,
            "result": self.result.to_json(),
            "predicted_speedup": self.predicted_speedup,
            "predicted_psnr": self.predicted_psnr,
            "interaction": self.interaction,
            "validation": self.validation.to_json() if self.validation is not None else None,
            "validated": self.validated,
            "reused": self.reused,
        }

    @classmethod
    def from_json(cls, d: dict) -> Composition:
        d = {k: v for k, v in d.items() if k != "validated"}
        val = d.get("validation")
        return cls(**{**d, "result": CandidateResult.from_json(d["result"]),
                      "validation": CandidateResult.from_json(val) if val else None})  # fmt: skip


@dataclass
class Integration:
    compositions: list[Composition] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    race: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)

    def ranked(self, min_psnr: float) -> list[Composition]:
        """Compositions that ran, meet the floor (and the quality screen) and, when timed with an
        interval, beat the baseline — fastest first."""
        ok = [
            c
            for c in self.compositions
            if c.result.ok
            and c.result.psnr >= min_psnr
            and c.passes
            and (not c.result.timing or c.result.beats_baseline)
        ]
        return sorted(ok, key=lambda c: -(c.result.speedup or 0))

    def to_json(self) -> dict:
        return {"compositions": [c.to_json() for c in self.compositions], "log": self.log,
                "race": self.race, "validation": self.validation}  # fmt: skip


def _interval_text(r: CandidateResult) -> str:
    iv = r.interval
    return f"{r.speedup:.2f}x, interval {iv[0]:.2f}-{iv[1]:.2f}x" if iv and r.speedup else "untimed"


def _interaction(result: CandidateResult, pred_speed: float, pred_psnr: float) -> str | None:
    """What a stack lost against the product of its parts: speed once raced, quality once judged."""
    if not result.ok:
        return None
    notes = []
    if result.speedup is not None and result.speedup < SPEEDUP_SHORTFALL * pred_speed:
        notes.append(
            f"speedup {result.speedup:.2f}x vs {pred_speed:.2f}x predicted: they overlap"
            " (one removes work the other would have sped up)"
        )
    if not math.isinf(pred_psnr) and result.psnr < pred_psnr - PSNR_SHORTFALL_DB:
        notes.append(f"PSNR {result.psnr:.1f} dB vs {pred_psnr:.1f} dB predicted: errors compound")
    return "; ".join(notes) or None


class Integrator:
    """Builds, judges, races and validates compositions from per-skill fronts.

    ``fronts``: family -> its timed finalists; ``ladders`` (optional): family -> every setting its
    search judged on the whole split (the steps a re-tune may take). ``screen`` predicts the gate
    (default: the worst video against ``min_psnr``); ``validator`` evaluates on the held-out split
    (an ``Evaluator``, or a function that builds one when there is something to validate).

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
        ladders: dict[str, list[CandidateResult]] | None = None,
        screen: Screen | None = None,
        validator: Evaluator | None = None,
        finalists: int = 4,
        min_pairs: int | None = None,
        max_pairs: int | None = None,
        timing_budget_s: float | None = None,
        max_validations: int = 3,
    ):
        # Timed points that beat the baseline, fastest first, then exact parts (untimed: they join
        # stacks and are measured there).
        self.fronts = {
            fam: [r for r in pareto_front(rs) if r.psnr >= min_psnr and _gains(r)]
            + [r for r in rs if r.ok and math.isinf(r.psnr) and r.speedup is None]
            for fam, rs in fronts.items()
            if fam not in exclude
        }
        # A family whose timed points all failed to beat the baseline: its fastest is shown (with
        # the interval that lost), never stacked, never raced again.
        self.losers = {
            fam: max(ok, key=lambda r: r.speedup or 0)
            for fam, rs in fronts.items()
            if fam not in exclude and not self.fronts.get(fam)
            for ok in [[r for r in rs if r.ok and r.timing and r.psnr >= min_psnr]]
            if ok
        }
        self.ladders = {
            fam: sorted(
                [
                    r
                    for r in (ladders or {}).get(fam, [])
                    if r.ok and r.screen.get("passes", r.psnr >= min_psnr)
                ],
                key=lambda r: -(r.predicted_speedup or r.speedup or 0),
            )
            for fam in self.fronts
        }
        self.evaluator = evaluator
        self.min_psnr = min_psnr
        self.max_evals = max_evals
        self.progress = progress or (lambda *_: None)
        self.screen = screen or Screen(min_psnr=min_psnr, unseen=1)
        self.validator = validator
        self.finalists = finalists
        self.min_pairs, self.max_pairs, self.timing_budget_s = min_pairs, max_pairs, timing_budget_s
        self.max_validations = max_validations
        self.out = Integration()
        self._seen: dict[str, Composition] = {}
        self._evals = 0

    # --- building blocks ---------------------------------------------------------------------

    def _composes(self, parts: list[Part]) -> bool:
        try:
            compose([c for p in parts for c in p.configs], self.evaluator.adapter)
        except ConflictError:
            return False
        return True

    def _predict(self, parts: list[Part], result: CandidateResult | None) -> float:
        """The stack's speedup: the cost model on its counted work, times the measured factor of
        each part the model cannot price (scaled to the denoising share it acts on)."""
        base, _ = predict(parts)
        if result is None or not result.predicted:
            return base
        speed = float(result.predicted["speedup"])
        cm = self.evaluator.cost_model
        for p in parts:
            seams = {str(s) for c in p.configs for s in skill_for(c).writes}
            if cm is None or not (seams & {"linear_precision", "kernel_fusion", "attention_backend"}):
                continue
            s = p.result.speedup or 1.0
            # Alone it turned generation_s into generation_s / s, acting only on the denoisers.
            fixed, total = cm.fixed_s, cm.generation_s
            factor = max(1e-3, (total / s - fixed) / max(1e-9, total - fixed))
            t = float(result.predicted["seconds"])
            speed = total / (fixed + (t - fixed) * factor)
        return speed

    def _score(self, trial: list[Part], base_speed: float, base_psnr: float) -> float:
        """Predicted gain per dB lost of ``trial`` over a stack at ``base_speed``/``base_psnr``."""
        speed, psnr = predict(trial)
        gain = math.log(max(speed, 1e-9) / max(base_speed, 1e-9))
        return gain / max(0.1, (base_psnr - psnr) if math.isfinite(base_psnr) else 0.1)

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
        cid = f"c{len(self._seen) + 1}"
        _speed, psnr = predict(parts)
        if len(parts) == 1 and parts[0].result.videos >= len(self.evaluator.runs) and parts[0].result.ok:
            result, reused = parts[0].result, True  # judged on this split by its own search
        else:
            if self._evals >= self.max_evals:
                return None
            self._evals += 1
            result, reused = self.evaluator.evaluate(configs, tag=cid, timing=False), False
        self.screen.observe(result)
        result.screen = self.screen.judge(result)
        speed = self._predict(parts, result)
        comp = Composition(cid, [p.family for p in parts], [p.result.label for p in parts], result, speed, psnr,
                           reused=reused)  # fmt: skip
        if len(parts) > 1:  # its quality interaction is known now; its speed one once it is raced
            comp.interaction = _interaction(result, speed, psnr)
        self._seen[key] = comp
        self.out.compositions.append(comp)
        verdict = (
            "passes"
            if comp.passes
            else f"fails ({'; '.join(result.screen.get('failed', [])) or result.reason})"
        )
        self.out.log.append(
            f"{cid}: {result.label}: {result.psnr:.1f} dB worst video, predicted {speed:.2f}x; {verdict}"
            + (" (evidence from its skill search)" if reused else "")
        )
        self.progress(comp)
        return comp

    def _retuned(self, parts: list[Part]) -> tuple[Composition | None, list[Part]]:
        """Step the most lossy tunable part down its ladder until the stack passes (or the budget ends):
        the passing composition and its parts, or None and ``parts``."""
        order = sorted(range(len(parts)), key=lambda i: parts[i].result.psnr)
        for i in order:
            fam = parts[i].family
            ladder = self.ladders.get(fam, [])
            idx = next((k for k, r in enumerate(ladder) if r.label == parts[i].result.label), -1)
            for r in ladder[idx + 1 :]:
                if r.psnr <= parts[i].result.psnr:
                    continue  # a step down must be more faithful
                trial = [*parts[:i], Part(fam, r), *parts[i + 1 :]]
                comp = self._evaluate(trial)
                if comp is None:
                    return None, parts
                if comp.passes:
                    self.out.log.append(f"re-tuned {fam} to {r.label} for the remaining budget")
                    return comp, trial
        return None, parts

    # --- the search ---------------------------------------------------------------------------

    def run(self) -> Integration:
        for fam, r in self.losers.items():
            comp = self._evaluate([Part(fam, r)])
            if comp is not None:
                self.out.log.append(
                    f"{comp.id}: {fam} did not beat the baseline ({_interval_text(r)}): not stacked"
                )
        singles: list[tuple[Composition, list[Part]]] = []
        for fam, front in self.fronts.items():
            if front:
                comp = self._evaluate([Part(fam, front[0])])
                if comp is not None and comp.passes:
                    singles.append((comp, [Part(fam, front[0])]))
        if not singles:
            self.out.log.append("no skill has a candidate within the quality budget that beat the baseline")
            return self.out
        stacks = list(singles)
        # Every pair of singles first, each judged once. Building only on the fastest single left
        # pairs of the others unjudged: a fresh-clone make demo built on token pruning, spent its
        # budget re-tuning pruning under the cache, and never judged fusion on the chosen cache.
        pairs = []
        lossy = [(c, ps) for c, ps in singles if not math.isinf(ps[0].result.psnr)]  # exact: at the end
        for i, (ca, pa) in enumerate(lossy):
            for cb, pb in lossy[i + 1 :]:
                if self._composes([*pa, *pb]):
                    base = max((ca, cb), key=lambda c: c.predicted_speedup)
                    pairs.append(
                        (self._score([*pa, *pb], base.predicted_speedup, base.result.psnr), [*pa, *pb])
                    )
        pairs.sort(key=lambda o: -o[0])
        failed = []
        for _score, trial in pairs:
            comp = self._evaluate(trial)
            if comp is not None and comp.passes:
                stacks.append((comp, trial))
            elif comp is not None:
                failed.append(trial)
        best, parts = max(stacks, key=lambda s: s[0].predicted_speedup)
        # Greedy growth of the best stack by predicted gain per dB lost; a failing stack is re-tuned.
        while True:
            options = []
            for fam, front in self.fronts.items():
                for r in front[:1]:
                    if any(p.family == fam for p in parts) or math.isinf(r.psnr):
                        continue  # lossless parts join at the end
                    trial = [*parts, Part(fam, r)]
                    if self._composes(trial):
                        options.append((self._score(trial, best.predicted_speedup, best.result.psnr), trial))
            improved = False
            for _score, trial in sorted(options, key=lambda o: -o[0]):
                comp = self._evaluate(trial)
                if comp is not None and not comp.passes:
                    comp, trial = self._retuned(trial)
                if comp is not None and comp.passes and comp.predicted_speedup > best.predicted_speedup:
                    best, parts, improved = comp, trial, True
                    stacks.append((comp, trial))
                    break
            if not improved:
                break
        # What budget is left re-tunes the pairs that failed, most promising first.
        for trial in failed:
            comp, trial = self._retuned(trial)
            if comp is not None and comp.passes:
                stacks.append((comp, trial))
        # Lossless parts on top of the best stacks, when seams allow.
        for _comp, parts0 in sorted(stacks, key=lambda s: -s[0].predicted_speedup)[:2]:
            for fam, front in self.fronts.items():
                for r in front:
                    if not math.isinf(r.psnr) or any(p.result.label == r.label for p in parts0):
                        continue
                    if (r.predicted_speedup or 1.0) < 1.0:
                        continue  # exact but slower by its own counted work (a profile that kept all dense)
                    trial = [*parts0, Part(fam, r)]
                    if self._composes(trial):
                        self._evaluate(trial)
        self._race()
        self._validate()
        return self.out

    def _race(self) -> None:
        lost = {r.label for r in self.losers.values()}
        passing = [c for c in self.out.compositions if c.passes and not (c.reused and c.result.label in lost)]
        top = sorted(passing, key=lambda c: -c.predicted_speedup)[: self.finalists]
        if not top:
            return
        results = [c.result for c in top]
        self.out.race = self.evaluator.time(results, min_pairs=self.min_pairs, max_pairs=self.max_pairs,
                                            budget_s=self.timing_budget_s)  # fmt: skip
        for c in top:
            c.interaction = _interaction(c.result, c.predicted_speedup, c.predicted_psnr)
            iv = c.result.interval
            self.out.log.append(
                f"{c.id}: measured {c.result.speedup:.2f}x"
                + (f" [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else "")
                + f" vs predicted {c.predicted_speedup:.2f}x"
                + ("" if c.result.beats_baseline or not c.result.timing else ": does not beat the baseline")
            )

    def _validate(self) -> None:
        ranked = self.out.ranked(self.min_psnr)[: self.max_validations]
        if self.validator is None:
            self.out.validation = {"split": None, "note": "the workload has no validation split"}
            return
        if not ranked:
            self.out.validation = {"split": "held out", "note": "no composition to validate", "tried": []}
            return
        if not isinstance(self.validator, Evaluator):
            self.validator = self.validator()  # built on first use: its baseline costs a generation per video
        # The gate's own question on the held-out split: every video there clears the floor.
        held = Screen(
            min_psnr=self.min_psnr,
            min_ssim=self.screen.min_ssim,
            max_flicker_drop=self.screen.max_flicker_drop,
            predictive=False,
        )
        tried = []
        for comp in ranked:
            configs = [config_from_dict(t) for t in comp.result.techniques]
            v = self.validator.evaluate(configs, tag=f"{comp.id}-validation", timing=False)
            v.screen = held.judge(v)
            comp.validation = v
            tried.append(comp.id)
            gap = (
                comp.result.psnr - v.psnr
                if math.isfinite(comp.result.psnr) and math.isfinite(v.psnr)
                else 0.0
            )
            self.out.log.append(
                f"{comp.id}: validation {v.psnr:.1f} dB worst held-out video (search {comp.result.psnr:.1f} dB,"
                f" gap {gap:+.1f} dB): {'passes' if comp.validated else 'fails'}"
            )
            if comp.validated:
                break
        self.out.validation = {
            "split": self.validator.workload.name,
            "videos": len(self.validator.runs),
            "tried": tried,
        }
