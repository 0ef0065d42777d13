"""Step-output caching with automatic calibration (TeaCache / EasyCache style).

At every transformer call Sol computes block 0's timestep-modulated input (cheap: one
LayerNorm and a modulation), measures its relative L1 change from the previous step, maps it
through a polynomial fitted on the target model (``coefficients``), and accumulates the result.
While the accumulated estimate stays below ``threshold`` the blocks are bypassed and the
residual of the whole block stack from the last computed step is added to the input (the
patch embedding and output head still run: they are cheap and keep the step's timestep
modulation exact). With ``reuse="linear"`` the residual is extrapolated to first order from
the last two computed steps instead (TaylorSeer's idea on the whole stack, with TeaCache's
adaptive schedule); on the reference model that turned 33 dB into 42 dB at the same 36 % of
blocks computed. A computed step resets the accumulator.

Calibration (see :mod:`sol.skills.cache.calibration`): one uncached generation records, per
step and per CFG context, the modulated-input change ``x`` and the true change ``y`` of the
blocks' residual; ``np.polyfit(x, y, 2)`` gives the coefficients, stored in the config, so a
plan re-applies on a server without calibrating. The same run gives the thresholds the search
screens: Sol simulates the accumulation on the calibration trace and picks the thresholds
that would compute about 50 %, 35 % and 25 % of the steps (``reuse="linear"``), plus plain
reuse at 35 % as evidence of what extrapolation buys.

threshold 0 never skips (bit-identical to the uncached pipeline).

Seams: writes ``step_output`` (exclusive: one step-level skipper per model) and
``block_output`` (it bypasses every block on cached steps).
"""

from __future__ import annotations

import json
import math
from typing import Literal

from pydantic import Field

from sol.hooks import ArgRef, Installation, ModelHook, StateManager, track_steps
from sol.hooks.ranges import SkipState, context_state, install_range
from sol.models.base import Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.cache._common import rel_l1
from sol.skills.cache.calibration import Calibration, calibrate
from sol.skills.search import bisect_threshold

DECIDE_HOOK = "sol_step_cache_decide"
RANGE_HOOK = "sol_step_cache_range"
CALIBRATION_NOTE = "cache.calibration"  # SearchContext.notes key: one calibration per search
# Share of steps computed that the adaptive screening thresholds aim at (ideal speedups ~1.8x
# and 2.5x when the blocks are ~90% of a generation).
TARGET_COMPUTE = (0.5, 0.35)
# Fixed schedules screened: (share of steps always computed first, share of steps computed, reuse).
# Warm-up x interval, each with both reuse rules: on held-out prompts of sol-tiny-wan the plain
# reuse of the last residual kept 36.5 dB where its extrapolation kept 32.1 dB (7 warm-up steps,
# then every 4th), while on the search prompts extrapolation had won: the measurements decide.
SCHEDULES = ((0.12, 0.42, "linear"), (0.24, 0.42, "linear"), (0.12, 0.42, "last"), (0.24, 0.42, "last"))


class StepOutputCacheConfig(TechniqueConfig):
    """Skip the block stack while the rescaled, accumulated modulated-input change stays small.

    ``coefficients`` (highest power first, ``np.polyval`` order) come from calibration; the
    default ``(1.0, 0.0)`` uses the raw change (uncalibrated).

    >>> StepOutputCacheConfig(threshold=0.2, coefficients=(0.5, 1.2, 0.0)).threshold
    0.2
    """

    kind: Literal["cache.step_output"] = "cache.step_output"
    version: int = 1
    threshold: float = Field(0.1, ge=0.0)
    coefficients: tuple[float, ...] = Field((1.0, 0.0), min_length=1, max_length=8)
    warmup_steps: int = Field(1, ge=0)  # first steps always computed
    final_steps: int = Field(1, ge=0)  # last steps always computed (they set the fine detail)
    max_skip_steps: int | None = Field(None, ge=1)  # cached steps in a row (None: unbounded)
    # What a cached step adds to its input: the last computed residual, or its first-order
    # extrapolation from the last two computed steps (TaylorSeer's idea on the whole stack).
    reuse: Literal["last", "linear"] = "last"


def polyval(coefficients: tuple[float, ...], x: float) -> float:
    """Horner's rule (plain floats: numpy's per-call overhead is more than the arithmetic)."""
    y = 0.0
    for c in coefficients:
        y = y * x + c
    return y


def simulate(
    sequences, coefficients, threshold: float, warmup: int = 1, final: int = 1, steps: int = 0
) -> float:
    """Share of steps computed on calibration traces (x per step t >= 1) for ``threshold``."""
    computed = total = 0
    for seq in sequences:
        n = steps or len(seq) + 1
        acc, comp = 0.0, 1  # step 0 always computes
        for t, (x, _y) in enumerate(seq, start=1):
            if t < warmup or t >= n - final:
                acc, comp = 0.0, comp + 1
                continue
            acc += max(0.0, polyval(coefficients, x))
            if acc < threshold:
                continue
            acc, comp = 0.0, comp + 1
        computed += comp
        total += n
    return computed / max(total, 1)


def threshold_for(sequences, coefficients, target: float, **kw) -> float | None:
    """The threshold whose simulated share of computed steps is closest to ``target`` (bisection);
    None when no threshold computes that few steps (warm-up and final steps bound it)."""
    lo, hi = 0.0, 1e-3
    while simulate(sequences, coefficients, hi, **kw) > target and hi < 1e3:
        hi *= 2
    if simulate(sequences, coefficients, hi, **kw) > target + 0.02:
        return None
    for _ in range(40):
        mid = (lo + hi) / 2
        if simulate(sequences, coefficients, mid, **kw) > target:
            lo = mid
        else:
            hi = mid
    return float(f"{hi:.4g}")


class StepCacheDecideHook(ModelHook):
    """On block 0, outside the range hook: decides before anything runs."""

    _is_stateful = True

    def __init__(
        self, state_manager, config: StepOutputCacheConfig, adapter, block, hs: ArgRef, temb: ArgRef
    ):
        super().__init__()
        self.state_manager = state_manager
        self.config = config
        self.adapter, self.block = adapter, block
        self.hs, self.temb = hs, temb

    def new_forward(self, module, *args, **kwargs):
        st = context_state(self.state_manager)
        ctx = self.state_manager._context
        cfg = self.config
        st.step += 1
        st.skipping = False
        compute = True
        if cfg.threshold > 0:
            mod = self.adapter.modulated_input(
                self.block, self.hs.get(args, kwargs), self.temb.get(args, kwargs)
            )
            total = getattr(ctx, "num_inference_steps", None)
            final = total is not None and st.step >= total - cfg.final_steps
            if st.residual is not None and st.ref is not None and st.step >= cfg.warmup_steps and not final:
                st.acc += max(0.0, polyval(cfg.coefficients, rel_l1(mod, st.ref)))
                within = cfg.max_skip_steps is None or st.consecutive < cfg.max_skip_steps
                compute = not (within and st.acc < cfg.threshold)
            st.ref = mod
        if compute:
            st.acc, st.consecutive = 0.0, 0
        else:
            st.consecutive += 1
        st.skipping = not compute
        st.decisions.append(compute)
        return self.fn_ref.original_forward(*args, **kwargs)

    def reset_state(self, module):
        self.state_manager.reset()
        return module


def calibration_for(context) -> Calibration | None:
    """The search's calibration run (made once, shared through ``context.notes``)."""
    if CALIBRATION_NOTE in context.notes:
        return Calibration.from_json(context.notes[CALIBRATION_NOTE])
    if context.pipe is None:
        return None
    cal = calibrate(context.pipe, context.adapter, context.workload)
    context.notes[CALIBRATION_NOTE] = cal.to_json()
    return cal


@register_skill(StepOutputCacheConfig)
class StepOutputCacheSkill(Skill):
    name = "cache"
    reads = frozenset({Seam.STEP_OUTPUT})
    writes = frozenset({Seam.STEP_OUTPUT, Seam.BLOCK_OUTPUT})
    requires = frozenset({Capability.BLOCK_RESIDUALS, Capability.STEP_MODULATION})
    phase = Phase.STEPS

    def apply(self, pipe, config: StepOutputCacheConfig, adapter) -> Installation:
        blocks = list(adapter.blocks())
        inst = Installation(config.kind)
        inst.refuse_hooked(blocks, DECIDE_HOOK, RANGE_HOOK)
        root = adapter.transformer
        sm = StateManager(SkipState)
        hs, temb = (
            adapter.block_io.ref(adapter.block_io.hidden_states),
            adapter.block_io.ref(adapter.block_io.modulation),
        )
        streams = adapter.block_io.stream_refs()  # every stream a block carries is bypassed together
        install_range(
            inst,
            root,
            blocks,
            0,
            len(blocks) - 1,
            sm,
            RANGE_HOOK,
            streams,
            extrapolate=config.reuse == "linear",
        )
        # Registered after the range hook, so it wraps it: the decision comes first.
        inst.hook(
            blocks[0], StepCacheDecideHook(sm, config, adapter, blocks[0], hs, temb), DECIDE_HOOK, root=root
        )
        inst.on_revert(sm.reset)
        track_steps(inst, adapter)
        inst.state_manager = sm
        return inst

    def examples(self) -> list[TechniqueConfig]:
        return [
            StepOutputCacheConfig(threshold=0.3, coefficients=(0.8, 0.01)),
            StepOutputCacheConfig(
                threshold=0.6, coefficients=(2.0, 0.5, 0.0), max_skip_steps=2, final_steps=0
            ),
        ]

    def search_space(self, context) -> list[TechniqueConfig]:
        """Calibrated adaptive schedules, and warm-up + fixed-interval schedules.

        The adaptive ones follow TeaCache: thresholds simulated on the calibration trace to
        compute ~50 % and ~35 % of the steps. The fixed ones exist because the signal can point
        the wrong way: on sol-tiny-wan the modulated input changes most in the *last* steps,
        so an adaptive schedule spends its compute there, while errors in the *first* steps
        are the ones that grow (measured: at 40 % of blocks, 26 dB adaptive vs 31.6 dB with
        the first quarter of the steps computed and then every 4th). A constant coefficient
        makes the accumulator count steps, so ``threshold = k - 0.5`` computes every k-th step.
        """
        cal = calibration_for(context)
        out: list[StepOutputCacheConfig] = []
        if cal is None:  # no pipeline to calibrate on: raw distance, TeaCache-like thresholds
            out += [StepOutputCacheConfig(threshold=t, reuse="linear") for t in (0.1, 0.2, 0.4)]
        else:
            coeffs = tuple(float(f"{c:.6g}") for c in cal.fit())
            seqs = cal.sequences()
            for f in TARGET_COMPUTE:
                t = threshold_for(seqs, coeffs, f, steps=cal.steps)
                if t:
                    out.append(StepOutputCacheConfig(threshold=t, coefficients=coeffs, reuse="linear"))
        steps = int(getattr(context.workload, "num_inference_steps", 0) or 0)
        for warm_share, share, reuse in SCHEDULES:
            cfg = fixed_schedule(steps, round(warm_share * steps), share)
            if cfg is not None:
                cfg = cfg.model_copy(update={"reuse": reuse})
                if cfg not in out:
                    out.append(cfg)
        return out

    def refine(self, context, results) -> list[TechniqueConfig]:
        floor = context.min_psnr
        out = []
        tried = {json.dumps(r.techniques, sort_keys=True) for r in results}
        for c in bisect_threshold(results, StepOutputCacheConfig, floor):
            if len(c.coefficients) == 1:  # a fixed schedule: only whole intervals differ
                k = max(2, math.ceil(c.threshold / c.coefficients[0]))
                c = c.model_copy(update={"threshold": (k - 0.5) * c.coefficients[0]})
            if json.dumps([c.model_dump(mode="json")], sort_keys=True) not in tried and c not in out:
                out.append(c)
        return out


def fixed_schedule(steps: int, warmup: int, share: float) -> StepOutputCacheConfig | None:
    """Compute the first ``warmup`` steps, then every k-th, with k chosen so that about
    ``share`` of the steps compute; None when no k >= 2 gets at or below ``share``."""
    if steps < 3 or warmup >= steps - 1:
        return None
    for k in range(2, steps):
        computed = warmup + (steps - warmup) // k  # after warm-up every k-th step computes
        if computed <= share * steps + 1e-9:
            return StepOutputCacheConfig(
                threshold=k - 0.5, coefficients=(1.0,), warmup_steps=warmup, final_steps=0, reuse="linear"
            )
    return None
