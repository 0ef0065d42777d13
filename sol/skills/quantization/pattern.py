r"""Rule patterns matched in linear time: a small regular-expression engine without backtracking.

A plan's quantization rules name modules with ``re:`` patterns, and a plan is user input. Python's
``re`` backtracks: ``re:(.|.|.)*X`` against a 40-character layer name takes longer than the
universe, and a plan must never hang ``sol apply`` or an inference server. The choices were:

- google-re2 (linear time, C++): a compiled dependency for every inference server that applies a
  plan, for patterns that are ~40 characters long and matched against a few hundred names;
- ``re`` with a time limit: a C-level match cannot be interrupted from Python (signals wait for
  it), so the limit would need a subprocess per plan;
- exact names and globs only: every plan written so far uses ``re:`` rules.

So Sol parses the patterns itself (the subset of Python's syntax that needs no backtracking:
literals, ``.``, classes, ``\d \w \s`` and their negations, groups, ``|``, ``* + ?`` and
``{m,n}``, lazy or not, ``^``/``$`` at the ends) into a Thompson NFA and matches it as a lazily
built DFA: time linear in the name's length for a fixed pattern. What it cannot match without
backtracking (back-references, look-around, possessive or atomic groups, inline flags) is refused
when the plan loads, in one line. On that subset its answers equal ``re.fullmatch``'s
(tests/reliability/test_patterns.py checks them against each other on generated patterns).

>>> Pattern(r"blocks\.\d+\.ffn\..*").fullmatch("blocks.12.ffn.net.0.proj")
True
>>> Pattern("(.|.|.)*X").fullmatch("a" * 10_000)
False
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

MAX_PATTERN_CHARS = 500
# States once counted repeats are expanded: "(a{100}){100}" would be 10,000 copies.
MAX_STATES = 4_000
# Parsing and building recurse once per group level.
MAX_GROUP_DEPTH = 40
# Cached DFA transitions per pattern; past it the cache restarts (names are short and few).
MAX_CACHED = 20_000


class PatternError(ValueError):
    """A pattern Sol refuses; the message says why and what to write instead."""


# --- character predicates ------------------------------------------------------------------------


@dataclass(frozen=True)
class CharSet:
    """Characters a step accepts: ranges and class escapes (``d``, ``w``, ``s``, upper-case = not),
    optionally negated; ``dot`` is ``.`` (anything but a newline, as in ``re`` without DOTALL)."""

    ranges: tuple[tuple[str, str], ...] = ()
    classes: tuple[str, ...] = ()
    negated: bool = False
    dot: bool = False

    def __call__(self, c: str) -> bool:
        if self.dot:
            return c != "\n"
        hit = any(lo <= c <= hi for lo, hi in self.ranges) or any(_in_class(k, c) for k in self.classes)
        return hit != self.negated


def _in_class(k: str, c: str) -> bool:
    # The definitions of Python's sre for str patterns (Unicode): \d isdecimal, \w isalnum or "_".
    if k in "dD":
        hit = c.isdecimal()
    elif k in "wW":
        hit = c.isalnum() or c == "_"
    else:
        hit = c.isspace()
    return hit if k.islower() else not hit


# \0 is left out: "\01" is an octal escape in ``re``, refused like the other numeric ones.
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}


# --- parsing: pattern text -> tree ----------------------------------------------------------------
# Tree nodes: ("set", CharSet) | ("cat", [nodes]) | ("alt", [nodes]) | ("rep", node, lo, hi|None)


class _Parser:
    def __init__(self, text: str):
        self.s, self.i, self.depth = text, 0, 0

    def error(self, what: str) -> PatternError:
        return PatternError(
            f"{what} (at character {self.i + 1}); Sol matches rule patterns without backtracking, so it"
            " supports literals, '.', [classes], \\d \\w \\s, groups, '|', '*', '+', '?' and {m,n}"
        )

    def peek(self) -> str | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def parse(self):
        node = self.alt()
        if self.i < len(self.s):
            raise self.error("unbalanced ')'")
        return node

    def alt(self):
        branches = [self.cat()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.cat())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def cat(self):
        items = []
        while self.peek() not in (None, "|", ")"):
            if self.peek() in "^$":
                # Anchors are no-ops at the ends of a full match; anywhere else they need look-around.
                at_start = self.peek() == "^" and self.i == 0
                at_end = self.peek() == "$" and self.i == len(self.s) - 1
                if not (at_start or at_end):
                    raise self.error(f"'{self.peek()}' inside a pattern is not supported")
                self.i += 1
                continue
            items.append(self.quantified(self.atom()))
        return items[0] if len(items) == 1 else ("cat", items)

    def quantified(self, node):
        while True:
            c = self.peek()
            if c in ("*", "+", "?"):
                self.i += 1
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            # As sre: "{}" and an unclosed "{" are literals, "{,}" is "*", "{,n}" is "{0,n}".
            elif c == "{" and (m := re.match(r"\{(\d*)(,?)(\d*)\}", self.s[self.i :])) and (m[1] or m[2]):
                self.i += m.end()
                lo = int(m[1] or 0)
                hi = lo if not m[2] else (int(m[3]) if m[3] else None)
            else:
                return node
            if self.peek() == "?":  # lazy: the same strings match in full
                self.i += 1
            elif self.peek() == "+":
                raise self.error("possessive quantifiers are not supported")
            node = ("rep", node, lo, hi)

    def atom(self):
        c = self.s[self.i]
        if c == "(":
            self.i += 1
            self.depth += 1
            if self.depth > MAX_GROUP_DEPTH:
                raise self.error(f"groups nest more than {MAX_GROUP_DEPTH} deep")
            if self.peek() == "?":
                rest = self.s[self.i :]
                if rest.startswith("?:"):
                    self.i += 2
                elif m := re.match(r"\?P<\w+>", rest):
                    self.i += m.end()
                else:
                    raise self.error("look-around, inline flags and other '(?' groups are not supported")
            node = self.alt()
            if self.peek() != ")":
                raise self.error("missing ')'")
            self.i += 1
            self.depth -= 1
            return node
        if c == "[":
            return ("set", self.char_class())
        if c == ".":
            self.i += 1
            return ("set", CharSet(dot=True))
        if c == "\\":
            return ("set", self.escape(in_class=False))
        self.i += 1
        return ("set", CharSet(ranges=((c, c),)))

    def escape(self, in_class: bool) -> CharSet:
        if self.i + 1 >= len(self.s):
            raise self.error("a pattern cannot end with '\\'")
        c = self.s[self.i + 1]
        self.i += 2
        if c in "dDwWsS":
            return CharSet(classes=(c,))
        if c in _ESCAPES:
            ch = _ESCAPES[c]
        elif c == "b" and in_class:
            ch = "\b"
        elif c.isalnum():  # \b \A \Z, back-references \1, \x.., \u....: refused, not guessed
            self.i -= 2
            raise self.error(f"'\\{c}' is not supported")
        else:
            ch = c  # an escaped punctuation character stands for itself
        return CharSet(ranges=((ch, ch),))

    def char_class(self) -> CharSet:
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges, classes, first = [], [], True
        while True:
            c = self.peek()
            if c is None:
                raise self.error("missing ']'")
            if c == "]" and not first:
                self.i += 1
                return CharSet(tuple(ranges), tuple(classes), negated)
            first = False
            if c == "\\":
                one = self.escape(in_class=True)
                if one.classes:
                    classes.extend(one.classes)
                    continue
                lo = one.ranges[0][0]
            else:
                lo = c
                self.i += 1
            hi = lo
            if self.peek() == "-" and self.i + 1 < len(self.s) and self.s[self.i + 1] != "]":
                self.i += 1
                if self.peek() == "\\":
                    other = self.escape(in_class=True)
                    if other.classes:
                        raise self.error("a range cannot end in a class escape")
                    hi = other.ranges[0][0]
                else:
                    hi = self.s[self.i]
                    self.i += 1
            ranges.append((lo, hi))


# --- NFA (Thompson) -------------------------------------------------------------------------------


class _NFA:
    """States: ``sets[i]`` (a CharSet, then go to ``i + 1``... via ``out``) or epsilon edges."""

    def __init__(self):
        self.sets: list[CharSet | None] = []  # None: an epsilon state
        self.out: list[list[int]] = []

    def state(self, cs: CharSet | None = None) -> int:
        if len(self.sets) >= MAX_STATES:
            raise PatternError(
                f"the pattern is too large once its repeats are expanded (more than {MAX_STATES} states);"
                " use a shorter pattern or '*' / '+' instead of large {m,n} counts"
            )
        self.sets.append(cs)
        self.out.append([])
        return len(self.sets) - 1

    def build(self, node) -> tuple[int, int]:
        """Fragment for ``node``: (entry state, exit epsilon state)."""
        kind = node[0]
        if kind == "set":
            a, b = self.state(node[1]), self.state()
            self.out[a].append(b)
            return a, b
        if kind == "cat":
            a = b = self.state()
            for child in node[1]:
                s, e = self.build(child)
                self.out[b].append(s)
                b = e
            return a, b
        if kind == "alt":
            a, b = self.state(), self.state()
            for child in node[1]:
                s, e = self.build(child)
                self.out[a].append(s)
                self.out[e].append(b)
            return a, b
        _, child, lo, hi = node
        a = b = self.state()
        for _ in range(lo):
            s, e = self.build(child)
            self.out[b].append(s)
            b = e
        if hi is None:  # star: loop back
            s, e = self.build(child)
            end = self.state()
            self.out[b] += [s, end]
            self.out[e] += [s, end]
            return a, end
        end = self.state()
        for _ in range(hi - lo):
            s, e = self.build(child)
            self.out[b] += [s, end]
            b = e
        self.out[b].append(end)
        return a, end


class Pattern:
    """A compiled rule pattern; :meth:`fullmatch` runs in time linear in the name's length.

    >>> Pattern("a(b|c)*d").fullmatch("abcbd"), Pattern("a(b|c)*d").fullmatch("abx")
    (True, False)
    """

    def __init__(self, text: str):
        if len(text) > MAX_PATTERN_CHARS:
            raise PatternError(f"the pattern has {len(text)} characters, more than {MAX_PATTERN_CHARS}")
        try:
            with warnings.catch_warnings():  # "possible nested set" and the like: the parser decides
                warnings.simplefilter("ignore")
                re.compile(text)  # what Python rejects is refused with Python's reason
        except (re.error, OverflowError, RecursionError) as e:
            raise PatternError(f"not a valid regular expression ({e})") from None
        self.text = text
        nfa = _NFA()
        self._start, self._accept = nfa.build(_Parser(text).parse())
        self._sets, self._out = nfa.sets, nfa.out
        self._dfa: dict[tuple[frozenset, str], frozenset] = {}
        self._initial = self._closure({self._start})

    def _closure(self, states) -> frozenset:
        seen, stack = set(states), list(states)
        while stack:
            s = stack.pop()
            if self._sets[s] is None:
                for t in self._out[s]:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
        return frozenset(seen)

    def _step(self, current: frozenset, c: str) -> frozenset:
        key = (current, c)
        nxt = self._dfa.get(key)
        if nxt is None:
            moved = {t for s in current if (cs := self._sets[s]) is not None and cs(c) for t in self._out[s]}
            nxt = self._closure(moved)
            if len(self._dfa) >= MAX_CACHED:
                self._dfa.clear()
            self._dfa[key] = nxt
        return nxt

    def fullmatch(self, name: str) -> bool:
        current = self._initial
        for c in name:
            current = self._step(current, c)
            if not current:
                return False
        return self._accept in current

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"
