"""What both fusion methods share: the block forward they install, the modules they must leave
alone, and the work they count where the probes cannot see it.

Both methods replace each block's ``forward`` with the adapter's block forward written over
:class:`~sol.models.base.BlockOps` chains (``adapter.block_forward``), with ``ops`` that fuse:
``fusion.compile`` traces the chains into one ``torch.compile`` graph per block, ``fusion.triton``
swaps them for ``torch.ops.sol`` kernels. Hooks that later techniques put on a block (caches,
probes) wrap the installed forward, so their decisions stay outside every fused region.

Inside a block, a module another technique changed (its attention processor, diffusers hooks
other than the work probes, or a layer quantization replaced with one the compiler cannot trace)
is never fused or traced: it runs as it is, eagerly. The check runs at every block call (for
the attention modules, outside any graph; for the feed-forward, at trace time, guarded), so a
technique applied after fusion (text K/V reuse, sparse attention, PAB) keeps working, at the
cost of what fusion would have saved around it.
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


class Fuser:
    """One fusion method applied to one transformer: which parts it hides from their modules
    (``wants``), and the runner and ops for each set of parts it actually hides (``variant``).

    ``variant(hidden)`` returns ``(run, ops)`` with ``run(adapter, block, ops, *args, **kwargs)``;
    the same object for the same ``hidden``, so every block of one shape shares it (one compiled
    graph). ``detach_probes``: probe-only modules inside hidden parts run without their probe hook
    while the block runs (a compiled graph must not trace the probes' per-module closures).
    """

    wants: frozenset[str] = frozenset()
    detach_probes: bool = False

    def variant(self, hidden: frozenset[str]):
        raise NotImplementedError


def _probe_only(module: nn.Module) -> list[nn.Module]:
    """Modules inside ``module`` whose only diffusers hooks are work probes."""
    out = []
    for m in module.modules():
        reg = getattr(m, "_diffusers_hook", None)
        if reg is not None and reg.hooks and all(name in PROBE_HOOKS for name in reg.hooks):
            out.append(m)
    return out


class FusedBlock:
    """A block's ``forward`` after fusion: the fuser's runner over the adapter's block forward.

    Per call, outside any graph: which attention parts run hidden (the fuser wants them and no other
    technique changed them), counted as ``fused_calls.*`` because their probes cannot see them.
    With ``detach_probes``, their probe hooks step aside for the call: diffusers hooks replace a
    module's ``forward`` with a per-module closure, and a graph that traced one closure would fail
    its guards on the next block's (measured: one graph per block, a dynamo trace each, 5 s per
    block on a loaded 2-core CPU). Inside a compiled region a probe counts nothing anyway.
    """

    def __init__(self, fuser: Fuser, adapter, block: nn.Module, parts: dict[str, nn.Module], counts: Counter):
        self.fuser, self.adapter, self.block = fuser, adapter, block
        self.parts, self.counts = parts, counts

    def __call__(self, *args, **kwargs):
        hidden = frozenset(
            p for p, m in self.parts.items() if p in self.fuser.wants and not changed_by_others(m)
        )
        for part in hidden:
            self.counts[FUSED_CALLS + part] += 1
            if part == "cross_attention":  # the text K/V projection runs inside it
                self.counts[FUSED_CALLS + "text_kv_projection"] += 1
        run, ops = self.fuser.variant(hidden)
        detached = []
        if self.fuser.detach_probes:
            for part in hidden:
                for m in _probe_only(self.parts[part]):
                    fwd = m.__dict__.pop("forward", None)
                    if fwd is not None:
                        detached.append((m, fwd))
        try:
            return run(self.adapter, self.block, ops, *args, **kwargs)
        finally:
            for m, fwd in detached:
                m.forward = fwd


def install(inst: Installation, adapter, kind: str, label: str, fuser: Fuser, counts: Counter) -> None:
    """Replace every block's ``forward`` with a :class:`FusedBlock`; refuse a second fusion, and a
    block that already carries hooks (they would be cut off: fusion applies before any hook)."""
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
    inst.attr(transformer, APPLIED_ATTR, label)
    for block, parts in zip(blocks, block_parts(adapter), strict=True):
        inst.attr(block, "forward", FusedBlock(fuser, adapter, block, parts, counts))
