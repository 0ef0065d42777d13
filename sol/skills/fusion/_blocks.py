"""What both fusion methods share: the block forward they install, the modules they must leave
alone, and the work they count where the probes cannot see it.

Both methods replace each block's ``forward`` with the adapter's block forward written over
:class:`~sol.models.base.BlockOps` chains (``adapter.block_forward``), with ``ops`` that fuse:
``fusion.compile`` traces the chains into one ``torch.compile`` graph per block, ``fusion.triton``
swaps them for ``torch.ops.sol`` kernels. Hooks that later techniques put on a block (caches,
probes) wrap the installed forward, so their decisions stay outside every fused region.

Inside a block, a module another technique changed (its attention processor, diffusers hooks
other than the work probes, or a layer quantization replaced with one the compiler cannot trace)
is never fused or traced: it runs as it is, eagerly. The check runs where the ops decide (at
trace time in a compiled block, guarded), so a technique applied after fusion (text K/V reuse,
sparse attention, PAB) keeps working, at the cost of what fusion would have saved around it.
"""

from __future__ import annotations

from collections import Counter

from torch import nn

from sol.errors import SolError
from sol.hooks import Installation, owner_of

# The evaluator's work probes (sol.bench.runner.PROBE_HOOK; a test checks the two agree): they
# count nothing inside a compiled region, and fusion counts what they cannot see instead.
PROBE_HOOKS = frozenset({"sol_work_probe"})
APPLIED_ATTR = "_sol_fusion"  # on a fused transformer: the applied fusion's label (refuses a second one)
# Counters for attention calls inside fused blocks, which the probes do not see; add them to the
# probes' counts of the same names (docs/architecture.md, "Counting work").
FUSED_CALLS = "fused_calls."


# Modules the compiler cannot trace: torch.ao's quantized layers (int8 dynamic on the CPU) hold
# their packed weights in a ScriptObject, and every call is a graph break (measured: 27 breaks per
# block, compile past the evaluator's time limit). Fusion leaves a part holding one as it is.
UNTRACEABLE_MODULES = ("torch.ao.nn.quantized", "torch.nn.quantized")


def changed_by_others(module: nn.Module) -> bool:
    """Whether another technique changed ``module`` or a module inside it: an attention processor
    installed by a Sol technique, diffusers hooks other than the work probes, or a layer replaced by
    one the compiler cannot trace (:data:`UNTRACEABLE_MODULES`). Such a module runs as it is."""
    for m in module.modules():
        if owner_of(getattr(m, "processor", None)) is not None:
            return True
        reg = getattr(m, "_diffusers_hook", None)
        if reg is not None and any(name not in PROBE_HOOKS for name in reg.hooks):
            return True
        if type(m).__module__.startswith(UNTRACEABLE_MODULES):
            return True
    return False


def block_parts(adapter) -> list[dict[str, nn.Module]]:
    """Per block: ``{"self_attention": module, "cross_attention": module}`` from the adapter's names."""
    prefix = adapter.blocks_path()
    attn = {
        "self_attention": adapter.self_attention_modules(),
        "cross_attention": adapter.cross_attention_modules(),
    }
    out = []
    for i, _ in enumerate(adapter.blocks()):
        head = f"{prefix}.{i}."
        out.append(
            {part: m for part, mods in attn.items() for name, m in mods.items() if name.startswith(head)}
        )
    return out


class FusedBlock:
    """A block's ``forward`` after fusion: ``run(adapter, block, ops, *args)`` (the adapter's block
    forward, compiled or not), counting the attention calls the fused region hides from probes."""

    def __init__(self, run, adapter, block: nn.Module, ops, parts: dict[str, nn.Module], counts: Counter):
        self.run, self.adapter, self.block, self.ops = run, adapter, block, ops
        self.parts, self.counts = parts, counts

    def __call__(self, *args, **kwargs):
        for part, module in self.parts.items():
            if self.ops.hides(part, module):
                self.counts[FUSED_CALLS + part] += 1
                if part == "cross_attention":  # the text K/V projection runs inside it
                    self.counts[FUSED_CALLS + "text_kv_projection"] += 1
        return self.run(self.adapter, self.block, self.ops, *args, **kwargs)


def install(inst: Installation, adapter, kind: str, label: str, run, ops, counts: Counter) -> None:
    """Replace every block's ``forward`` with a :class:`FusedBlock` (``run``: one runner, or one per
    block); refuse a second fusion, and a block that already carries hooks (they would be cut off:
    fusion applies before any hook)."""
    transformer = adapter.transformer
    done = getattr(transformer, APPLIED_ATTR, None)
    if done is not None:
        raise SolError(f"{kind} cannot apply: this model is already fused ({done}); revert it first")
    blocks = list(adapter.blocks())
    for i, block in enumerate(blocks):
        reg = getattr(block, "_diffusers_hook", None)
        if reg is not None and reg.hooks:
            raise SolError(
                f"{kind} must apply before hooks on the blocks (block {i} carries {', '.join(reg.hooks)});"
                " apply fusion first (it runs in the kernels phase)"
            )
    runs = run if isinstance(run, list) else [run] * len(blocks)
    inst.attr(transformer, APPLIED_ATTR, label)
    for block, parts, r in zip(blocks, block_parts(adapter), runs, strict=True):
        inst.attr(block, "forward", FusedBlock(r, adapter, block, ops, parts, counts))
