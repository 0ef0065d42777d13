"""Model adapters: what Sol needs to know about one model family.

Skills never match class names; they ask the adapter (the idea of cache-dit's
``BlockAdapterRegister``) for:

- the blocks and the block I/O contract, including which block arguments are per-token;
- the self- and cross-attention modules, and attention computed from q/k/v exactly as the
  family's own processor computes it (bit-identical when nothing is changed);
- the token grid (frames x height x width after patching) of a call;
- every denoising transformer of a pipeline (Wan 2.2 A14B has two experts and a boundary);
- the linear layers of the blocks, and the capabilities the family offers.

One adapter object describes one transformer; :func:`adapter_for` on a pipeline returns the
adapter of its first denoiser with ``experts`` listing one adapter per denoiser.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from sol.errors import SolError
from sol.hooks.core import ArgRef


class Capability(enum.StrEnum):
    """What a model family offers; a skill names the ones it needs (``Skill.requires``)."""

    SWAPPABLE_ATTENTION = "swappable_attention"  # attention processors can be replaced per module
    SELF_ATTENTION_QKV = "self_attention_qkv"  # self-attention computed from q/k/v by the adapter
    CROSS_ATTENTION = "cross_attention"  # text enters through cross-attention (text K/V reuse)
    BLOCK_RESIDUALS = "block_residuals"  # blocks map hidden_states -> hidden_states (residual caching)
    PRUNABLE_TOKENS = "prunable_tokens"  # per-token block arguments can be gathered with the tokens
    LINEAR_LAYERS = "linear_layers"  # nn.Linear layers that may be swapped (quantization)
    STEP_MODULATION = "step_modulation"  # timestep-modulated input visible for step caching
    # diffusers' block caches (FirstBlockCache, TaylorSeer, MagCache) know this family's blocks
    DIFFUSERS_BLOCK_CACHE = "diffusers_block_cache"
    FUSABLE_BLOCKS = "fusable_blocks"  # block forward written over BlockOps chains (kernel fusion)


@dataclass(frozen=True)
class WorkloadRules:
    """What a workload must satisfy to run on one pipeline (from its adapter and its VAE).

    ``frame_step``: frames must be ``frame_step * k + 1`` (the VAE packs ``frame_step`` frames per
    latent after the first); ``size_multiple``: height and width (VAE stride x patch size, or the
    pipeline's own check); ``max_text_tokens``: the longest ``max_sequence_length`` the tokenizer
    pads to (None when the pipeline fixes its own text length, said in ``text_length``);
    ``guidance_scale``: set when the pipeline takes guidance from a component, not a call argument.
    """

    frame_step: int = 4
    size_multiple: int = 16
    max_text_tokens: int | None = None
    text_length: str = "max_sequence_length tokens (prompts padded to it)"
    guidance_scale: float | None = None

    def describe(self) -> dict:
        return {
            "num_frames": f"{self.frame_step}k+1",
            "height/width": f"multiples of {self.size_multiple}",
            "text": self.text_length
            + (f", at most {self.max_text_tokens}" if self.max_text_tokens is not None else ""),
            **({"guidance_scale": self.guidance_scale} if self.guidance_scale is not None else {}),
        }

    def check(self, workload, family: str) -> None:
        """Raise a one-line :class:`SolError` naming the first rule ``workload`` breaks."""
        f = workload.num_frames
        if (f - 1) % self.frame_step:
            up = ((f - 1 + self.frame_step - 1) // self.frame_step) * self.frame_step + 1
            raise SolError(
                f"workload {workload.name!r}: num_frames={f} must be {self.frame_step}k+1 for {family}"
                f" (its VAE packs {self.frame_step} frames per latent after the first); try {up}"
            )
        for name in ("height", "width"):
            v = getattr(workload, name)
            if v % self.size_multiple:
                near = max(self.size_multiple, round(v / self.size_multiple) * self.size_multiple)
                raise SolError(
                    f"workload {workload.name!r}: {name}={v} must be a multiple of {self.size_multiple}"
                    f" for {family}; try {near}"
                )
        if self.max_text_tokens is not None and workload.max_sequence_length > self.max_text_tokens:
            raise SolError(
                f"workload {workload.name!r}: max_sequence_length={workload.max_sequence_length} exceeds the"
                f" {self.max_text_tokens} tokens {family}'s tokenizer pads to; lower it"
            )
        if self.guidance_scale is not None and workload.guidance_scale != self.guidance_scale:
            raise SolError(
                f"workload {workload.name!r}: guidance_scale={workload.guidance_scale} but {family} takes its"
                f" guidance from the pipeline's guider ({self.guidance_scale}); set guidance_scale to"
                f" {self.guidance_scale} in the workload, or change the pipeline's guider"
            )


# Reasons for capabilities that need per-family work nobody has done yet (a family's own
# ``capability_gaps`` says why one is impossible instead).
_NOT_YET = {
    Capability.FUSABLE_BLOCKS: "kernel fusion needs the family's block forward written over fusable op chains"
    " (adapter.block_forward); written for Wan only so far",
}


def _vae_factors(pipe, temporal: tuple[str, ...], spatial: tuple[str, ...], default: tuple[int, int]):
    """(temporal, spatial) compression of ``pipe``'s VAE from the attributes its pipeline class sets."""
    t = next((getattr(pipe, a) for a in temporal if isinstance(getattr(pipe, a, None), int)), default[0])
    s = next((getattr(pipe, a) for a in spatial if isinstance(getattr(pipe, a, None), int)), default[1])
    return int(t), int(s)


def tokenizer_max_length(pipe) -> int | None:
    """The longest sequence ``pipe``'s tokenizer is configured for (None when it has no sane limit)."""
    n = getattr(getattr(pipe, "tokenizer", None), "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < 1_000_000 else None


class BlockOps:
    """The op chains of a DiT block that kernel fusion may replace (``ModelAdapter.block_forward``).

    An adapter writes its block's forward over these calls; each default computes its chain
    eagerly, op for op as the families do (adaLN modulate in float32, cast back), so
    ``block_forward(..., ops=BlockOps())`` is bit-identical to the block's own forward. The
    fusion skill passes a subclass that swaps chains for fused kernels or marks what a compiled
    graph may hold.

    >>> BlockOps().gated_residual(torch.ones(1, 2, 4), torch.ones(1, 2, 4), torch.ones(1, 4)).sum().item()
    16.0
    """

    def norm_modulate(self, x, norm: nn.Module, shift, scale):
        """``norm(x) * (1 + scale) + shift`` in float32, cast to ``x``'s dtype (adaLN modulate)."""
        return (norm(x.float()) * (1 + scale) + shift).type_as(x)

    def norm(self, x, norm: nn.Module):
        """``norm(x)`` in float32, cast to ``x``'s dtype (``norm`` may be ``nn.Identity``)."""
        return norm(x.float()).type_as(x)

    def gated_residual(self, x, y, gate):
        """``x + y * gate`` in float32, cast to ``x``'s dtype."""
        return (x.float() + y.float() * gate).type_as(x)

    def self_attention(self, attn: nn.Module, x, rotary_emb):
        return attn(x, None, None, rotary_emb)

    def cross_attention(self, attn: nn.Module, x, context):
        return attn(x, context, None, None)

    def feed_forward(self, ffn: nn.Module, x, parts=None):
        """``ffn(x)``; ``parts`` (from :meth:`ModelAdapter.feed_forward_parts`) lets a fused op take
        the projection and its activation apart."""
        return ffn(x)


@dataclass(frozen=True)
class FeedForwardParts:
    """A feed-forward as ``tail(gelu(proj(x)))``: what a fused projection + GELU kernel needs.

    ``approximate`` is the model's own GELU (``"tanh"`` or ``"none"`` = erf): a fused kernel must
    compute that one (they differ by up to 4.7e-4 per element, enough to drift a video).
    """

    proj: nn.Module
    approximate: str
    tail: tuple[nn.Module, ...]


@dataclass(frozen=True)
class BlockIO:
    """How a transformer block is called and what it returns (the block I/O contract).

    ``per_token`` names the block arguments that carry a token axis (``token_dim``): token
    pruning gathers them with the tokens it keeps (:meth:`ModelAdapter.select_tokens`).
    ``hidden_states`` and ``modulation`` name the block's stream and its timestep-modulation
    argument (what :meth:`ModelAdapter.modulated_input` takes).
    """

    args: tuple[str, ...]
    returns: str
    hidden_states_layout: str  # e.g. "[B, S, D]"
    per_token: tuple[str, ...] = ("hidden_states",)
    token_dim: int = 1
    hidden_states: str = "hidden_states"
    modulation: str = "temb"
    # Blocks that carry several streams (LTX-2: video, audio; HunyuanVideo 1.5: video, text) return
    # them as a tuple: their argument names in return order. Empty: the block returns hidden_states.
    streams: tuple[str, ...] = ()

    def stream_refs(self) -> ArgRef | tuple[ArgRef, ...]:
        """The stream argument(s) block-range caching bypasses: one ArgRef, or a tuple in return order."""
        if not self.streams:
            return self.ref(self.hidden_states)
        return tuple(self.ref(n) for n in self.streams)

    def primary_output(self, out):
        """The ``hidden_states`` stream of a block's output (the whole output for one-stream blocks)."""
        return out[self.streams.index(self.hidden_states)] if self.streams else out

    def ref(self, name: str) -> ArgRef:
        """(name, position) of a block argument, for :class:`~sol.hooks.ArgRef` access."""
        if name not in self.args:
            raise SolError(f"the block I/O contract has no argument {name!r} (it has {', '.join(self.args)})")
        return ArgRef(name, self.args.index(name))


@dataclass(frozen=True)
class Fingerprint:
    """Identity of a model: class, config hash, and a hash of (a sample of) its weights.

    For a pipeline with several denoisers, ``cls`` joins their classes with ``+`` and the hashes
    cover all of them; ``experts`` keeps each one's own fingerprint.
    """

    cls: str
    config_hash: str
    weights_hash: str
    experts: tuple[dict, ...] = ()

    def to_json(self) -> dict:
        out = {"cls": self.cls, "config_hash": self.config_hash, "weights_hash": self.weights_hash}
        if self.experts:
            out["experts"] = [dict(e) for e in self.experts]
        return out


def gather_tokens(t: torch.Tensor, index: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``t`` restricted to the tokens ``index`` ([B, K], or [K] for every batch row) along ``dim``.

    A size-1 batch (RoPE tables are shared by the batch) is expanded to the index's batch.

    >>> gather_tokens(torch.arange(6.).view(1, 3, 2), torch.tensor([[2, 0]])).tolist()
    [[[4.0, 5.0], [0.0, 1.0]]]
    """
    if index.ndim == 1:
        return t.index_select(dim, index)
    b, k = index.shape
    if t.shape[0] != b:
        t = t.expand(b, *t.shape[1:])
    view = [b] + [1] * (t.ndim - 1)
    view[dim] = k
    size = list(t.shape)
    size[dim] = k
    return t.gather(dim, index.reshape(view).expand(size))


@dataclass
class ModelAdapter:
    """Per-family knowledge about one denoising transformer; subclasses register with
    :func:`register_adapter`."""

    family: ClassVar[str] = ""
    title: ClassVar[str] = ""  # the family's name for people, e.g. "SANA-Video"
    pipeline_class: ClassVar[str] = ""  # the diffusers pipeline and transformer classes it covers
    transformer_class: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    block_io: ClassVar[BlockIO]
    # Arguments of the transformer's own forward.
    input_argument: ClassVar[ArgRef] = ArgRef("hidden_states", 0)
    timestep_argument: ClassVar[ArgRef] = ArgRef("timestep", 1)
    text_argument: ClassVar[ArgRef] = ArgRef("encoder_hidden_states", 2)
    # Pipeline attributes that hold denoising transformers, in order (missing or None ones skipped).
    denoiser_attributes: ClassVar[tuple[str, ...]] = ("transformer",)
    # Why a capability is absent, for refusals and docs (``sol models``, docs/models.md).
    capability_gaps: ClassVar[dict[Capability, str]] = {}
    # The size multiple the pipeline itself checks (Wan: 16), whatever the VAE and patch give.
    pipeline_size_multiple: ClassVar[int] = 1

    transformer: nn.Module = field(repr=False)
    name: str = "transformer"  # the pipeline attribute holding this transformer
    experts: list[ModelAdapter] = field(default_factory=list, repr=False)
    boundary_ratio: float | None = None  # where the pipeline switches experts (Wan 2.2)

    def __post_init__(self):
        if not self.experts:
            self.experts = [self]

    @classmethod
    def matches(cls, transformer: nn.Module) -> bool:
        raise NotImplementedError

    # --- structure -----------------------------------------------------------------------------

    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def blocks_path(self) -> str:
        """Qualified name of the block list inside the transformer, e.g. ``blocks``."""
        target = self.blocks()
        for name, module in self.transformer.named_modules():
            if module is target:
                return name
        raise SolError(f"the {self.family} adapter's blocks are not inside its transformer; fix the adapter")

    def self_attention_modules(self) -> dict[str, nn.Module]:
        """Qualified name -> self-attention module (the ones sparse attention may change)."""
        raise NotImplementedError

    def cross_attention_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def call_probes(self) -> dict[str, list[nn.Module]]:
        """Name -> modules whose forward runs only when that work really happens.

        The evaluator hooks them innermost (inside every cache) and outside compiled regions.
        """
        raise NotImplementedError

    def linear_layers(self) -> dict[str, nn.Linear]:
        """Qualified name (from the transformer) -> every nn.Linear inside the transformer blocks."""
        prefix = self.blocks_path()
        out = {}
        for i, block in enumerate(self.blocks()):
            for n, m in block.named_modules():
                if isinstance(m, nn.Linear):
                    out[f"{prefix}.{i}.{n}" if n else f"{prefix}.{i}"] = m
        return out

    # --- tokens --------------------------------------------------------------------------------

    def token_grid(self, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid (frames, height, width) after patching, for the transformer's input shape."""
        raise NotImplementedError(f"{self.family} does not describe its token grid")

    def select_tokens(self, name: str, value, index: torch.Tensor):
        """A per-token block argument restricted to the tokens ``index`` ([B, K]); other arguments
        are returned unchanged. Wan's RoPE is a (cos, sin) pair, each gathered."""
        if name not in self.block_io.per_token or value is None:
            return value
        if isinstance(value, tuple | list):
            return type(value)(gather_tokens(v, index, self.block_io.token_dim) for v in value)
        return gather_tokens(value, index, self.block_io.token_dim)

    # --- attention -----------------------------------------------------------------------------

    def self_attention_qkv(self, attn: nn.Module, hidden_states: torch.Tensor, rotary_emb=None):
        """Query, key, value ``[B, S, H, D]`` of a self-attention module, after its norms and RoPE,
        op for op as the family's processor computes them."""
        raise NotImplementedError(f"{self.family} does not expose self-attention q/k/v")

    def attend(self, processor, query, key, value, attention_mask=None, *, cross=False) -> torch.Tensor:
        """Dense attention ``[B, S, H, D]`` as the family's processor calls it (``cross``: for
        cross-attention, which some families dispatch differently)."""
        raise NotImplementedError(f"{self.family} does not expose its attention call")

    def attention_output(self, attn: nn.Module, out: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """The module's output from the attention result ``[B, S, H, D]`` (merge heads, project)."""
        raise NotImplementedError(f"{self.family} does not expose its attention output projection")

    def processor_rotary_emb(self, rest: tuple, kwargs: dict):
        """The self-attention RoPE among what a processor receives after ``attention_mask``.

        Attention modules call their processor as their family does: Wan
        ``(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)``, LTX-2
        ``(..., attention_mask, query_rotary_emb, key_rotary_emb, **kw)``. A processor Sol installs
        takes ``(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *rest, **kw)``
        and reads the RoPE here, so it fits every family.

        >>> rope = adapter.processor_rotary_emb(rest, kw)  # doctest: +SKIP
        """
        return rest[0] if rest else kwargs.get("rotary_emb")

    def self_attention(self, attn, processor, hidden_states, rotary_emb=None, attend=None) -> torch.Tensor:
        """Self-attention of ``attn`` with ``attend(q, k, v)`` in place of dense attention.

        With ``attend=None`` this is bit-identical to the family's own processor.
        """
        q, k, v = self.self_attention_qkv(attn, hidden_states, rotary_emb)
        out = self.attend(processor, q, k, v) if attend is None else attend(q, k, v)
        return self.attention_output(attn, out, q)

    # --- caching -------------------------------------------------------------------------------

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

    def cross_attention_from_kv(
        self, attn: nn.Module, processor, hidden_states, key, value, attention_mask=None
    ) -> torch.Tensor:
        """``attn``'s output for ``hidden_states`` attending to ``key``/``value`` from :meth:`text_kv`;
        bit-identical to ``processor`` computing them itself, ``attention_mask`` (the one the block
        passes) applied as the processor applies it."""
        raise NotImplementedError(f"{self.family} cannot run cross-attention from cached keys and values")

    # --- kernel fusion (Capability.FUSABLE_BLOCKS) ----------------------------------------------

    def block_forward(self, block: nn.Module, *args, ops: BlockOps | None = None, **kwargs):
        """``block(*args, **kwargs)`` written over :class:`BlockOps` chains; with ``ops=None``
        bit-identical to the block's own forward (tested).

        >>> adapter.block_forward(block, hs, text, temb, rope, ops=fused_ops)  # doctest: +SKIP
        """
        raise NotImplementedError(f"{self.family} does not write its block forward over fusable chains")

    def feed_forward_parts(self, ffn: nn.Module) -> FeedForwardParts | None:
        """``ffn`` as projection, GELU and the rest (None when it is not that shape)."""
        return None

    # --- workloads -----------------------------------------------------------------------------

    def workload_rules(self, pipe=None) -> WorkloadRules:
        """The rules a workload must meet on ``pipe`` (frames and sizes from its VAE)."""
        t, s = _vae_factors(pipe, ("vae_scale_factor_temporal",), ("vae_scale_factor_spatial",), (4, 8))
        return WorkloadRules(
            frame_step=t,
            size_multiple=math.lcm(s * self.spatial_patch(), self.pipeline_size_multiple),
            max_text_tokens=tokenizer_max_length(pipe),
        )

    def spatial_patch(self) -> int:
        """Latent pixels per token along height and width (the transformer's patch size)."""
        return 1

    def check_workload(self, workload, pipe=None) -> None:
        """Refuse, in one line naming the rule, a workload this model cannot run as given.

        >>> adapter.check_workload(load_workload("smoke"), pipe)  # doctest: +SKIP
        """
        self.workload_rules(pipe).check(workload, self.family)

    def pipe_kwargs(self, workload, prompt: str, pipe=None) -> dict:
        """The pipeline call arguments for one prompt of ``workload`` (names differ per family)."""
        return {
            "prompt": prompt,
            "negative_prompt": workload.negative_prompt,
            "num_frames": workload.num_frames,
            "height": workload.height,
            "width": workload.width,
            "num_inference_steps": workload.num_inference_steps,
            "guidance_scale": workload.guidance_scale,
            "max_sequence_length": workload.max_sequence_length,
        }

    def video_output(self, output):
        """The first video ``[F, H, W, 3]`` of a pipeline call's output (``output_type="np"``)."""
        return output.frames[0]

    def call_token_grid(self, args: tuple, kwargs: dict) -> tuple[int, int, int] | None:
        """Token grid of one transformer call (what the step tracker records); by default from the
        input's shape. Families whose input is already packed read it from other arguments."""
        hs = self.input_argument.get(args, kwargs)
        return self.token_grid(tuple(hs.shape)) if isinstance(hs, torch.Tensor) else None

    def example_inputs(self, workload, *, calls: int = 2, generator: torch.Generator | None = None):
        """``calls`` synthetic transformer calls ``[(args, kwargs)]`` of ``workload``'s shapes, timesteps
        spread over the schedule (quantization calibration without a pipeline)."""
        raise NotImplementedError(f"{self.family} does not build example inputs")

    def missing_reason(self, capability: Capability) -> str | None:
        """Why this family lacks ``capability`` (None when it has it)."""
        if capability in self.capabilities:
            return None
        return self.capability_gaps.get(
            capability, _NOT_YET.get(capability, "not implemented for this family yet")
        )

    def text_kv_refusal(self) -> str | None:
        """Why text K/V reuse cannot be exact on this model (None: it can, masks included)."""
        if Capability.CROSS_ATTENTION not in self.capabilities:
            return self.missing_reason(Capability.CROSS_ATTENTION)
        return None

    def describe(self) -> dict:
        out = {
            "family": self.family,
            "class": type(self.transformer).__name__,
            "blocks": len(self.blocks()),
            "capabilities": sorted(str(c) for c in self.capabilities),
            "missing": {str(c): self.missing_reason(c) for c in Capability if c not in self.capabilities},
            "block_io": {
                "args": list(self.block_io.args),
                "returns": self.block_io.returns,
                "layout": self.block_io.hidden_states_layout,
                "per_token": list(self.block_io.per_token),
            },
            "parameters": sum(p.numel() for p in self.transformer.parameters()),
        }
        if len(self.experts) > 1:
            out["experts"] = [
                {"name": e.name, "class": type(e.transformer).__name__, "blocks": len(e.blocks()),
                 "parameters": sum(p.numel() for p in e.transformer.parameters())}
                for e in self.experts
            ]  # fmt: skip
            out["boundary_ratio"] = self.boundary_ratio
        return out


_ADAPTERS: list[type[ModelAdapter]] = []


def registered_families() -> list[type[ModelAdapter]]:
    """Every registered adapter class (one per model family), in registration order."""
    return list(_ADAPTERS)


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: make an adapter available to :func:`adapter_for`."""
    _ADAPTERS.append(cls)
    return cls


def _adapter_class(transformer: nn.Module) -> type[ModelAdapter]:
    for cls in _ADAPTERS:
        if cls.matches(transformer):
            return cls
    known = ", ".join(c.family for c in _ADAPTERS)
    raise SolError(
        f"model class {type(transformer).__name__} is not supported yet (supported families: {known});"
        " add an adapter in sol/models/"
    )


def denoisers(pipe_or_transformer) -> list[tuple[str, nn.Module]]:
    """``(attribute, transformer)`` for every denoising transformer of a pipeline, in order.

    A bare transformer is its own only denoiser (named ``transformer``).
    """
    if isinstance(pipe_or_transformer, nn.Module) and not hasattr(pipe_or_transformer, "components"):
        return [("transformer", pipe_or_transformer)]
    found = [
        (name, getattr(pipe_or_transformer, name, None))
        for name in _pipeline_denoiser_attributes(pipe_or_transformer)
    ]
    found = [(n, t) for n, t in found if isinstance(t, nn.Module)]
    if not found:
        raise SolError(
            f"{type(pipe_or_transformer).__name__} has no denoising transformer; pass a diffusers pipeline"
        )
    return found


def _pipeline_denoiser_attributes(pipe) -> tuple[str, ...]:
    names = ["transformer"]
    for cls in _ADAPTERS:
        names += [n for n in cls.denoiser_attributes if n not in names]
    return tuple(names)


def pipeline_kwargs(pipe, workload, prompt: str) -> dict:
    """``pipe``'s call arguments for one prompt of ``workload``, after the family's workload check.

    >>> pipe(**pipeline_kwargs(pipe, load_workload("smoke"), "a red circle"))  # doctest: +SKIP
    """
    adapter = adapter_for(pipe)
    adapter.check_workload(workload, pipe)
    return adapter.pipe_kwargs(workload, prompt, pipe)


def pipeline_video(pipe, output):
    """The first video of ``pipe``'s output as its family returns it (``frames`` or ``video``)."""
    return adapter_for(pipe).video_output(output)


def adapter_for(pipe_or_transformer) -> ModelAdapter:
    """The adapter of a pipeline's first denoiser, with ``experts`` covering every denoiser.

    >>> adapter_for(pipe).experts  # Wan 2.2 A14B: [transformer, transformer_2]  # doctest: +SKIP
    """
    found = denoisers(pipe_or_transformer)
    adapters = [_adapter_class(t)(t, name=name) for name, t in found]
    config = getattr(pipe_or_transformer, "config", {}) if len(found) > 1 else {}
    boundary = config.get("boundary_ratio") if hasattr(config, "get") else None
    for a in adapters:
        a.experts = adapters
        a.boundary_ratio = boundary
    return adapters[0]


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


def _config_of(transformer) -> dict:
    config = dict(getattr(transformer, "config", {}))
    return {k: v for k, v in config.items() if not k.startswith("_")}


def fingerprint(pipe_or_transformer) -> Fingerprint:
    """Fingerprint of a pipeline's denoisers (what plans are tied to).

    One transformer: its class, config hash and weights hash. Several (Wan 2.2's experts): the
    classes joined with ``+``, hashes over all of them and the boundary, and each expert's own.

    >>> fingerprint(pipe).cls  # doctest: +SKIP
    'WanTransformer3DModel'
    """
    found = denoisers(pipe_or_transformer)
    own = [
        {
            "name": n,
            "cls": type(t).__name__,
            "config_hash": _hash_json(_config_of(t)),
            "weights_hash": weights_hash(t),
        }
        for n, t in found
    ]
    if len(own) == 1:
        return Fingerprint(own[0]["cls"], own[0]["config_hash"], own[0]["weights_hash"])
    config = getattr(pipe_or_transformer, "config", {})
    boundary = config.get("boundary_ratio") if hasattr(config, "get") else None
    return Fingerprint(
        "+".join(e["cls"] for e in own),
        _hash_json({"experts": [e["config_hash"] for e in own], "boundary_ratio": boundary}),
        _hash_json([e["weights_hash"] for e in own]),
        tuple(own),
    )
