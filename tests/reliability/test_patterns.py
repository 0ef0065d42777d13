"""Quantization rule patterns: linear time, the same answers as ``re.fullmatch``, bounded rule lists.

A plan rule ``re:(.|.|.)*X`` used to hang ``sol apply`` (Python's ``re`` backtracks), and a plan of
900,000 rules needed ~26 s per layer. The patterns are now matched by Sol's own engine without
backtracking (sol/skills/quantization/pattern.py says why not google-re2 or a time limit).
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sol.errors import SolError
from sol.plan import Plan
from sol.skills.quantization.config import MAX_PATTERN_RULES, MAX_RULES, QuantizeLinear, QuantRule
from sol.skills.quantization.pattern import Pattern, PatternError

FAST = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# Names as Sol's models spell their linear layers, plus characters that exercise classes.
NAMES = [
    "blocks.0.attn1.to_q",
    "blocks.12.ffn.net.0.proj",
    "blocks.3.attn2.to_out.0",
    "proj_out",
    "a",
    "",
    "ab",
]

_ALPHABET = "ab0._-"
_atom = st.one_of(
    st.sampled_from(["a", "b", "0", "_", "-", r"\.", "."]),
    st.sampled_from(["[ab]", "[^a]", "[a-c0]", "[]a]", "[a-]", r"[\d.]", r"\d", r"\w", r"\W", r"\s", r"\D"]),
)


def _patterns():
    def extend(inner):
        group = st.builds(lambda p, kind: f"{kind}{p})", inner, st.sampled_from(["(", "(?:", "(?P<g>"]))
        alt = st.builds(lambda a, b: f"{a}|{b}", inner, inner)
        return st.one_of(group, alt, st.lists(inner, min_size=2, max_size=4).map("".join))

    quant = st.sampled_from(["", "", "*", "+", "?", "{2}", "{0,2}", "{1,}", "{,2}", "*?", "+?", "??", "{,}"])
    quantified = st.builds(lambda a, q: a + q, _atom, quant)
    return st.recursive(
        quantified, lambda inner: st.builds(lambda p, q: p + q, extend(inner), quant), max_leaves=8
    )


@FAST
@given(pattern=_patterns(), name=st.text(alphabet=_ALPHABET + "\n ", max_size=10))
def test_same_answers_as_re_fullmatch(pattern, name):
    try:
        compiled = re.compile(pattern)
    except re.error:
        assume(False)
    try:
        ours = Pattern(pattern)
    except PatternError:  # refused patterns are a separate test; the generator stays in the subset
        assume(False)
    assert ours.fullmatch(name) == (compiled.fullmatch(name) is not None), (pattern, name)


@settings(FAST, max_examples=80)
@given(pattern=_patterns())
def test_linear_time_on_long_names(pattern):
    try:
        ours = Pattern(pattern)
    except PatternError:
        assume(False)
    t0 = time.monotonic()
    for name in ("a" * 2000, "ab" * 1000 + "X", "blocks.1." * 200):
        ours.fullmatch(name)
    assert time.monotonic() - t0 < 5.0, pattern  # backtracking patterns here take hours with `re`


def test_catastrophic_patterns_answer_at_once():
    t0 = time.monotonic()
    assert not Pattern("(.|.|.)*X").fullmatch("a" * 50_000)
    assert not Pattern("(a*)*b").fullmatch("a" * 50_000)
    assert not Pattern(".*.*.*.*.*.*.*.*.*.*X").fullmatch("a" * 5_000)
    assert Pattern("(.|.|.)*X").fullmatch("a" * 1000 + "X")
    assert time.monotonic() - t0 < 10.0


@pytest.mark.parametrize(
    "pattern, why",
    [
        (r"(a)\1", "not supported"),  # a back-reference needs backtracking
        (r"(?=a)a", "look-around"),
        (r"(?i)a", "inline flags"),
        (r"a*+", "possessive"),
        (r"(?>a)", "'(?' groups"),
        (r"\bword", r"'\b'"),
        (r"a$b", "'$' inside"),
        (r"\x41", r"'\x'"),
        ("(a{100}){100}", "too large"),
        ("(" * 45 + ")" * 45, "nest"),
        ("a" * 600, "characters"),
        ("a[", "not a valid regular expression"),
    ],
)
def test_unsupported_patterns_are_refused_in_one_line(pattern, why):
    with pytest.raises(PatternError) as e:
        Pattern(pattern)
    msg = str(e.value)
    assert "\n" not in msg and (why in msg or "not supported" in msg), msg


def test_a_plan_rule_the_engine_refuses_is_one_line_naming_the_rule():
    with pytest.raises(SolError) as e:
        Plan.from_json(_plan_text([{"match": "re:(?=x)y", "scheme": "int8_dynamic"}]), source="p.json")
    msg = str(e.value)
    assert "\n" not in msg and "techniques.0" in msg and "(?=x)y" in msg and "Value error" not in msg


def test_rule_counts_are_bounded_before_anything_is_compiled():
    t0 = time.monotonic()
    many = [{"match": f"blocks.{i}.x", "scheme": "none"} for i in range(MAX_RULES + 1)]
    with pytest.raises(ValueError, match=f"more than {MAX_RULES}"):
        QuantizeLinear(rules=many)
    patterns = [{"match": f"re:blocks\\.{i}\\..*", "scheme": "none"} for i in range(MAX_PATTERN_RULES + 1)]
    with pytest.raises(ValueError, match=f"more than {MAX_PATTERN_RULES}"):
        QuantizeLinear(rules=patterns)
    assert time.monotonic() - t0 < 5.0


def test_first_matching_rule_wins_as_before():
    """The indexed matcher (exact names by dict, patterns in order) agrees with a plain scan."""
    rules = [
        {"match": "re:blocks\\.1\\..*", "scheme": "none"},
        {"match": "blocks.1.ffn.net.0.proj", "scheme": "int8_dynamic"},  # after a pattern that covers it
        {"match": "blocks.2.attn1.to_q", "scheme": "none"},
        {"match": "re:blocks\\.2\\..*", "scheme": "int8_dynamic"},
        {"match": "re:.*", "scheme": "int8_dynamic"},
    ]
    cfg = QuantizeLinear(rules=rules)
    names = ["blocks.1.ffn.net.0.proj", "blocks.2.attn1.to_q", "blocks.2.ffn.net.2", "proj_out", "blocks.1.x"]
    plain = {}
    for n in names:
        r = next((QuantRule(**r) for r in rules if _plain_match(r["match"], n)), None)
        if r is not None and r.scheme != "none":
            plain[n] = r.scheme
    assert (
        cfg.assignment(names) == plain == {"blocks.2.ffn.net.2": "int8_dynamic", "proj_out": "int8_dynamic"}
    )


def _plain_match(match: str, name: str) -> bool:
    return re.fullmatch(match[3:], name) is not None if match.startswith("re:") else match == name


def _plan_text(rules) -> str:
    import json

    return json.dumps({
        "schema_version": 1,
        "model": {"name": "m", "cls": "C", "config_hash": "a", "weights_hash": "b"},
        "hardware": {"kind": "cpu", "name": "cpu"},
        "techniques": [{"kind": "quantization.linear", "version": 1, "rules": rules}],
    })  # fmt: skip
