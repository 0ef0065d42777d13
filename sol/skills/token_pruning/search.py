"""Search spaces of the token-pruning methods, under the quality budget (worst-video PSNR).

What was measured on ``sol-tiny-wan`` at ``long`` (6 steps; docs/skills.md has the table) shapes
the space:

- pruning the first steps costs most: one step pruned at keep 0.5 gave 23.8 dB at step 1, 37.8
  at step 2, 42.6 at step 3, 43.5 at step 4, 68 dB at the last step. So the first third of the
  steps runs full, and the keep ratio falls geometrically over the rest (``keep`` -> ``keep_end``);
- block 0 always runs full (``layers`` from 1): its output is what the scorer reads, and that
  picked better tokens (29.5 vs 27.7 dB at the same work);
- merging (ToMe) and key/value merging (AsymRnR) fell below 30 dB at ratio 0.5 on every step and
  were slower than the baseline on ``default`` (320 tokens): one candidate each, on the later
  steps, as evidence.

Screening, gentlest first within each method: 3 step-prune schedules, 1 key/value-merge ratio,
1 merge ratio. ``refine`` then bisects the best variant's aggressiveness (the merge ratio; for
step pruning ``1 - keep``, ``keep_end`` scaled with it) toward the floor, as
:func:`sol.skills.search.bisect_threshold` does for thresholds: a bracket is split in thirds, an
all-pass screen goes 1.5x and 2x further, an all-fail screen goes back to 1/2 and 1/4 — unless
even the gentlest setting was not faster than ``MIN_SPEEDUP``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import ValidationError

from sol.hooks import Span
from sol.skills.base import config_from_dict
from sol.skills.search import MIN_SPEEDUP, TOLERANCE


def full_prefix(num_steps: int) -> int:
    """Steps computed at full size first: a third of the schedule, at least one (it seeds the cache)."""
    return max(1, round(num_steps / 3))


def _layers(context) -> Span:
    # Block 0 full when there is a block after it: its output is what the scorer reads.
    return Span(start=1) if len(context.adapter.blocks()) > 1 else Span()


def prune_space(context) -> list:
    """Step pruning: a ramped keep ratio after a full first third of the steps."""
    from sol.skills.token_pruning.step_prune import StepPruneConfig

    full = (Span(stop=full_prefix(context.workload.num_inference_steps)),)
    layers = _layers(context)
    return [
        StepPruneConfig(keep=0.9, keep_end=0.3, full_steps=full, layers=layers),
        StepPruneConfig(keep=0.9, keep_end=0.1, full_steps=full, layers=layers),
        StepPruneConfig(keep=0.7, keep_end=0.1, full_steps=full, layers=layers),
    ]


def kv_space(context) -> list:
    """Key/value merging on the steps after the full first third."""
    from sol.skills.token_pruning.kv_merge import KVMergeConfig

    steps = Span(start=full_prefix(context.workload.num_inference_steps))
    return [KVMergeConfig(ratio=0.5, steps=steps)]


def merge_space(context) -> list:
    """Token merging (queries too) on the later steps: one gentle ratio, as evidence."""
    from sol.skills.token_pruning.merge import TokenMergeConfig

    steps = Span(start=full_prefix(context.workload.num_inference_steps))
    return [TokenMergeConfig(ratio=0.3, steps=steps)]


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def bisect_aggressiveness(
    results,
    config_type,
    min_psnr: float,
    level: Callable[[object], float],
    with_level: Callable[[object, float], object],
    fields: tuple[str, ...],
) -> list:
    """Two new configs of ``config_type`` around the PSNR floor, on the variant (every field but
    ``fields``) whose fastest candidate at the floor is fastest. ``level(cfg)`` is how aggressive a
    config is (higher = less computed); ``with_level`` builds the config at another level."""
    kind = config_type.model_fields["kind"].default
    pts = []
    for r in results:
        if not r.ok or len(r.techniques) != 1 or r.techniques[0].get("kind") != kind:
            continue
        cfg = config_from_dict(r.techniques[0])
        psnr = r.psnr if not math.isnan(r.psnr) else -math.inf
        pts.append((cfg, psnr, r.speedup or 0.0))
    if not pts:
        return []
    variants: dict[tuple, list] = {}
    for p in pts:
        key = tuple(sorted((k, str(v)) for k, v in p[0].model_dump().items() if k not in fields))
        variants.setdefault(key, []).append(p)

    def score(ps):
        ok = [s for _c, q, s in ps if q >= min_psnr]
        return (1, max(ok)) if ok else (0, max(q for _c, q, _s in ps))

    best = sorted(max(variants.values(), key=score), key=lambda p: level(p[0]))
    ok = [p for p in best if p[1] >= min_psnr]
    if ok:
        lo = max(ok, key=lambda p: level(p[0]))
        a = level(lo[0])
        above = [level(p[0]) for p in best if p[1] < min_psnr and level(p[0]) > a]
        if above and min(above) - a <= TOLERANCE * a:
            # Converged, as the cache's bisection: on `long` four more settings between keep 0.707
            # and 0.702 moved the predicted speed by 0.004x.
            return []
        new = [a + (min(above) - a) / 3, a + 2 * (min(above) - a) / 3] if above else [a * 1.5, a * 2.0]
        base = lo[0]
    else:
        base = best[0][0]
        if best[0][2] < MIN_SPEEDUP:
            return []  # even the gentlest setting misses the floor without paying
        new = [level(base) / 2, level(base) / 4]
    seen = {round(level(p[0]), 3) for p in best}
    out = []
    for a in new:
        if round(a, 3) in seen or a <= 0:
            continue
        seen.add(round(a, 3))
        try:
            out.append(with_level(base, a))
        except (ValidationError, ValueError):
            continue  # outside the knob's range: nothing to try there
    return out


def refine_merge(context, results, config_type) -> list:
    """Bisect a merge ratio (``token_pruning.merge`` / ``kv_merge``) toward the floor."""
    return bisect_aggressiveness(
        results,
        config_type,
        context.min_psnr,
        level=lambda c: c.ratio,
        with_level=lambda c, a: config_type.model_validate({**c.model_dump(), "ratio": _round(min(a, 0.9))}),
        fields=("ratio",),
    )


def refine_prune(context, results, config_type) -> list:
    """Bisect step pruning's dropped share ``1 - keep`` (``keep_end`` scaled with ``keep``)."""

    def with_level(c, a):
        keep = _round(1.0 - a)
        if not 0.02 <= keep < 1.0:
            raise ValueError("keep out of range")
        end = None if c.keep_end is None else _round(max(0.02, c.keep_end * keep / c.keep))
        return config_type.model_validate({**c.model_dump(), "keep": keep, "keep_end": end})

    return bisect_aggressiveness(
        results,
        config_type,
        context.min_psnr,
        level=lambda c: 1.0 - c.keep,
        with_level=with_level,
        fields=("keep", "keep_end"),
    )
