"""One calibration run of the target model: how the blocks' output really changes per step.

Step caches decide from a cheap signal whether the expensive part of the transformer would
give (nearly) the same result as at the last computed step. How a change of the signal maps to a
change of the output is model- and schedule-specific, so Sol measures it instead of copying
another model's numbers. During one uncached generation it records, per cache context
(cond / uncond) and per step ``t``:

- ``x_t`` = relative L1 change of block 0's timestep-modulated input (the adapter's
  :meth:`~sol.models.base.ModelAdapter.modulated_input`) from step ``t-1``;
- ``y_t`` = relative L1 change of the residual of all blocks (``out(last) - in(first)``, what
  a cached step reuses) from step ``t-1``;
- ``mag_t`` = mean over tokens of ``|res_t| / |res_{t-1}|`` (MagCache's magnitude ratio,
  the same formula as diffusers' ``MagCacheBlockHook._perform_calibration_step``).

Step-output caching fits ``y ≈ poly(x)`` (``np.polyfit``) and stores the coefficients in its
config; MagCache stores the per-step ratios. A plan then re-applies without calibrating.
Cost: one generation of one prompt (latents only, no VAE decode).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sol.hooks import ArgRef, BaseState, Installation, ModelHook, StateManager, track_steps
from sol.hooks.ranges import context_state
from sol.models.base import Capability
from sol.skills.cache._common import rel_l1

RECORD_HEAD_HOOK = "sol_cache_calibration_head"
RECORD_TAIL_HOOK = "sol_cache_calibration_tail"


@dataclass
class Calibration:
    """Per-context traces of one or more uncached generations (small JSON, no tensors)."""

    steps: int
    traces: dict[str, list[dict]] = field(default_factory=dict)  # context -> [{"x", "y", "mag"}] for t >= 1

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        xs = [p["x"] for tr in self.traces.values() for p in tr]
        ys = [p["y"] for tr in self.traces.values() for p in tr]
        return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)

    def fit(self, degree: int = 2) -> tuple[float, ...]:
        """Coefficients (highest power first, ``np.polyval`` order) of ``y ≈ poly(x)``.

        A rescaling must grow with the input change and stay positive, or a cache that sees a
        large change would skip anyway (TeaCache's degree-4 fits on ~50 points swing outside
        the observed range). So the highest degree up to ``degree`` whose polynomial is
        non-decreasing and positive from the smallest observed change to twice the largest is
        kept (below the observed range the cache clamps at 0); failing all, the mean change
        per step (a constant: fixed-interval caching).
        """
        x, y = self.points()
        if len(x) == 0:
            return (1.0, 0.0)
        grid = np.linspace(float(x.min()), 2.0 * float(x.max()) + 1e-9, 200)
        for d in range(max(1, min(degree, len(x) - 1)), 0, -1):
            coeffs = np.polyfit(x, y, d)
            vals = np.polyval(coeffs, grid)
            if vals.min() > 0.0 and np.all(np.diff(vals) >= -1e-12):
                return tuple(float(c) for c in coeffs)
        return (float(max(y.mean(), 1e-6)),)

    def mag_ratios(self) -> list[float]:
        """Per-step magnitude ratio, averaged over contexts (step 0 is 1.0 by definition)."""
        by_step: dict[int, list[float]] = {}
        for tr in self.traces.values():
            for p in tr:
                by_step.setdefault(p["t"], []).append(p["mag"])
        return [1.0] + [float(np.mean(by_step.get(t, [1.0]))) for t in range(1, self.steps)]

    def sequences(self) -> list[list[tuple[float, float]]]:
        """Per context, the (x, y) pairs in step order (for simulating a threshold)."""
        return [[(p["x"], p["y"]) for p in tr] for tr in self.traces.values()]

    def to_json(self) -> dict:
        return {"steps": self.steps, "traces": self.traces}

    @classmethod
    def from_json(cls, d: dict) -> Calibration:
        return cls(int(d["steps"]), {k: list(v) for k, v in d["traces"].items()})


class _RecState(BaseState):
    def __init__(self):
        self.reset()

    def reset(self):
        self.t = -1
        self.x = None
        self.mod = None
        self.inp = None
        self.res = None
        self.trace: list[dict] = []


class _Head(ModelHook):
    _is_stateful = True

    def __init__(self, sm, adapter, block, hs: ArgRef, temb: ArgRef | None, sink):
        super().__init__()
        self.state_manager, self.adapter, self.block = sm, adapter, block
        self.hs, self.temb, self.sink = hs, temb, sink

    def new_forward(self, module, *args, **kwargs):
        st = context_state(self.state_manager)
        name = self.state_manager._context.name
        if not st.trace:
            self.sink.setdefault(name, [])
            self.sink[name].append(st.trace)  # one list per generation and context
        hs = self.hs.get(args, kwargs)
        # Families without timestep modulation (Cosmos3) record the change of the block input itself:
        # MagCache needs only the magnitudes; step-output caching is refused there.
        mod = (
            hs
            if self.temb is None
            else self.adapter.modulated_input(self.block, hs, self.temb.get(args, kwargs))
        )
        st.t += 1
        st.x = None if st.mod is None else rel_l1(mod, st.mod)
        st.mod, st.inp = mod, hs
        return self.fn_ref.original_forward(*args, **kwargs)

    def reset_state(self, module):
        self.state_manager.reset()
        return module


class _Tail(ModelHook):
    _is_stateful = True

    def __init__(self, sm, primary=lambda out: out):
        super().__init__()
        self.state_manager = sm
        self.primary = primary  # the hidden_states stream of the block's output

    def new_forward(self, module, *args, **kwargs):
        st = context_state(self.state_manager)
        out = self.fn_ref.original_forward(*args, **kwargs)
        res = self.primary(out) - st.inp
        if st.res is not None and st.x is not None:
            mag = (
                torch.linalg.norm(res.float(), dim=-1) / (torch.linalg.norm(st.res.float(), dim=-1) + 1e-8)
            ).mean()
            st.trace.append({"t": st.t, "x": st.x, "y": rel_l1(res, st.res), "mag": float(mag)})
        else:
            st.trace.append({"t": st.t, "x": None, "y": None, "mag": 1.0})
        st.res, st.inp = res, None
        return out

    def reset_state(self, module):
        self.state_manager.reset()
        return module


def calibrate(pipe, adapter, workload, *, prompts: int = 1) -> Calibration:
    """Run ``prompts`` of ``workload`` uncached through ``pipe`` and record the step traces.

    >>> cal = calibrate(loaded.pipe, loaded.adapter, load_workload("smoke"))  # doctest: +SKIP
    >>> StepOutputCacheConfig(threshold=0.2, coefficients=cal.fit())  # doctest: +SKIP
    """
    blocks = list(adapter.blocks())
    sm = StateManager(_RecState)
    sink: dict[str, list[list[dict]]] = {}
    io = adapter.block_io
    hs = io.ref(io.hidden_states)
    temb = io.ref(io.modulation) if Capability.STEP_MODULATION in adapter.capabilities else None
    root = adapter.transformer
    inst = Installation("cache calibration")
    # Tail first: on a one-block model the head must wrap it (outermost runs first).
    inst.hook(blocks[-1], _Tail(sm, io.primary_output), RECORD_TAIL_HOOK, root=root)
    inst.hook(blocks[0], _Head(sm, adapter, blocks[0], hs, temb, sink), RECORD_HEAD_HOOK, root=root)
    inst.on_revert(sm.reset)
    track_steps(inst, adapter)
    try:
        with torch.no_grad():
            for prompt, seed in workload.runs[:prompts]:
                pipe(
                    **workload.pipe_kwargs(prompt, pipe),
                    generator=torch.Generator("cpu").manual_seed(seed),
                    output_type="latent",
                )
    finally:
        inst.revert()
    traces = {}
    for name, runs in sink.items():
        for i, tr in enumerate(runs):
            pts = [p for p in tr if p["x"] is not None]
            if pts:
                traces[f"{name}/{i}"] = pts
    return Calibration(workload.num_inference_steps, traces)
