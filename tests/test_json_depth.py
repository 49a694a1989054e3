"""json_depth_exceeds (the pre-decode nesting check) against a plain reference.

The fast version peels bracket pairs off level by level at C speed; this checks it
answers exactly as the obvious running-maximum scan over the brackets outside
strings does, on random bracket/quote/escape soup and on deep valid JSON.
"""

from __future__ import annotations

import random
import re
from itertools import accumulate

from recalled_lite.api.common import json_depth_exceeds

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_DELTA = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def reference(body: bytes, max_depth: int) -> bool:
    brackets = [b for b in _STRING.sub(b"", body) if b in _DELTA]
    return max(accumulate(_DELTA[b] for b in brackets), default=0) > max_depth


def test_random_soup_agrees_with_reference():
    rnd = random.Random(7)
    alphabet = [b"{", b"}", b"[", b"]", b'"', b"\\", b"a", b"|", b",", b":"]
    for _ in range(50_000):
        body = b"".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 30)))
        depth = rnd.randint(0, 6)
        assert json_depth_exceeds(body, depth) == reference(body, depth), (body, depth)


def test_deep_valid_json_agrees_with_reference():
    for depth in (1, 2, 5, 16, 32):
        for k in range(0, 40):
            for body in (b'{"a":' * k + b"1" + b"}" * k, b"[" * k + b"]" * k,
                         b'[{"x":"]]\\"{"},' * k + b"1" + b"]" * k,
                         b'{"a":[{},[[]],{"b":"[[["}],"c":' * k + b"0" + b"}" * k):
                assert json_depth_exceeds(body, depth) == reference(body, depth), (body, depth)
