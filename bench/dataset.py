"""Deterministic synthetic audit events for prefilling and for read queries.

Bump DATASET_VERSION whenever the shape of generated events changes: it is part
of the cache key of the prefilled databases under bench/data/.
"""

from __future__ import annotations

import random
from urllib.parse import urlencode

import msgspec

DATASET_VERSION = "1"

N_ORGS = 100
N_ACTORS = 10_000
ACTIONS = [
    "invoice.paid", "invoice.created", "invoice.voided", "invoice.refunded",
    "user.login", "user.logout", "user.password_changed", "user.mfa_enabled",
    "document.viewed", "document.shared", "document.deleted", "document.exported",
    "member.invited", "member.removed", "member.role_changed",
    "settings.updated", "api_key.created", "api_key.revoked",
    "subscription.upgraded", "subscription.cancelled",
]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
         "Margaret", "Dennis", "Radia", "Tim", "Hedy", "Linus", "Sophie", "John"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen",
        "Thompson", "Hamilton", "Ritchie", "Perlman", "Berners-Lee", "Lamarr",
        "Torvalds", "Wilson", "Backus"]
TARGET_TYPES = ["invoice", "document", "user", "project", "api_key"]
WORDS = ("quarterly annual report draft final budget roadmap contract renewal "
         "onboarding security review migration billing export archive customer "
         "vendor payroll audit compliance incident postmortem launch pricing").split()

_encode = msgspec.json.encode


def org(i: int) -> str:
    return f"org_{i:03d}"


def actor_id(i: int) -> str:
    return f"user_{i:05d}"


def make_event(rng: random.Random) -> dict:
    a = rng.randrange(N_ACTORS)
    first, last = FIRST[a % len(FIRST)], LAST[(a // len(FIRST)) % len(LAST)]
    ttype = rng.choice(TARGET_TYPES)
    targets = [{"type": ttype, "id": f"{ttype[:3]}_{rng.randrange(100_000):06d}",
                "name": f"{ttype.title()} {rng.randrange(1000)}"}]
    if rng.random() < 0.3:
        targets.append({"type": "project", "id": f"prj_{rng.randrange(500):04d}"})
    return {
        "action": rng.choice(ACTIONS),
        "organization": org(rng.randrange(N_ORGS)),
        "actor": {"type": "user", "id": actor_id(a), "name": f"{first} {last}",
                  "email": f"{first.lower()}.{last.lower()}{a}@example.com"},
        "targets": targets,
        "metadata": {"amount": rng.randrange(1, 100_000),
                     "currency": rng.choice(["EUR", "USD", "GBP"]),
                     "plan": rng.choice(["free", "pro", "team", "enterprise"]),
                     "note": " ".join(rng.choice(WORDS) for _ in range(4))},
        "ip_address": f"203.0.113.{rng.randrange(256)}",
        "user_agent": "Mozilla/5.0 (bench)",
    }


def batch_body(seed: int, size: int = 1000) -> bytes:
    rng = random.Random(seed)
    return _encode({"events": [make_event(rng) for _ in range(size)]})


def list_paths(n: int = 64) -> list[str]:
    """GET /v1/events pages filtered by organization + exact action (spec §7)."""
    rng = random.Random(7)
    return ["/v1/events?" + urlencode({"organization": org(rng.randrange(N_ORGS)),
                                       "action": rng.choice(ACTIONS), "limit": 50})
            for _ in range(n)]


SEARCH_QUERIES = [
    "lovelace",                        # actor name, ~6 % of events
    "quarterly report",                # two metadata words (AND)
    '"security review"',               # phrase
    "action:invoice.*",                # qualifier, prefix
    "actor:user_01234",                # qualifier, rare
    "org:org_042 refunded",            # qualifier + term
    "target:invoice:inv_004242",       # qualifier, very rare
    "hopper -login",                   # negation
]


def search_paths() -> list[str]:
    return ["/v1/events/search?" + urlencode({"q": q, "limit": 50}) for q in SEARCH_QUERIES]
