"""What every sparse-attention method shares: the config fields, the processor, the work counters.

A method is a :class:`SparseAttentionSkill` subclass that says which key tiles each query tile keeps
(:meth:`SparseAttentionSkill.tile_mask`), or computes the whole call itself (PISA). The shared
:class:`SparseAttentionProcessor` sits on every self-attention module the adapter names
(cross-attention is never touched) and, per call:

1. decides whether this call runs dense: a dense step (``dense_steps``), a layer outside ``layers``
   or in ``dense_layers``, no token grid, or a token count that is not the grid's (another technique
   changed the token set) — then it calls the model's own processor, so a dense call is the model's
   own computation, bit for bit;
2. otherwise takes q, k, v from the adapter (after its norms and RoPE), reorders them into tiles,
   runs the method's tile mask through the chosen path (gather + SDPA on the CPU, FlexAttention or
   Triton on a GPU), reorders the output back, and lets the adapter project it.

Counters (``Handle.counters()``; names from docs/architecture.md, "Counting work"):
``attention_pairs`` / ``attention_pairs_dense`` and per layer ``.blocks.N``: query-key pairs the
kernel computed (padding included) and what dense attention computes. A call that ran dense counts
its dense pairs on both sides: a fallback is never reported as sparsity. ``sparse_attention_calls``
/ ``sparse_attention_dense_calls`` count the calls of each kind.
"""

from __future__ import annotations

from collections import defaultdict
from typing import ClassVar, Literal

import torch
from pydantic import field_validator

from sol.errors import SolError
from sol.hooks import Installation, Span, WrappingProcessor, track_steps
from sol.models.base import Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig
from sol.skills.sparse_attention import kernels
from sol.skills.sparse_attention.tiling import Tiling

Backend = Literal["auto", "gather", "flex", "triton"]
BACKENDS = ("gather", "flex", "triton")


class SparseAttentionConfig(TechniqueConfig):
    """Fields every method shares (a method's config adds its own pattern knobs)."""

    tile: tuple[int, int, int] = (1, 4, 4)  # tokens per tile: frames, height, width (after patching)
    dense_steps: Span | None = None  # denoising steps computed dense (warm-up), e.g. Span(stop=1)
    layers: Span = Span()  # layers (self-attention modules, in order) the pattern applies to
    dense_layers: tuple[int, ...] = ()  # dense fallback for layers whose heads attend globally
    backend: Backend = "auto"  # auto: gather on the CPU; FlexAttention (else Triton) on CUDA

    @field_validator("tile")
    @classmethod
    def _tile(cls, v):
        if any(int(x) < 1 for x in v):
            raise ValueError("every tile axis needs at least 1 token")
        return v


class Work:
    """The counters of one installation (see the module docstring)."""

    def __init__(self):
        self.c: dict[str, float] = defaultdict(float)

    def pairs(self, layer: int, computed: float, dense: float, *, sparse: bool) -> None:
        for key, value in (("attention_pairs", computed), ("attention_pairs_dense", dense)):
            self.c[key] += value
            self.c[f"{key}.blocks.{layer}"] += value
        self.c["sparse_attention_calls" if sparse else "sparse_attention_dense_calls"] += 1

    def add(self, name: str, value: float = 1.0) -> None:
        self.c[name] += value

    def counters(self) -> dict[str, float]:
        return dict(self.c)


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> ``gather`` on the CPU; on CUDA FlexAttention when torch has it, else Triton."""
    if backend != "auto":
        return backend
    if device.type != "cuda":
        return "gather"
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:  # pragma: no cover — torch < 2.5
        return "triton" if _has_triton() else "gather"
    return "flex"


def _has_triton() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def run_tiles(backend: str, qt, kt, vt, mask: torch.Tensor, tiling: Tiling, plan=None) -> torch.Tensor:
    """One tile-masked attention through ``backend`` (``[B, H, n, T, D]`` in and out)."""
    if backend == "gather":
        return kernels.attend_gather(qt, kt, vt, mask, tiling, plan=plan)
    if backend == "flex":
        return kernels.attend_flex(qt, kt, vt, mask, tiling)
    if backend == "triton":
        from sol.skills.sparse_attention.triton_kernel import attend_triton

        return attend_triton(qt, kt, vt, mask, tiling)
    raise SolError(f"unknown sparse attention backend {backend!r}; use one of auto, {', '.join(BACKENDS)}")


class Call:
    """What a method sees of one self-attention call."""

    def __init__(self, processor: SparseAttentionProcessor, tiling: Tiling, backend: str):
        self.processor = processor
        self.tiling = tiling
        self.backend = backend
        self.layer = processor.layer
        self.work = processor.work
        self.config = processor.config
        self.context = processor.context
        self.dense = False  # set when the method fell back to the model's dense attention for the call


class SparseAttentionProcessor(WrappingProcessor):
    """Self-attention through a method's tile mask; dense calls go to the model's own processor."""

    def __init__(self, inner, skill, config, adapter, context, layer: int, layers: int, work: Work):
        self.inner = inner
        self.layers = layers
        self.skill = skill
        self.config = config
        self.adapter = adapter
        self.context = context
        self.layer = layer
        self.work = work
        self.state: dict = {}  # per-method cache (static masks per tiling)

    def dense_reason(self, tokens: int) -> str | None:
        """Why this call runs dense (None: it runs the pattern)."""
        cfg, ctx = self.config, self.context
        if cfg.dense_steps is not None and cfg.dense_steps.contains(max(ctx.step, 0), ctx.num_steps):
            return "dense_step"
        if self.layer in cfg.dense_layers or not cfg.layers.contains(self.layer, self.layers):
            return "dense_layer"
        if ctx.grid is None or not ctx.active:
            return "no_grid"
        if ctx.grid[0] * ctx.grid[1] * ctx.grid[2] != tokens:
            return "token_set"  # tokens pruned or merged by another technique: the grid no longer holds
        return None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *rest, **kw):
        # Families pass their RoPE after the mask as their attention module calls the processor (Wan:
        # rotary_emb; LTX-2: query_rotary_emb, key_rotary_emb): the adapter says which is the RoPE.
        rotary_emb = self.adapter.processor_rotary_emb(rest, kw)
        other = [r for r in rest[1:] if r is not None] + [
            v for k, v in kw.items() if k not in ("rotary_emb", "query_rotary_emb") and v is not None
        ]
        b, s = hidden_states.shape[:2]
        dense_pairs = float(b * attn.heads * s * s)
        reason = None
        if encoder_hidden_states is not None or attention_mask is not None or other:
            reason = "unsupported_call"
        else:
            reason = self.dense_reason(s)
        tiling = None
        if reason is None:
            tiling = Tiling.build(self.context.grid, self.config.tile)
            if tiling.tiles == 1:
                reason = "one_tile"
        if reason is not None:
            self.work.pairs(self.layer, dense_pairs, dense_pairs, sparse=False)
            self.work.add(f"sparse_attention_dense.{reason}")
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *rest, **kw)
        call = Call(self, tiling, resolve_backend(self.config.backend, hidden_states.device))
        result: dict = {}

        def attend(q, k, v):
            out, computed = self.skill.attend(call, q, k, v)
            result["computed"] = computed
            return out

        out = self.adapter.self_attention(attn, self.inner, hidden_states, rotary_emb, attend=attend)
        computed = result["computed"]
        if call.dense:
            self.work.add("sparse_attention_dense.pattern")
        self.work.pairs(self.layer, computed, dense_pairs, sparse=not call.dense)
        return out


class SparseAttentionSkill(Skill):
    """Base of every ``sparse_attention.<method>`` skill.

    Subclasses implement :meth:`tile_mask` (a ``[G, n, n]`` bool mask, or None for a dense call)
    or override :meth:`attend` entirely.
    """

    name = "sparse_attention"
    phase = Phase.ATTENTION
    writes = frozenset({Seam.ATTENTION_BACKEND})
    # Reads the token set: the pattern is laid out on the transformer's token grid, so a call whose
    # tokens were pruned or merged runs dense (and counts as dense). Token pruning also writes the
    # exclusive attention_backend seam (it replaces these processors), so compose() refuses the pair.
    reads = frozenset({Seam.TOKEN_SET})
    requires = frozenset({Capability.SELF_ATTENTION_QKV, Capability.SWAPPABLE_ATTENTION})
    processor_cls: ClassVar[type[SparseAttentionProcessor]] = SparseAttentionProcessor

    # --- what a method provides -----------------------------------------------------------------

    def tile_mask(self, call: Call, qt: torch.Tensor, kt: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def static_mask(self, call: Call, build) -> torch.Tensor | None:
        """A mask that depends on the tiling only (``build(tiling)``), built once per tiling; a
        shared (``G == 1``) mask also gets its gather plan cached."""
        state = call.processor.state
        cache = state.setdefault("static", {})
        key = (call.tiling.grid, call.tiling.tile)
        if key not in cache:
            mask = build(call.tiling)
            cache[key] = mask
            if mask is not None and mask.shape[0] == 1 and not bool(mask.all()):
                state.setdefault("plans", {})[id(mask)] = kernels.groups(mask)
        return cache[key]

    def attend(self, call: Call, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """``(out [B, S, H, D], pairs computed)`` for q, k, v ``[B, S, H, D]`` in raster order."""
        tiling = call.tiling
        b, h = q.shape[0], q.shape[2]
        qt, kt, vt = tiling.gather(q), tiling.gather(k), tiling.gather(v)
        mask = self.tile_mask(call, qt, kt)
        if mask is None or bool(mask.all()):  # nothing to skip: the model's own dense attention
            return self.adapter_attend(call, q, k, v), float(b * h * q.shape[1] ** 2)
        plan = call.processor.state.get("plans", {}).get(id(mask))
        out = run_tiles(call.backend, qt, kt, vt, mask, tiling, plan=plan)
        computed = tiling.pairs(mask) * (b * h // mask.shape[0])
        return tiling.scatter(out), float(computed)

    @staticmethod
    def adapter_attend(call: Call, q, k, v, *, whole: bool = True):
        """The model's own dense attention (``whole``: for the whole call, which then counts as a
        dense call; False: for some heads of a sparse call)."""
        p = call.processor
        if whole:
            call.dense = True
        return p.adapter.attend(p.inner, q, k, v)

    # --- applying ---------------------------------------------------------------------------------

    def check(self, config, adapter) -> None:
        """Refuse configs that cannot run here, before anything is installed (override to add)."""
        backend = config.backend
        if backend == "triton" and not _has_triton():
            raise SolError(
                f"{config.kind}: backend 'triton' needs the triton package, which is not installed:"
                " pip install 'sol[gpu]' (or use backend 'auto')"
            )

    def apply(self, pipe, config, adapter) -> Installation:
        modules = adapter.self_attention_modules()
        self.check(config, adapter)
        n = len(modules)
        bad = [i for i in config.dense_layers if not 0 <= i < n]
        if bad:
            raise SolError(
                f"{config.kind}: dense_layers {bad} are outside this model's {n} self-attention layers"
                f" (0..{n - 1}); fix the config"
            )
        inst = Installation(config.kind)
        inst.refuse_foreign_processors(modules)
        ctx = track_steps(inst, adapter)
        work = Work()
        for i, m in enumerate(modules.values()):
            inst.processor(m, self.processor_cls(m.processor, self, config, adapter, ctx, i, n, work))
        inst.counter_fn = work.counters
        inst.work = work  # evidence: per-layer pairs, dense calls and why
        return inst

    def ceiling(self, context, cost_model) -> dict | None:
        """The kernel measured against dense attention on this hardware (``_search.kernel_ceiling``)."""
        from sol.skills.sparse_attention._search import kernel_ceiling

        return kernel_ceiling(self, context, cost_model)

    def unavailable_options(self, hardware) -> dict[str, str]:
        out = {}
        if not _has_triton():
            out["backend=triton"] = "needs the triton package: pip install 'sol[gpu]'"
        return out


# --- search helpers ------------------------------------------------------------------------------


def choose_tile(grid: tuple[int, int, int], target: int) -> tuple[int, int, int]:
    """A tile of about ``target`` tokens that divides the grid where it can: one frame per tile
    first (spatial tiles as square as the grid allows), frames added when a frame is too small.

    >>> choose_tile((9, 16, 16), 64)
    (1, 8, 8)
    >>> choose_tile((9, 4, 4), 64)
    (3, 4, 4)
    """
    f, h, w = grid

    def divisors(x):
        return [d for d in range(1, x + 1) if x % d == 0]

    best = None
    for a in divisors(f):
        for b in divisors(h):
            for c in divisors(w):
                size = a * b * c
                # closeness to the target (log scale), then squarer spatial tiles, then fewer frames
                score = (
                    abs((size / target) - 1) if size <= target else (size / target - 1) * 2,
                    abs(b - c),
                    a,
                )
                if best is None or score < best[0]:
                    best = (score, (a, b, c))
    return best[1]


def density_of(result) -> float | None:
    """The attention density a candidate really computed (from its counters), or None."""
    w = getattr(result, "work", None) or {}
    dense = w.get("attention_pairs_dense")
    return float(w["attention_pairs"]) / dense if dense else None


def layers_count(context) -> int:
    return len(context.adapter.self_attention_modules())


def step_count(context) -> int:
    return int(getattr(context.workload, "num_inference_steps", 0) or 0)


def field_default(config_type, name):
    return config_type.model_fields[name].default


__all__ = [
    "BACKENDS",
    "Call",
    "SparseAttentionConfig",
    "SparseAttentionProcessor",
    "SparseAttentionSkill",
    "Work",
    "choose_tile",
    "density_of",
    "resolve_backend",
    "run_tiles",
]
