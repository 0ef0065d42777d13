"""What every token-pruning method shares: the block hook frame, per-branch state, per-token
arguments, and the work counters.

Every method works block by block: a block's hook receives the full ``[B, N, D]`` hidden states,
runs the block on ``K`` representatives and returns the full ``[B, N, D]`` again. So whatever sits
outside a block (a step or block cache, the evaluator's probes, another block's hook) always sees
full-size tensors, and token pruning composes with the cache family by phase order alone.

The block's other per-token arguments (Wan: RoPE, and a per-token ``temb`` on Wan 2.2 TI2V) are
gathered at the representatives' positions through ``adapter.select_tokens`` for every name in
``adapter.block_io.per_token``: the skill never names a family's arguments.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from sol.errors import SolError
from sol.hooks import Span
from sol.hooks.core import ModelHook

MERGE_HOOK = "sol_token_merge"
PRUNE_HOOK = "sol_token_prune"
HOOKS = (MERGE_HOOK, PRUNE_HOOK)  # one token-pruning method per block: each refuses the others


def selected_layers(span: Span, n: int, what: str) -> list[int]:
    """Block indices of ``span`` in an ``n``-block model; refuses a span that selects none."""
    idx = span.indices(n)
    if not idx:
        raise SolError(
            f"{what}: layers {span.model_dump()} select no block of this {n}-block model;"
            f" pick a span within 0..{n - 1}"
        )
    return idx


def block_of(blocks, module) -> int | None:
    """Index of the block that contains ``module`` (None when none does)."""
    for i, block in enumerate(blocks):
        if any(m is module for m in block.modules()):
            return i
    return None


class BranchStates:
    """One state object per CFG branch (``cond`` / ``uncond`` / ``inference``): the two guidance
    calls of a step carry different text, so they never share a reference or a cached residual."""

    def __init__(self, factory):
        self.factory = factory
        self.states: dict[str, object] = {}

        self.memo = GatherMemo()

    def get(self, branch: str):
        st = self.states.get(branch)
        if st is None:
            st = self.states[branch] = self.factory()
        return st

    def reset(self) -> None:
        self.states.clear()
        self.memo.clear()


class Work:
    """Block-token evaluations (``tokens_computed`` / ``tokens_dense``) and self-attention query-key
    pairs (``attention_pairs`` / ``attention_pairs_dense``), in total, per block and per step.

    A block whose hook ran at full size counts as dense (``computed == dense``): a call that did
    not prune is never reported as pruned.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.c: dict[str, float] = defaultdict(float)

    def tokens(self, block: int, step: int, computed: int, dense: int) -> None:
        for key in ("tokens_computed", f"tokens_computed.blocks.{block}", f"tokens_computed.steps.{step}"):
            self.c[key] += computed
        for key in ("tokens_dense", f"tokens_dense.blocks.{block}", f"tokens_dense.steps.{step}"):
            self.c[key] += dense

    def pairs(self, block: int, computed: int, dense: int) -> None:
        self.c["attention_pairs"] += computed
        self.c[f"attention_pairs.blocks.{block}"] += computed
        self.c["attention_pairs_dense"] += dense
        self.c[f"attention_pairs_dense.blocks.{block}"] += dense

    def counters(self) -> dict[str, float]:
        return dict(self.c)


class GatherMemo:
    """The last gathers of per-token arguments: every block of a transformer call receives the
    same RoPE tensors, so blocks that keep the same tokens gather them once (measured: the RoPE
    gathers were a third of the per-block overhead at 2,304 tokens)."""

    def __init__(self):
        self.entries: list[tuple] = []  # (value, keep, gathered): identity-checked, never by id alone

    def get(self, adapter, name: str, value, keep: torch.Tensor):
        for v, k, g in self.entries:
            if v is value and k is keep:
                return g
        g = adapter.select_tokens(name, value, keep)
        self.entries = [*self.entries[-3:], (value, keep, g)]
        return g

    def clear(self) -> None:
        self.entries = []


def gather_per_token(
    adapter, args: tuple, kwargs: dict, keep: torch.Tensor, skip: str, memo: GatherMemo | None = None
):
    """``args``/``kwargs`` of a block call with every per-token argument but ``skip`` (the hidden
    states, which the method reduces itself) restricted to the tokens ``keep`` ``[B, K]``."""
    io = adapter.block_io
    for name in io.per_token:
        if name == skip or name not in io.args:
            continue
        ref = io.ref(name)
        value = ref.get(args, kwargs)
        if value is not None:
            g = (
                adapter.select_tokens(name, value, keep)
                if memo is None
                else memo.get(adapter, name, value, keep)
            )
            args, kwargs = ref.set(args, kwargs, g)
    return args, kwargs


class BlockHook(ModelHook):
    """Base of the per-block hooks: the block's index, the shared context, the hidden states."""

    _is_stateful = True  # the step tracker resets it when a generation starts

    def __init__(self, index: int, ctx, adapter, states: BranchStates, work: Work):
        super().__init__()
        self.index = index
        self.ctx = ctx
        self.adapter = adapter
        self.states = states
        self.work = work
        self.hs = adapter.block_io.ref(adapter.block_io.hidden_states)

    def reduced_call(
        self,
        module,
        args,
        kwargs,
        x: torch.Tensor,
        x_red: torch.Tensor,
        keep: torch.Tensor,
        keys: int | None = None,
    ):
        """Run the block on the representatives: ``x_red`` ``[B, K, D]`` at positions ``keep``;
        ``keys``: how many keys each of their queries attends to (default: the ``K`` representatives)."""
        args, kwargs = self.hs.set(args, kwargs, x_red)
        hs = self.adapter.block_io.hidden_states
        args, kwargs = gather_per_token(self.adapter, args, kwargs, keep, hs, self.states.memo)
        out = self.fn_ref.original_forward(*args, **kwargs)
        b, n, k = x.shape[0], x.shape[1], x_red.shape[1]
        self.work.tokens(self.index, self.ctx.step, k * b, n * b)
        self.work.pairs(self.index, k * (k if keys is None else keys) * b, n * n * b)
        return out

    def dense_call(self, module, args, kwargs, x: torch.Tensor):
        out = self.fn_ref.original_forward(*args, **kwargs)
        if isinstance(x, torch.Tensor):
            b, n = x.shape[0], x.shape[1]
            self.work.tokens(self.index, self.ctx.step, n * b, n * b)
            self.work.pairs(self.index, n * n * b, n * n * b)
        return out

    def reset_state(self, module):
        self.states.reset()
        return module
