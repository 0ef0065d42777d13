"""``fusion.compile``: each transformer block compiled into one graph with ``torch.compile``.

On the CPU, inductor's C++ backend fuses a block's pointwise chains (adaLN modulate, gated
residuals, RMSNorm + RoPE inside attention, GELU) into a few vectorised loops; on a GPU it
writes Triton kernels for them. What pays is the *whole block* in one graph: on this 2-core CPU
one compiled call costs ~200 us of guards and wrappers (a 3-op eager chain costs ~50 us), so
compiling the chains between attention calls separately was slower than eager (0.88-0.96x),
while one graph per block ran the reference model's transformer 1.27x faster.

``inside`` names the parts of a block traced into its graph; the modulation, norm and gate
chains always are. A part left out runs eagerly between two compiled pieces (a graph break):
the leave-one-out search measures what each part is worth and keeps only those that pay.
An attention module another technique changed always runs outside the graph (see
:mod:`._blocks`), so no technique's Python decision is traced into a graph.

Counting: attention inside a compiled block never reaches its work probe (a probe inside a
traced region counts nothing); the block wrapper counts those calls as
``fused_calls.self_attention`` / ``.cross_attention`` / ``.text_kv_projection``. ``compiles``
counts the graphs inductor compiled (a recompile across steps shows up there).

One code object per block. Dynamo caches graphs per code object, with at most
``recompile_limit`` (8) entries before it silently falls back to eager. Blocks share one graph
when nothing distinguishes them, but the evaluator's work probes (diffusers hooks, one object per
module) are traced into each block's graph and make every block a guard failure of the last: a
shared code object would run blocks 9+ of a 30-block model eagerly. Each block therefore runs a
fresh copy of the runner's code (its own cache), and each application compiles and, on revert,
forgets its own copies, so candidates compiled one after another in a search never pile entries
onto one code object. Inductor's FX graph cache makes the identical graphs of later blocks cheap
(measured: 8 blocks with probes 62 s, one shared graph without 40 s, on a loaded 2-core CPU).
"""

from __future__ import annotations

import itertools
import types
from collections import Counter
from typing import Literal

import torch
from pydantic import field_validator

from sol.hooks import Installation
from sol.models.base import BlockOps, Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.fusion._blocks import changed_by_others, install

Part = Literal["self_attention", "cross_attention", "feed_forward"]
PARTS: tuple[str, ...] = ("cross_attention", "feed_forward", "self_attention")  # sorted: the default spelling
Mode = Literal["default", "max-autotune-no-cudagraphs"]


class CompileBlocks(TechniqueConfig):
    """Compile each block into one graph; ``inside``: the parts traced into it.

    >>> CompileBlocks().label()
    "fusion.compile(inside=('cross_attention', 'feed_forward', 'self_attention'), mode=default)"
    """

    kind: Literal["fusion.compile"] = "fusion.compile"
    version: int = 1
    inside: tuple[Part, ...] = PARTS
    mode: Mode = "default"  # inductor mode; max-autotune also tunes GEMM templates (long compiles)

    @field_validator("inside")
    @classmethod
    def _sorted(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(v)))  # one spelling per set: plans and search keys compare equal


@torch.compiler.disable
def _eager(module, *args):
    """``module(*args)`` outside the graph (a graph break): its hooks and processor run as they are."""
    return module(*args)


class GraphOps(BlockOps):
    """Block chains as traced by dynamo; the parts not ``inside`` (or changed by another
    technique) are called through :func:`_eager`."""

    def __init__(self, inside: frozenset[str]):
        self.inside = inside

    def hides(self, part: str, module) -> bool:
        """Whether ``part`` runs inside the graph (its probe cannot count it)."""
        return part in self.inside and not changed_by_others(module)

    def self_attention(self, attn, x, rotary_emb):
        if self.hides("self_attention", attn):
            return attn(x, None, None, rotary_emb)
        return _eager(attn, x, None, None, rotary_emb)

    def cross_attention(self, attn, x, context):
        if self.hides("cross_attention", attn):
            return attn(x, context, None, None)
        return _eager(attn, x, context, None, None)

    def feed_forward(self, ffn, x, parts=None):
        if self.hides("feed_forward", ffn):
            return ffn(x)
        return _eager(ffn, x)


def _run_block(adapter, block, ops, *args, **kwargs):
    return adapter.block_forward(block, *args, ops=ops, **kwargs)


_copies = itertools.count()


def fresh_runner():
    """A copy of :func:`_run_block` with its own, unequal code object (dynamo's caches are keyed
    by code object, its resume functions by code *equality*: a new name makes both new)."""
    f = _run_block
    code = f.__code__.replace(co_name=f"_run_block_{next(_copies)}")
    return types.FunctionType(code, f.__globals__, code.co_name, f.__defaults__, f.__closure__)


def _forget(fn) -> None:
    """Drop what dynamo compiled for ``fn`` (its cache entries and resume functions)."""
    code = fn.__code__
    try:
        torch._dynamo.reset_code(code)
    except Exception:  # noqa: BLE001 — a private API that may move; forgetting is an optimisation
        pass
    try:
        from torch._dynamo.resume_execution import ContinueExecutionCache

        ContinueExecutionCache.cache.pop(code, None)
    except Exception:  # noqa: BLE001
        pass


# What compiles each captured graph. Tests of graph capture (breaks, guards, recompiles) set
# "eager" to skip inductor's code generation (~10-30 s per graph on a 2-core CPU).
COMPILER = "inductor"


def counting_backend(counts: Counter, mode: str = "default"):
    """Inductor, counting every graph it compiles in ``counts["compiles"]``."""

    def backend(gm, example_inputs):
        from torch._inductor import list_mode_options
        from torch._inductor.compile_fx import compile_fx

        counts["compiles"] += 1
        if COMPILER == "eager":
            return gm.forward
        patches = list_mode_options(mode) if mode != "default" else {}
        return compile_fx(gm, example_inputs, config_patches=patches)

    return backend


@register_skill(CompileBlocks)
class CompileBlocksSkill(Skill):
    name = "fusion"
    # Reading and writing kernel_fusion: the effect check refuses two fusion techniques together
    # (both replace the blocks' forward) with a message naming both.
    reads = frozenset({Seam.KERNEL_FUSION})
    writes = frozenset({Seam.KERNEL_FUSION})
    requires = frozenset({Capability.FUSABLE_BLOCKS})
    phase = Phase.KERNELS

    def apply(self, pipe, config: CompileBlocks, adapter) -> Installation:
        inst = Installation(config.kind)
        counts: Counter = Counter()
        backend = counting_backend(counts, config.mode)
        runners = [fresh_runner() for _ in adapter.blocks()]
        compiled = [torch.compile(run, backend=backend, dynamic=None) for run in runners]
        ops = GraphOps(frozenset(config.inside))
        install(inst, adapter, config.kind, config.label(), compiled, ops, counts)
        inst.on_revert(lambda: [_forget(run) for run in runners])
        inst.counter_fn = lambda: dict(counts)
        return inst

    def examples(self) -> list[TechniqueConfig]:
        # One: each costs a dynamo trace per block in the shared contract's tests; the graph-break
        # paths (parts outside the graph) are tested with text K/V reuse and quantization.
        return [CompileBlocks()]

    def search_space(self, context) -> list[TechniqueConfig]:
        from sol.skills.fusion.search import leave_one_out

        return leave_one_out(self, context, CompileBlocks(), "inside", PARTS)
