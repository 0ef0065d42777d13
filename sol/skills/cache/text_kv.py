"""Text K/V reuse (lossless): cross-attention keys and values of the prompt, computed once.

Every denoising step projects the same prompt embeddings through each block's cross-attention
``to_k``/``to_v`` (+ ``norm_k``). The projections depend on the text alone, so Sol computes them
at the first step of a generation and reuses them at every later step: outputs are
bit-identical to the uncached pipeline (same ops on the same inputs, evaluated once).

Keying. Classifier-free guidance calls the transformer twice per step with *different* text
(prompt, negative prompt). A transformer-level hook reads the raw ``encoder_hidden_states``
argument of each call (the pipeline's ``prompt_embeds`` / ``negative_prompt_embeds``, which
live for the whole loop) and selects the cache entry of that tensor: by identity *and*
``tensor._version`` (an in-place edit bumps it), with the entry holding a reference so the
memory cannot be recycled for another prompt while cached. The hook resets with every
generation (see :mod:`sol.hooks.steps`), so a new prompt never meets old keys.

diffusers 0.42.1 ships a ``TextKVCacheConfig`` too, but its hook is written for
``NucleusMoEImageTransformerBlock`` only: on Wan it matches nothing and silently does
nothing, so Sol does not offer it.
"""

from __future__ import annotations

from typing import Literal

from sol.errors import SolError
from sol.hooks import ArgRef, Installation, ModelHook, WrappingProcessor, track_steps
from sol.models.base import Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig, register_skill

TEXT_KV_KEY_HOOK = "sol_text_kv_key"
# Prompt, negative prompt, and room for a caller that alternates a few more within one generation.
MAX_ENTRIES = 4


class TextKVCacheConfig(TechniqueConfig):
    """Reuse the prompt's cross-attention keys/values across steps (exact; no knobs).

    >>> TextKVCacheConfig().label()
    'cache.text_kv()'
    """

    kind: Literal["cache.text_kv"] = "cache.text_kv"
    version: int = 1


class _Entry:
    __slots__ = ("raw", "version", "kv")

    def __init__(self, raw):
        self.raw = raw  # held, so its memory is not reused by another prompt while cached
        self.version = raw._version
        self.kv: dict[int, tuple] = {}


class TextKVStore:
    """Per-generation cache: raw text tensor -> {id(attention module): (key, value)}."""

    def __init__(self):
        self.entries: list[_Entry] = []
        self.current: _Entry | None = None
        self.computed = 0  # K/V projections actually run (for tests and evidence)
        self.reused = 0
        self.passed = 0  # calls left to the original processor (no text, or a module that cannot reuse)

    def select(self, raw) -> None:
        if raw is None:
            self.current = None
            return
        for e in self.entries:
            if e.raw is raw and e.version == raw._version:
                self.current = e
                return
        e = _Entry(raw)
        self.entries.append(e)
        del self.entries[:-MAX_ENTRIES]
        self.current = e

    def clear(self) -> None:
        self.entries.clear()
        self.current = None


class TextKVKeyHook(ModelHook):
    """On the transformer: tells the processors which prompt this call carries."""

    _is_stateful = True  # so a generation reset (or the pipeline's end-of-call reset) clears it

    def __init__(self, store: TextKVStore, text: ArgRef):
        super().__init__()
        self.store = store
        self.text = text

    def new_forward(self, module, *args, **kwargs):
        self.store.select(self.text.get(args, kwargs))
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self.store.current = None  # a call outside a transformer forward never sees a key

    def reset_state(self, module):
        self.store.clear()
        return module


class TextKVProcessor(WrappingProcessor):
    """Wraps a cross-attention processor: K/V from the cache, everything else as the original."""

    def __init__(self, inner, store: TextKVStore, adapter):
        self.inner = inner
        self.store = store
        self.adapter = adapter

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *rest, **kw):
        # ``rest``: what a family passes after the mask (Wan: rotary_emb; LTX-2: query and key RoPE),
        # None on text cross-attention. The mask is the block's text mask: the cached keys and values
        # depend on the text alone, and the adapter applies the mask at every call exactly as the
        # processor does (``cross_attention_from_kv``), so masked cross-attention stays exact.
        entry = self.store.current
        if entry is None or encoder_hidden_states is None or any(r is not None for r in rest) or kw:
            self.store.passed += 1  # not a text call this wrapper serves: counted, never hidden
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *rest, **kw)
        kv = entry.kv.get(id(attn))
        if kv is None:
            kv = self.adapter.text_kv(attn, encoder_hidden_states)
            if kv is None:  # this module's cross-attention cannot take cached K/V (e.g. I2V)
                self.store.passed += 1
                return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *rest)
            entry.kv[id(attn)] = kv
            self.store.computed += 1
        else:
            self.store.reused += 1
        return self.adapter.cross_attention_from_kv(attn, self.inner, hidden_states, *kv, attention_mask)


@register_skill(TextKVCacheConfig)
class TextKVCacheSkill(Skill):
    name = "cache"
    reads = frozenset({Seam.TEXT_KV})
    writes = frozenset({Seam.TEXT_KV})
    requires = frozenset({Capability.CROSS_ATTENTION})
    phase = Phase.TEXT  # after attention backends (they swap self-attention processors), before step caches

    def apply(self, pipe, config: TextKVCacheConfig, adapter) -> Installation:
        transformer = adapter.transformer
        refusal = adapter.text_kv_refusal()
        if refusal is not None:  # the family decides; a reuse that cannot be exact is refused, never faked
            raise SolError(f"{config.kind} cannot be exact on {adapter.family}: {refusal}")
        modules = adapter.cross_attention_modules()
        inst = Installation(config.kind)
        inst.refuse_foreign_processors(modules)
        inst.refuse_hooked([transformer], TEXT_KV_KEY_HOOK)
        store = TextKVStore()
        for m in modules.values():
            inst.processor(m, TextKVProcessor(m.processor, store, adapter))
        inst.hook(
            transformer, TextKVKeyHook(store, adapter.text_argument), TEXT_KV_KEY_HOOK, root=transformer
        )
        inst.on_revert(store.clear)
        track_steps(inst, adapter)
        inst.store = store  # evidence: how many projections ran / were reused
        inst.counter_fn = lambda: {
            "text_kv_computed": store.computed,
            "text_kv_reused": store.reused,
            "text_kv_passed": store.passed,
        }
        return inst

    def examples(self) -> list[TechniqueConfig]:
        return [TextKVCacheConfig()]

    def search_space(self, context) -> list[TechniqueConfig]:
        return [TextKVCacheConfig()]  # exact: one evaluation measures what it is worth here
