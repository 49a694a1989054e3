"""The canonical JSON form that hashes and signatures are computed over.

Definition (docs/integrity.md): the output of Python's
`json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
encoded as UTF-8. msgspec produces the same bytes several times faster for
strings, integers, booleans, null, arrays and objects, but formats some floats
differently (`1e16` vs `1e+16`, `0.00001` vs `1e-05`). So we encode with
msgspec and, when the output holds any non-integer number outside a string,
re-encode with json.dumps. A property test checks the two paths agree.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

_sorted_encoder = msgspec.json.Encoder(order="sorted")
# Unrolled-loop form: much faster than an alternation per character.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# A digit followed by "." or an exponent marker: the start of a float's fraction/exponent.
_FLOAT = re.compile(rb"[0-9][.eE]")


def canonical_without_floats(value: Any) -> bytes:
    """canonical() for values that cannot hold floats (strings, ints, None, lists, dicts of those)."""
    return _sorted_encoder.encode(value)


def may_hold_floats(encoded: bytes) -> bool:
    """False when JSON text `encoded` has no non-integer number outside its strings."""
    return _FLOAT.search(encoded) is not None and _FLOAT.search(_STRING.sub(b'""', encoded)) is not None


def canonical(value: Any) -> bytes:
    out = _sorted_encoder.encode(value)
    if not may_hold_floats(out):
        return out
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
