"""The quantization config: an ordered list of (module pattern -> scheme) rules, data only.

Like torchao's ``FqnToConfig``, a rule names modules by exact qualified name or by a
``re:`` regular expression; unlike it, Sol's rules are ordered and the first match wins,
so a plan reads top to bottom ("keep these in full precision, quantize the rest").

Rules come from plan files, so matching them is bounded: at most ``MAX_RULES`` rules, of which at
most ``MAX_PATTERN_RULES`` are patterns, and patterns match in linear time (``pattern.py`` says
why Sol parses them itself instead of calling ``re``, which backtracks).

>>> cfg = QuantizeLinear(scheme="int8_dynamic", exclude=["blocks.0.ffn.net.2"])
>>> [(r.match, r.scheme) for r in cfg.rules]
[('blocks.0.ffn.net.2', 'none'), ('re:.*', 'int8_dynamic')]
>>> cfg.assignment(["blocks.0.ffn.net.2", "blocks.0.attn1.to_q"])
{'blocks.0.attn1.to_q': 'int8_dynamic'}
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sol.errors import SolError
from sol.skills.base import TechniqueConfig
from sol.skills.quantization.pattern import Pattern, PatternError

# Every scheme a rule may name ("none" keeps the layer in its original precision). What each
# one does and where it runs lives in schemes.py; the names are part of the plan format.
SchemeName = Literal[
    "none",
    "int8_dynamic",  # CPU (x86): torch.ao dynamic int8, per-channel weights
    "torchao_fp8",  # CUDA cc >= 8.9: float8 e4m3 dynamic activations + weights, per row
    "torchao_int8",  # CUDA: int8 dynamic activations + int8 weights
    "torchao_int8_weight_only",  # CUDA: int8 weights, activations in the model dtype (memory)
    "bnb_int8",  # CUDA + bitsandbytes: LLM.int8 (memory)
    "bnb_nf4",  # CUDA + bitsandbytes: 4-bit NormalFloat weights (memory)
]
REGEX_PREFIX = "re:"
KIND = "quantization.linear"
# A model has at most a few thousand linear layers (one exact rule each in a per-layer mix); Sol's
# search writes a pattern per block group at most. Bounds keep a hostile plan from hanging a
# server: names x patterns x name length steps at worst (~1 s for 2,000 layers).
MAX_RULES = 10_000
MAX_PATTERN_RULES = 256


@lru_cache(maxsize=1024)
def _pattern(text: str) -> Pattern:
    return Pattern(text)


class QuantRule(BaseModel):
    """``match``: an exact qualified module name, or ``re:<regex>`` (full match); ``scheme``: what to do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match: str = Field(min_length=1)
    scheme: SchemeName

    @field_validator("match")
    @classmethod
    def _compiles(cls, v: str) -> str:
        if v.startswith(REGEX_PREFIX):
            try:
                _pattern(v[len(REGEX_PREFIX) :])
            except PatternError as e:
                raise ValueError(f"pattern {v!r}: {e}") from None
        return v

    @property
    def is_regex(self) -> bool:
        return self.match.startswith(REGEX_PREFIX)

    def matches(self, name: str) -> bool:
        """Whether ``name`` is this rule's module (a pattern matches the whole name, as ``re.fullmatch``)."""
        if self.is_regex:
            return _pattern(self.match[len(REGEX_PREFIX) :]).fullmatch(name)
        return name == self.match


class QuantizeLinear(TechniqueConfig):
    """Quantize the transformer blocks' linear layers, one scheme per rule; first matching rule wins.

    Two spellings, one stored form (``rules``)::

        QuantizeLinear(scheme="int8_dynamic")                                  # every linear
        QuantizeLinear(scheme="int8_dynamic", include=["re:blocks\\.\\d+\\.ffn\\..*"],
                       exclude=["blocks.0.ffn.net.2"])
        QuantizeLinear(rules=[{"match": "re:.*attn2.*", "scheme": "none"},
                              {"match": "re:.*", "scheme": "int8_dynamic"}])

    Linear layers no rule matches, and those matched by a ``none`` rule, stay as they are.
    """

    kind: Literal["quantization.linear"] = KIND
    version: int = 1
    rules: tuple[QuantRule, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """``scheme`` / ``include`` / ``exclude`` -> rules: excludes first (kept), then includes."""
        if not isinstance(data, dict) or not ({"scheme", "include", "exclude"} & data.keys()):
            return data
        data = dict(data)
        if "rules" in data:
            raise ValueError("give either rules, or scheme/include/exclude, not both")
        scheme = data.pop("scheme", None)
        if scheme is None:
            raise ValueError("include/exclude need a scheme")
        include = data.pop("include", None) or [f"{REGEX_PREFIX}.*"]
        exclude = data.pop("exclude", None) or []
        for what, v in (("include", include), ("exclude", exclude)):
            if isinstance(v, str):
                raise ValueError(f"{what} must be a list of names or 're:' patterns, not one string")
        data["rules"] = [{"match": m, "scheme": "none"} for m in exclude] + [
            {"match": m, "scheme": scheme} for m in include
        ]
        return data

    @field_validator("rules", mode="before")
    @classmethod
    def _bounded(cls, v: Any) -> Any:
        """Count before validating each rule: a plan of 900,000 rules is refused, not compiled."""
        if isinstance(v, list | tuple):
            if len(v) > MAX_RULES:
                raise ValueError(
                    f"{len(v)} rules, more than {MAX_RULES}; name layers by pattern instead of one by one"
                )
            patterns = sum(
                1
                for r in v
                if (
                    r.is_regex
                    if isinstance(r, QuantRule)
                    else isinstance(r, dict) and str(r.get("match", "")).startswith(REGEX_PREFIX)
                )
            )
            if patterns > MAX_PATTERN_RULES:
                raise ValueError(
                    f"{patterns} 're:' rules, more than {MAX_PATTERN_RULES}; merge them into fewer patterns"
                    " or name the layers exactly"
                )
        return v

    # --- reading the rules -------------------------------------------------------------------

    def assignment(self, names: Iterable[str]) -> dict[str, str]:
        """Module name -> scheme for every name that ends up quantized (first matching rule wins)."""
        # Exact rules by name (the first of each wins); patterns only where they come before it.
        exact: dict[str, int] = {}
        for i, r in enumerate(self.rules):
            if not r.is_regex:
                exact.setdefault(r.match, i)
        patterns = [(i, r) for i, r in enumerate(self.rules) if r.is_regex]
        out = {}
        for name in names:
            first = exact.get(name, len(self.rules))
            hit = next((i for i, r in patterns if i < first and r.matches(name)), first)
            if hit < len(self.rules) and self.rules[hit].scheme != "none":
                out[name] = self.rules[hit].scheme
        return out

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        """:meth:`assignment`, refusing rules that name a layer the model lacks or quantize nothing."""
        names = list(names)
        known = set(names)
        for r in self.rules:
            if not r.is_regex and r.match not in known:
                near = ", ".join(sorted(known)[:3])
                raise SolError(
                    f"{self.kind}: rule {r.match!r} names no linear layer of this model (e.g. {near});"
                    " fix the rule or use a 're:' pattern"
                )
        out = self.assignment(names)
        if not out:
            raise SolError(f"{self.kind}: no rule quantizes any of the model's {len(names)} linear layers")
        return out

    @property
    def schemes(self) -> frozenset[str]:
        """Schemes this config may use (``none`` excluded)."""
        return frozenset(r.scheme for r in self.rules if r.scheme != "none")

    def label(self) -> str:
        """Short and unique: the rules, shortened with a hash when there are many."""
        parts = [f"{r.match}->{r.scheme}" for r in self.rules]
        text = "; ".join(parts)
        if len(text) > 90:
            digest = hashlib.sha256(text.encode()).hexdigest()[:8]
            kept = [p for p in parts if p.endswith("->none")]
            quant = sorted(self.schemes)
            text = f"{'+'.join(quant)}, {len(kept)} kept rules, {len(parts)} rules #{digest}"
        return f"{self.kind}({text})"


def prefix_pattern(prefix: str) -> str:
    r"""A ``re:`` rule matching every module under ``prefix`` (e.g. ``blocks.0.ffn`` -> ``re:blocks\.0\.ffn\..*``)."""
    return f"{REGEX_PREFIX}{re.escape(prefix)}\\..*"
