"""Model adapters: what Sol needs to know about one model family.

Skills never match class names; they ask the adapter for blocks, attention modules,
capabilities and the block I/O contract (the idea of cache-dit's ``BlockAdapterRegister``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from sol.errors import SolError

# Capabilities a skill may require from a model.
SWAPPABLE_ATTENTION = "swappable_attention"  # attention processors can be replaced per module
CROSS_ATTENTION = "cross_attention"  # text enters through cross-attention (text K/V reuse)
BLOCK_RESIDUALS = "block_residuals"  # blocks map hidden_states -> hidden_states (residual caching)
PRUNABLE_TOKENS = "prunable_tokens"  # video tokens can be gathered/scattered inside blocks
LINEAR_LAYERS = "linear_layers"  # nn.Linear layers that may be swapped (quantization)
STEP_MODULATION = "step_modulation"  # timestep-modulated input visible for step caching


@dataclass(frozen=True)
class BlockIO:
    """How a transformer block is called and what it returns (the block I/O contract)."""

    args: tuple[str, ...]
    returns: str
    hidden_states_layout: str  # e.g. "[B, S, D]"


@dataclass(frozen=True)
class Fingerprint:
    """Identity of a model: class, config hash, and a hash of (a sample of) its weights."""

    cls: str
    config_hash: str
    weights_hash: str

    def to_json(self) -> dict:
        return {"cls": self.cls, "config_hash": self.config_hash, "weights_hash": self.weights_hash}


@dataclass
class ModelAdapter:
    """Per-family knowledge; subclasses register with :func:`register_adapter`."""

    family: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()
    block_io: ClassVar[BlockIO]
    transformer: nn.Module = field(repr=False)

    @classmethod
    def matches(cls, transformer: nn.Module) -> bool:
        raise NotImplementedError

    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def self_attention_modules(self) -> dict[str, nn.Module]:
        """Qualified name -> self-attention module (the ones sparse attention may change)."""
        raise NotImplementedError

    def cross_attention_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def call_probes(self) -> dict[str, list[nn.Module]]:
        """Name -> modules whose forward runs only when that work really happens."""
        raise NotImplementedError

    # Where the transformer's forward takes the prompt embeddings: (keyword, position).
    text_argument: ClassVar[tuple[str, int]] = ("encoder_hidden_states", 2)

    def modulated_input(
        self, block: nn.Module, hidden_states: torch.Tensor, temb: torch.Tensor
    ) -> torch.Tensor:
        """The timestep-modulated input of ``block``'s first sub-layer (what step caching watches).

        ``hidden_states`` and ``temb`` are the block's arguments as the block I/O contract names them.
        """
        raise NotImplementedError(f"{self.family} does not expose its modulated input")

    def text_kv(self, attn: nn.Module, encoder_hidden_states: torch.Tensor):
        """Keys and values a cross-attention module computes from the text, exactly as its processor does.

        Returns ``(key, value)``, or None when this module's cross-attention cannot take precomputed
        keys and values (then text K/V reuse leaves it alone).
        """
        return None

    def cross_attention_from_kv(self, attn: nn.Module, processor, hidden_states, key, value) -> torch.Tensor:
        """``attn``'s output for ``hidden_states`` attending to ``key``/``value`` from :meth:`text_kv`;
        bit-identical to ``processor`` computing them itself."""
        raise NotImplementedError(f"{self.family} cannot run cross-attention from cached keys and values")

    def linear_layers(self) -> dict[str, nn.Linear]:
        """Qualified name -> every nn.Linear inside the transformer blocks."""
        return {
            n: m
            for n, m in self.transformer.named_modules()
            if isinstance(m, nn.Linear) and ".blocks." in f".{n}"
        }

    def describe(self) -> dict:
        return {
            "family": self.family,
            "class": type(self.transformer).__name__,
            "blocks": len(self.blocks()),
            "capabilities": sorted(self.capabilities),
            "block_io": {
                "args": list(self.block_io.args),
                "returns": self.block_io.returns,
                "layout": self.block_io.hidden_states_layout,
            },
            "parameters": sum(p.numel() for p in self.transformer.parameters()),
        }


_ADAPTERS: list[type[ModelAdapter]] = []


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: make an adapter available to :func:`adapter_for`."""
    _ADAPTERS.append(cls)
    return cls


def adapter_for(pipe_or_transformer) -> ModelAdapter:
    """The adapter of a pipeline's transformer (or of a transformer itself)."""
    transformer = getattr(pipe_or_transformer, "transformer", pipe_or_transformer)
    for cls in _ADAPTERS:
        if cls.matches(transformer):
            return cls(transformer)
    known = ", ".join(c.family for c in _ADAPTERS)
    raise SolError(
        f"model class {type(transformer).__name__} is not supported yet (supported families: {known});"
        " add an adapter in sol/models/"
    )


def _hash_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_hash(module: nn.Module, sample: int = 4096) -> str:
    """Hash of every parameter's name, shape, dtype and a strided sample of its values.

    Hashing all 5.6 GB of a 1.3B model would take seconds; a strided sample of 4096 values
    per tensor still tells apart any two trainings or seeds.
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        flat = t.detach().reshape(-1)
        if flat.numel() == 0:
            continue
        step = max(1, flat.numel() // sample)
        vals = flat[::step][:sample].to("cpu", torch.float32).contiguous()
        h.update(vals.numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(pipe_or_transformer) -> Fingerprint:
    """Fingerprint of a pipeline's transformer (what plans are tied to).

    >>> fp = fingerprint(pipe)  # doctest: +SKIP
    >>> fp.cls
    'WanTransformer3DModel'
    """
    transformer = getattr(pipe_or_transformer, "transformer", pipe_or_transformer)
    config = dict(getattr(transformer, "config", {}))
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    return Fingerprint(type(transformer).__name__, _hash_json(config), weights_hash(transformer))
