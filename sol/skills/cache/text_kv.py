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
generation (see ``_common.GenerationResetHook``), so a new prompt never meets old keys.

diffusers 0.42.1 ships a ``TextKVCacheConfig`` too, but its hook is written for
``NucleusMoEImageTransformerBlock`` only: on Wan it matches nothing and silently does
nothing, so Sol does not offer it.
"""

from __future__ import annotations

from typing import Literal

from sol.errors import SolError
from sol.models.base import CROSS_ATTENTION
from sol.skills.base import Handle, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.cache import _common

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


def _key_hook_class():
    from diffusers.hooks.hooks import ModelHook

    class TextKVKeyHook(ModelHook):
        """On the transformer: tells the processors which prompt this call carries."""

        _is_stateful = True  # so a generation reset (or the pipeline's end-of-call reset) clears it

        def __init__(self, store: TextKVStore, text_argument: tuple[str, int]):
            super().__init__()
            self.store = store
            self.text_argument = text_argument

        def new_forward(self, module, *args, **kwargs):
            self.store.select(_common.arg(args, kwargs, *self.text_argument))
            try:
                return self.fn_ref.original_forward(*args, **kwargs)
            finally:
                self.store.current = None  # a call outside a transformer forward never sees a key

        def reset_state(self, module):
            self.store.clear()
            return module

    return TextKVKeyHook


class TextKVProcessor:
    """Wraps a cross-attention processor: K/V from the cache, everything else as the original."""

    def __init__(self, inner, store: TextKVStore, adapter):
        self.inner = inner
        self.store = store
        self.adapter = adapter

    # Attention-backend switches (``set_attention_backend``) set this on processors: pass it through.
    @property
    def _attention_backend(self):
        return getattr(self.inner, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, value):
        self.inner._attention_backend = value

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None, **kw
    ):
        entry = self.store.current
        if (
            entry is None
            or encoder_hidden_states is None
            or attention_mask is not None
            or rotary_emb is not None
            or kw
        ):
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, **kw)
        kv = entry.kv.get(id(attn))
        if kv is None:
            kv = self.adapter.text_kv(attn, encoder_hidden_states)
            if kv is None:  # this module's cross-attention cannot take cached K/V (e.g. I2V)
                return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
            entry.kv[id(attn)] = kv
            self.store.computed += 1
        else:
            self.store.reused += 1
        return self.adapter.cross_attention_from_kv(attn, self.inner, hidden_states, *kv)


@register_skill(TextKVCacheConfig)
class TextKVCacheSkill(Skill):
    name = "cache"
    reads = frozenset({Seam.TEXT_KV})
    writes = frozenset({Seam.TEXT_KV})
    requires = frozenset({CROSS_ATTENTION})
    phase = 70  # after attention backends (they swap self-attention processors), before step caches

    def apply(self, pipe, config: TextKVCacheConfig, adapter) -> Handle:
        transformer = adapter.transformer
        modules = adapter.cross_attention_modules()
        if any(isinstance(m.processor, TextKVProcessor) for m in modules.values()):
            raise SolError(
                "cache.text_kv is already applied to this model; revert it before applying it again"
            )
        _common.refuse_if_hooked([transformer], (TEXT_KV_KEY_HOOK,), config.kind)
        store = TextKVStore()
        originals = {name: m.processor for name, m in modules.items()}
        for m in modules.values():
            m.set_processor(TextKVProcessor(m.processor, store, adapter))
        _common.register(transformer, _key_hook_class()(store, adapter.text_argument), TEXT_KV_KEY_HOOK)
        _common.acquire_generation_reset(transformer)

        def revert():
            _common.release_generation_reset(transformer)
            _common.unregister(transformer, TEXT_KV_KEY_HOOK)
            for name, m in modules.items():
                m.set_processor(originals[name])
            store.clear()

        handle = Handle(revert)
        handle.store = store  # evidence: how many projections ran / were reused
        return handle

    def examples(self) -> list[TechniqueConfig]:
        return [TextKVCacheConfig()]

    def search_space(self, context) -> list[TechniqueConfig]:
        return [TextKVCacheConfig()]  # exact: one evaluation measures what it is worth here
