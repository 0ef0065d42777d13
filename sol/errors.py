"""User-facing errors: one line that names the problem and the fix.

The CLI prints ``SolError`` messages without a traceback; everything else is a bug.

User files (plans, workloads, run records) are read with :func:`parse_json`, which bounds their
size and nesting before the parser sees them: Python's ``json`` recurses once per nesting level,
so a file nested 200,000 deep ended in a ``RecursionError`` traceback, and a 39 MB plan took
minutes to validate.
"""

from __future__ import annotations

import json
from typing import Any

# Generous for every file Sol writes (a plan of a 48-block model with one rule per linear layer is
# ~150 KB, nested 6 deep) and small enough that reading the largest allowed file takes well under
# a second.
MAX_JSON_BYTES = 8 * 1024 * 1024
MAX_JSON_DEPTH = 64


class SolError(Exception):
    """A problem the user can fix; ``str(err)`` is one line that says how."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


class ConflictError(SolError):
    """Two techniques write the same exclusive seam, or one needs a capability the model lacks."""


def json_error_text(e: json.JSONDecodeError) -> str:
    """``Expecting ',' delimiter at line 3 column 5``: the decoder's message, placed once.

    >>> json_error_text(json.JSONDecodeError("Unterminated string starting at", '"ab', 0))
    'Unterminated string starting at line 1 column 1'
    """
    # Some decoder messages end with "at" already ("Unterminated string starting at").
    lead = e.msg if e.msg.endswith(" at") else f"{e.msg} at"
    return f"{lead} line {e.lineno} column {e.colno}"


def json_depth(data: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """The nesting depth of parsed JSON ``data`` (iterative; stops counting past ``limit + 1``).

    >>> json_depth({"a": [1, {"b": "[[["}]})
    3
    """
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_json(text: str | bytes, source: str, fix: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a user's JSON file with bounded size and nesting; every problem is one :class:`SolError`
    line naming ``source`` and ending with ``fix``.

    >>> parse_json('{"a": 1}', "plan.json", "re-export the plan")
    {'a': 1}
    >>> try:
    ...     parse_json("[" * 100 + "]" * 100, "plan.json", "re-export the plan")
    ... except SolError as e:
    ...     print(e)
    plan.json nests arrays and objects more than 64 deep; re-export the plan
    """
    if len(text) > max_bytes:
        raise SolError(
            f"{source} is {len(text) / 2**20:.1f} MiB, more than the {max_bytes / 2**20:.0f} MiB a Sol file"
            f" may hold; {fix}"
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise SolError(f"{source} is not UTF-8 text (a binary or pickled file?); {fix}") from None
    deep = f"{source} nests arrays and objects more than {MAX_JSON_DEPTH} deep; {fix}"
    try:
        # The C decoder counts its recursion and raises RecursionError (never crashes) on deep input.
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise SolError(f"{source} is not valid JSON ({json_error_text(e)}); {fix}") from None
    except _NotJsonNumber as e:
        raise SolError(f"{source} holds {e.args[0]}, which is not a JSON number; {fix}") from None
    except RecursionError:
        raise SolError(deep) from None
    # Bounded here too: pydantic and every reader after it recurse over the data.
    if json_depth(data) > MAX_JSON_DEPTH:
        raise SolError(deep)
    return data


class _NotJsonNumber(Exception):
    pass


def _no_constant(name: str):
    # Python's json reads NaN and Infinity, which JSON does not allow; a NaN guidance scale or PSNR
    # floor would slip through every range check (nan < 0 and nan > 0 are both False).
    raise _NotJsonNumber(name)
