"""Quantization schemes: what replaces one ``nn.Linear``, and on which hardware it can run.

Each scheme converts one linear layer into a quantized module (never changing the layer
it was given unless ``inplace=True``) and says, from the hardware alone, why it cannot
run there. GPU libraries (torchao, bitsandbytes) are imported only inside ``convert``: on
the CPU, torchao slows down and garbles diffusers' import, and Sol's runtime must import
without them.

| scheme | hardware | what |
|---|---|---|
| ``int8_dynamic`` | CPU (x86) | torch.ao dynamic int8: per-channel int8 weights, activations quantized per call (fbgemm) |
| ``torchao_fp8`` | CUDA, cc >= 8.9 | float8 e4m3 activations and weights, per-row scales |
| ``torchao_int8`` | CUDA | int8 dynamic activations + int8 weights |
| ``torchao_int8_weight_only`` | CUDA | int8 weights, compute in the model dtype (memory) |
| ``bnb_int8`` / ``bnb_nf4`` | CUDA + bitsandbytes | LLM.int8 / 4-bit NormalFloat weights (memory) |
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import warnings
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import nn

from sol.errors import SolError

GPU_EXTRA = "pip install 'sol[gpu]'"
X86_ENGINES = ("x86", "fbgemm")


class Scheme:
    """One way to quantize a linear layer; subclasses fill the class attributes and ``convert``."""

    name: ClassVar[str]
    # "speed": proposed by the search for latency; "memory": only when the budget limits memory.
    purpose: ClassVar[str] = "speed"
    summary: ClassVar[str] = ""

    def available(self, hardware) -> str | None:
        """Why this scheme cannot run on ``hardware`` (a :class:`sol.hardware.Hardware`), or None."""
        raise NotImplementedError

    def convert(self, linear: nn.Linear, *, inplace: bool = False) -> nn.Module:
        """The quantized replacement of ``linear`` (left unchanged unless ``inplace``)."""
        raise NotImplementedError

    def require(self, hardware) -> None:
        """Raise a one-line :class:`SolError` when the scheme cannot run on ``hardware``."""
        why = self.available(hardware)
        if why:
            raise SolError(f"quantization scheme {self.name!r} cannot run here: {why}")


# --- CPU ----------------------------------------------------------------------------------------


class _FloatIO(nn.Module):
    """Runs a float32-only quantized module inside a model of another dtype (casts in and out)."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner = inner
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.float()).to(self.dtype)


class Int8Dynamic(Scheme):
    """torch.ao dynamic int8 linear (fbgemm): int8 x int8 -> int32 GEMM, activations quantized per call.

    Per-channel weight scales cost nothing in speed here (measured on 1536x8960 at 512
    tokens: 5.5x vs 6.0x per-tensor, noise) and follow real weights' per-row ranges.
    """

    name = "int8_dynamic"
    summary = "CPU: int8 weights (per channel) and dynamically quantized int8 activations"

    def available(self, hardware) -> str | None:
        if hardware.kind != "cpu":
            return (
                f"runs on the CPU only, and this pipeline runs on {hardware.kind} ({hardware.name});"
                " use torchao_fp8 or torchao_int8 on a GPU"
            )
        engine = torch.backends.quantized.engine
        if engine not in X86_ENGINES or not hasattr(torch.ops.quantized, "linear_dynamic"):
            # qnnpack (ARM) lacks per-channel dynamic linear in some builds; untested, so not offered.
            return f"needs torch's x86 quantized engine (fbgemm/x86); this torch uses {engine!r}"
        return None

    def convert(self, linear: nn.Linear, *, inplace: bool = False) -> nn.Module:
        import torch.ao.nn.quantized.dynamic as nnqd
        from torch.ao.quantization.observer import PerChannelMinMaxObserver

        weight = linear.weight.detach().float()
        bias = None if linear.bias is None else linear.bias.detach().float()
        observer = PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        observer(weight)
        scale, zero_point = observer.calculate_qparams()
        with warnings.catch_warnings():
            # torch 2.13 deprecates the quantized tensor constructors; the ops still run.
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(
                weight, scale.to(torch.double), zero_point.to(torch.int64), 0, torch.qint8
            )
            module = nnqd.Linear(
                linear.in_features, linear.out_features, bias_=bias is not None, dtype=torch.qint8
            )
            module.set_weight_bias(qweight, bias)
        if linear.weight.dtype != torch.float32:
            return _FloatIO(module, linear.weight.dtype)
        return module


# --- CUDA ---------------------------------------------------------------------------------------


def _cuda_reason(hardware, min_cc: tuple[int, int] | None) -> str | None:
    need = "a CUDA GPU" + (f" with compute capability >= {min_cc[0]}.{min_cc[1]}" if min_cc else "")
    if hardware.kind != "cuda":
        return f"needs {need}, and this pipeline runs on the CPU; use int8_dynamic on the CPU"
    cc = tuple(hardware.compute_capability or (0, 0))
    if min_cc and cc < min_cc:
        return f"needs {need}; {hardware.name} has {cc[0]}.{cc[1]}"
    return None


def _package_reason(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"needs the {module} package: {GPU_EXTRA}"
    return None


class _TorchAO(Scheme):
    min_cc: ClassVar[tuple[int, int] | None] = None

    def available(self, hardware) -> str | None:
        return _cuda_reason(hardware, self.min_cc) or _package_reason("torchao")

    def _config(self):
        raise NotImplementedError

    def convert(self, linear: nn.Linear, *, inplace: bool = False) -> nn.Module:
        from torchao.quantization import quantize_

        module = linear if inplace else copy.deepcopy(linear)
        quantize_(module, self._config())  # quantize_ converts the root module itself when it is a Linear
        return module


class TorchAOFloat8(_TorchAO):
    name = "torchao_fp8"
    summary = "CUDA cc >= 8.9: float8 e4m3 dynamic activations and weights, per-row scales"
    min_cc = (8, 9)

    def _config(self):
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())


class TorchAOInt8(_TorchAO):
    name = "torchao_int8"
    summary = "CUDA: int8 dynamic activations and int8 weights"

    def _config(self):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        return Int8DynamicActivationInt8WeightConfig()


class TorchAOInt8WeightOnly(_TorchAO):
    name = "torchao_int8_weight_only"
    purpose = "memory"
    summary = "CUDA: int8 weights, compute in the model dtype (halves bf16 weight memory)"

    def _config(self):
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig()


class _BitsAndBytes(Scheme):
    purpose = "memory"

    def available(self, hardware) -> str | None:
        return _cuda_reason(hardware, None) or _package_reason("bitsandbytes")

    def _empty(self, bnb, linear: nn.Linear) -> nn.Module:
        raise NotImplementedError

    def convert(self, linear: nn.Linear, *, inplace: bool = False) -> nn.Module:
        import bitsandbytes as bnb

        module = self._empty(bnb, linear)
        module.load_state_dict(linear.state_dict())
        return module.to(linear.weight.device)  # bitsandbytes quantizes when moved to the GPU


class BnbInt8(_BitsAndBytes):
    name = "bnb_int8"
    summary = "CUDA + bitsandbytes: LLM.int8 (int8 weights, outlier columns in fp16)"

    def _empty(self, bnb, linear):
        return bnb.nn.Linear8bitLt(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            has_fp16_weights=False,
            threshold=6.0,
        )


class BnbNF4(_BitsAndBytes):
    name = "bnb_nf4"
    summary = "CUDA + bitsandbytes: 4-bit NormalFloat weights, compute in the model dtype"

    def _empty(self, bnb, linear):
        return bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            compute_dtype=linear.weight.dtype,
            quant_type="nf4",
        )


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (Int8Dynamic(), TorchAOFloat8(), TorchAOInt8(), TorchAOInt8WeightOnly(), BnbInt8(), BnbNF4())
}


def scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise SolError(f"unknown quantization scheme {name!r}; known: {', '.join(SCHEMES)}") from None


def speed_schemes(hardware) -> list[str]:
    """Schemes for latency that run on ``hardware``, preferred first (fp8 before int8 on a GPU)."""
    return [n for n, s in SCHEMES.items() if s.purpose == "speed" and s.available(hardware) is None]


def unavailable(hardware) -> dict[str, str]:
    """Scheme -> why it cannot run on ``hardware`` (the search's evidence of what it left out)."""
    return {n: why for n, s in SCHEMES.items() if (why := s.available(hardware))}


# --- putting modules in place --------------------------------------------------------------------


def _parent(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (root.get_submodule(path) if path else root), leaf


def swap(root: nn.Module, replacements: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Put ``replacements`` at their qualified names; returns the modules they displaced."""
    old = {}
    for name, module in replacements.items():
        parent, leaf = _parent(root, name)
        old[name] = getattr(parent, leaf)
        setattr(parent, leaf, module)
    return old


@contextlib.contextmanager
def swapped(root: nn.Module, replacements: dict[str, nn.Module]) -> Iterator[None]:
    old = swap(root, replacements)
    try:
        yield
    finally:
        swap(root, old)
