"""Quantization: per-layer sensitivity scan, mixed precision, sensitive layers kept in full precision.

>>> from sol.skills.quantization import QuantizeLinear
>>> QuantizeLinear(scheme="int8_dynamic", exclude=["re:blocks\\\\.0\\\\..*"]).kind
'quantization.linear'

CPU: ``int8_dynamic`` (torch.ao). GPU: ``torchao_fp8`` (cc >= 8.9), ``torchao_int8``, and for
memory ``torchao_int8_weight_only``, ``bnb_int8``, ``bnb_nf4`` — imported only when used.
"""

from sol.skills.quantization.config import QuantizeLinear, QuantRule
from sol.skills.quantization.schemes import SCHEMES
from sol.skills.quantization.skill import QuantizationSkill, quantize

__all__ = ["SCHEMES", "QuantRule", "QuantizationSkill", "QuantizeLinear", "quantize"]
