"""The quantization skill: apply a :class:`QuantizeLinear` and search mixed-precision assignments.

``apply`` swaps each selected ``nn.Linear`` for its quantized module; the full-precision
weights are dropped, so the skill is irreversible (``reversible = False``): the evaluator
applies it to a copy of the transformer, and a server that wants full precision back
reloads the model.

The search (``search_space`` then ``refine``) on one hardware:

1. pick the scheme: the first speed scheme that runs here (CPU: ``int8_dynamic``; GPU:
   ``torchao_fp8`` on cc >= 8.9, else ``torchao_int8``); the others are reported unavailable;
2. scan: per-group sensitivity and per-layer speed (:mod:`.sensitivity`);
3. candidates: ``uniform`` (every linear), ``fast`` (only layers faster quantized), and
   ``fast`` minus the top-k units (groups, or layers of split groups) of the ranking (drift²
   per second saved) for k = 1, 2, n/2 and the longest prefixes that give up at most 1% and
   5% of the time saving;
4. refine: fit the offset between predicted transformer-output SNR and screened video PSNR,
   and add the mix predicted to just meet ``min_psnr`` (and one more conservative).

Knobs a caller may set in ``context.notes["quantization"]`` before the search:
``calibration_calls`` (4), ``timing_repeats`` (5), ``granularity`` ("group" | "layer"),
``split_top`` (2: the most drifting groups re-scanned per layer), ``top_k_groups`` (list of
k, replacing the default ones). The scan's evidence is written there
too (``report``, ``candidates``, ``predicted_rel_err``, ``refine``) and lands in
``SkillFront.notes``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sol.errors import SolError
from sol.hooks import Handle
from sol.models.base import Capability
from sol.skills.base import Phase, Seam, SearchContext, Skill, register_skill
from sol.skills.quantization import schemes as S
from sol.skills.quantization.config import KIND, REGEX_PREFIX, QuantizeLinear, QuantRule

if TYPE_CHECKING:  # the scan is search-time code (it times layers): imported where it runs
    from sol.skills.quantization import sensitivity

NOTES_KEY = "quantization"  # context.notes[NOTES_KEY]: the scan's evidence (small JSON)

# Candidate mixes that give up at most these shares of the scheme's time saving (see _cheap_prefix).
CHEAP_SHARES = (0.01, 0.05)
APPLIED_ATTR = "_sol_quantization"  # set on a quantized transformer: refuses a second apply


def _hardware_of(transformer):
    """The device the transformer's weights live on, as a :class:`sol.hardware.Hardware`."""
    from sol.hardware import detect, detect_cpu

    param = next(transformer.parameters(), None)
    if param is None or param.device.type == "cpu":
        return detect_cpu()
    return detect()


def quantize(pipe, config: QuantizeLinear, adapter=None) -> dict[str, str]:
    """Swap the selected linear layers of one denoiser (``adapter``'s; default: every denoiser of
    ``pipe``); returns name -> scheme (names of later experts prefixed ``transformer_2:`` …).

    >>> quantize(pipe, QuantizeLinear(scheme="int8_dynamic"))  # doctest: +SKIP
    {'blocks.0.attn1.to_q': 'int8_dynamic', ...}
    """
    if adapter is None:
        from sol.models.base import adapter_for

        out = {}
        for i, expert in enumerate(adapter_for(pipe).experts):
            done = quantize(pipe, config, expert)
            out.update(done if i == 0 else {f"{expert.name}:{k}": v for k, v in done.items()})
        return out
    transformer = adapter.transformer
    if getattr(transformer, APPLIED_ATTR, None):
        raise SolError(
            f"this transformer is already quantized ({getattr(transformer, APPLIED_ATTR)});"
            " reload the model to quantize it differently"
        )
    hardware = _hardware_of(transformer)
    for name in sorted(config.schemes):
        S.scheme(name).require(hardware)  # before touching anything: a refusal leaves the model as is
    linears = adapter.linear_layers()
    plan = config.resolve(linears)
    replacements = {n: S.scheme(s).convert(linears[n], inplace=True) for n, s in plan.items()}
    S.swap(transformer, replacements)
    setattr(transformer, APPLIED_ATTR, config.label())
    return plan


@register_skill(QuantizeLinear)
class QuantizationSkill(Skill):
    name = "quantization"
    reads = frozenset()
    writes = frozenset({Seam.LINEAR_PRECISION})
    requires = frozenset({Capability.LINEAR_LAYERS})
    phase = Phase.WEIGHTS  # weights first: attention backends, token sets and caches wrap what it leaves
    reversible = False

    def apply(self, pipe, config: QuantizeLinear, adapter) -> Handle:
        quantize(pipe, config, adapter)
        # Irreversible: the full-precision weights are gone. revert() is a no-op (it must not
        # raise: apply_all calls it while unwinding a failed stack); reload to undo.
        return Handle(None)

    def examples(self) -> list[QuantizeLinear]:
        return [
            QuantizeLinear(scheme="int8_dynamic"),
            QuantizeLinear(
                scheme="int8_dynamic",
                include=[f"{REGEX_PREFIX}blocks\\.\\d+\\.ffn\\..*"],
                exclude=[f"{REGEX_PREFIX}blocks\\.0\\..*"],
            ),
        ]

    # --- availability ------------------------------------------------------------------------

    def available(self, hardware) -> str | None:
        if S.speed_schemes(hardware):
            return None
        return "; ".join(f"{n}: {why}" for n, why in S.unavailable(hardware).items())

    def unavailable_options(self, hardware) -> dict[str, str]:
        return S.unavailable(hardware)

    # --- search ------------------------------------------------------------------------------

    def _scheme_for(self, context: SearchContext) -> str:
        names = S.speed_schemes(context.hardware)
        if not names:
            raise SolError(f"no quantization scheme runs on {context.hardware.name}")
        return names[0]

    def scan(self, context: SearchContext) -> sensitivity.Report:
        """Calibrate (pipeline if ``context.pipe`` is set, else synthetic) and scan; cached in notes."""
        from sol.skills.quantization import sensitivity

        notes = context.notes.setdefault(NOTES_KEY, {})
        if "report" in notes:
            return sensitivity.Report.from_json(notes["report"])
        scheme = S.scheme(self._scheme_for(context))
        pipe = getattr(context, "pipe", None)
        max_calls = int(notes.get("calibration_calls", 4))
        if pipe is not None:
            calib = sensitivity.capture(pipe, context.adapter, context.workload, max_calls=max_calls)
        else:
            calib = sensitivity.synthetic(context.adapter, context.workload, max_calls=max_calls)
        report = sensitivity.scan(
            context.adapter,
            calib,
            scheme,
            granularity=notes.get("granularity", "group"),
            timing_repeats=int(notes.get("timing_repeats", 5)),
            split_top=int(notes.get("split_top", 2)),
        )
        notes["report"] = report.to_json()
        return report

    def candidates(
        self, report: sensitivity.Report, ks: list[int] | None = None
    ) -> dict[str, QuantizeLinear]:
        """Named candidates from a scan: uniform, fast, and fast minus the top-k ranked groups."""
        scheme = report.scheme
        out: dict[str, QuantizeLinear] = {"uniform": QuantizeLinear(scheme=scheme)}
        slow = sorted(n for n, s in report.layers.items() if not s.faster)
        ranked = report.ranked()
        if not ranked:
            return out  # nothing is faster quantized: only the uniform reference
        fast = _mix(scheme, kept_groups=[], kept_layers=slow, report=report)
        out["fast"] = fast
        n = len(ranked)
        if ks is None:
            ks = sorted({1, 2, max(1, n // 2)} | {_cheap_prefix(ranked, share) for share in CHEAP_SHARES})
        for k in ks:
            if 0 < k < n:
                out[f"fast-top{k}"] = _mix(scheme, [g.pattern for g in ranked[:k]], slow, report)
        return _dedupe(out)

    def search_space(self, context: SearchContext) -> list[QuantizeLinear]:
        report = self.scan(context)
        notes = context.notes[NOTES_KEY]
        cands = self.candidates(report, notes.get("top_k_groups"))
        notes["candidates"] = {label: c.model_dump(mode="json") for label, c in cands.items()}
        notes["predicted_rel_err"] = {label: _predicted(report, c) for label, c in cands.items()}
        return list(cands.values())

    def refine(self, context: SearchContext, results: list[Any]) -> list[QuantizeLinear]:
        """Fit video PSNR ~ offset - 20 log10(predicted drift) on screened mixes; add the k that just fits."""
        from sol.skills.quantization import sensitivity

        notes = context.notes.get(NOTES_KEY, {})
        if "report" not in notes:
            return []
        report = sensitivity.Report.from_json(notes["report"])
        ranked = report.ranked()
        if len(ranked) < 2:
            return []
        min_psnr = context.min_psnr
        offsets, tried = [], set()
        for r in results:
            if not r.ok or not r.techniques or r.techniques[0].get("kind") != KIND:
                continue
            cfg = QuantizeLinear.model_validate(r.techniques[0])
            tried.add(cfg)
            err = _predicted(report, cfg)
            if err > 0 and math.isfinite(r.psnr):
                offsets.append(r.psnr + 20 * math.log10(err))
        if not offsets:
            return []
        offset = sorted(offsets)[len(offsets) // 2]
        slow = sorted(n for n, s in report.layers.items() if not s.faster)
        want = []
        for target in (min_psnr, min_psnr + 3.0):  # the mix that just fits, and one with margin
            for k in range(0, len(ranked)):
                cfg = _mix(report.scheme, [g.pattern for g in ranked[:k]], slow, report)
                err = _predicted(report, cfg)
                if err == 0 or offset - 20 * math.log10(err) >= target:
                    if cfg not in tried and cfg not in want:
                        want.append(cfg)
                    break
        notes["refine"] = {"psnr_offset_db": offset, "min_psnr": min_psnr, "added": len(want)}
        return want


def _cheap_prefix(ranked: list, share: float) -> int:
    """The longest prefix of the ranking whose layers give at most ``share`` of the total saving.

    Keeping those in full precision costs at most ``share`` of the speedup the scheme can bring
    (e.g. Wan's text K/V projections: 16 tokens, drift like a 576-token layer, ~0.1% of the time).
    """
    total = sum(g.saved_s for g in ranked)
    k, kept = 0, 0.0
    for g in ranked:
        if kept + g.saved_s > share * total:
            break
        k, kept = k + 1, kept + g.saved_s
    return k


def _mix(scheme: str, kept_groups: list[str], kept_layers: list[str], report) -> QuantizeLinear:
    """Keep ``kept_groups`` (patterns) and ``kept_layers`` (names) in full precision, quantize the rest.

    Kept layers already inside a kept group are not repeated (shorter plans, same assignment).
    """
    groups_by_pattern = {g.pattern: g for g in report.groups}
    covered = {n for p in kept_groups for n in groups_by_pattern[p].layers}
    kept = list(kept_groups) + [n for n in kept_layers if n not in covered]
    rules = [QuantRule(match=m, scheme="none") for m in kept]
    rules.append(QuantRule(match=f"{REGEX_PREFIX}.*", scheme=scheme))
    return QuantizeLinear(rules=tuple(rules))


def _predicted(report, cfg: QuantizeLinear) -> float:
    """Predicted relative drift of the transformer output: quadrature sum over quantized groups.

    A group counts when any of its layers is quantized (its measured drift is an upper bound then).
    """
    names = [n for g in report.groups for n in g.layers]
    quantized = set(cfg.assignment(names))
    return report.predict_rel_err([g.group for g in report.groups if quantized & set(g.layers)])


def _dedupe(cands: dict[str, QuantizeLinear]) -> dict[str, QuantizeLinear]:
    out, seen = {}, []
    for label, c in cands.items():
        if c not in seen:
            seen.append(c)
            out[label] = c
    return out
