"""Retention rules, holds and the proof of purge, without a server (docs/retention.md)."""

from __future__ import annotations

import pytest

from recalled_lite.config import ConfigError, load_config
from recalled_lite.errors import ValidationError
from recalled_lite.integrity.retention import (
    PurgedRanges, RetentionCheckpoint, check_checkpoint, checkpoint_document, sign_checkpoint, tombstones_digest,
)
from recalled_lite.retention import DEFAULT_RULE, Hold, Policy, Rule, check_days, hold_matches, normalize_prefix


def rule(rid: str, org: str | None, prefix: str | None, days: int) -> Rule:
    return Rule(rid, org, prefix, days, 0, 0)


def test_the_most_specific_rule_wins():
    policy = Policy([
        rule("org_prefix_short", "acme", "billing.", 2000),
        rule("org_prefix_long", "acme", "billing.card.", 3000),
        rule("org", "acme", None, 365),
        rule("prefix", None, "billing.", 90),
        rule("prefix_long", None, "billing.card.", 60),
    ], default_days=30)
    assert policy.effective("acme", "billing.card.charged")[:2] == ("org_prefix_long", 3000)
    assert policy.effective("acme", "billing.refund")[:2] == ("org_prefix_short", 2000)
    assert policy.effective("acme", "doc.read")[:2] == ("org", 365)
    assert policy.effective("other", "billing.card.x")[:2] == ("prefix_long", 60)
    assert policy.effective("other", "billing.x")[:2] == ("prefix", 90)
    assert policy.effective(None, "billing.x")[:2] == ("prefix", 90)
    assert policy.effective("other", "doc.read")[:2] == (DEFAULT_RULE, 30)
    assert policy.shortest_days() == 30


def test_a_rule_for_every_scope_replaces_the_default_and_zero_keeps_for_ever():
    policy = Policy([rule("all", None, None, 400), rule("keep", "acme", None, 0)], default_days=30)
    assert policy.effective("x", "a")[:2] == ("all", 400)
    assert policy.effective("acme", "a")[:2] == ("keep", 0)
    assert Policy([], 0).shortest_days() == 0


def test_prefixes_and_days_are_validated():
    assert normalize_prefix("billing.*") == normalize_prefix("billing.") == "billing."
    assert normalize_prefix("*") is None and normalize_prefix(None) is None
    with pytest.raises(ValidationError):
        normalize_prefix("a*b")
    check_days(30, 30, 0)
    check_days(0, 30, 0)  # for ever is never under the floor
    for days, floor, ceiling in ((29, 30, 0), (-1, 0, 0), (400, 0, 365), (0, 0, 365)):
        with pytest.raises(ValidationError):
            check_days(days, floor, ceiling)


def test_holds_match_organization_actor_and_action():
    hold = Hold("h", "acme", "alice", "invoice.*", "case", 0, None)
    assert hold_matches(hold, "acme", "alice", "invoice.paid")
    assert not hold_matches(hold, "acme", "bob", "invoice.paid")
    assert not hold_matches(hold, "other", "alice", "invoice.paid")
    assert not hold_matches(hold, "acme", "alice", "doc.read")
    exact = Hold("h", "acme", None, "doc.read", "case", 0, None)
    assert hold_matches(exact, "acme", "anyone", "doc.read") and not hold_matches(exact, "acme", "x", "doc.reads")
    released = Hold("h", "acme", None, None, "case", 0, 5)
    assert not hold_matches(released, "acme", "x", "a")


def test_retention_config_bounds():
    assert load_config(environ={}).retention.default_days == 0
    with pytest.raises(ConfigError):
        from recalled_lite.config import _decode
        _decode({"retention": {"min_days": 400, "max_days": 300}}, "test")
    with pytest.raises(ConfigError):
        from recalled_lite.config import _decode
        _decode({"retention": {"default_days": 10, "min_days": 30}}, "test")


def _checkpoint(secret: bytes, stones: list[tuple[int, str]], prev: str | None = None) -> RetentionCheckpoint:
    digest = tombstones_digest(stones)
    doc = checkpoint_document("proj_x", 1, "rjob_x", stones[0][0], stones[-1][0], len(stones), stones[-1][1],
                              digest, "[]", "test", 123)
    h, sig = sign_checkpoint(prev, doc, secret)
    return RetentionCheckpoint(1, "rjob_x", stones[0][0], stones[-1][0], len(stones), stones[-1][1], digest, "[]",
                               "test", 123, prev, h, sig)


def test_a_retention_checkpoint_binds_its_tombstones_and_its_signature():
    stones = [(3, "sha256:aa"), (5, "sha256:bb"), (9, "sha256:cc")]
    cp = _checkpoint(b"secret", stones)
    assert check_checkpoint("proj_x", cp, stones, b"secret", None) is None
    assert check_checkpoint("proj_x", cp, stones, None, None) is None  # hashes only
    assert "signature" in check_checkpoint("proj_x", cp, stones, b"other secret", None)
    assert "digest" in check_checkpoint("proj_x", cp, [(3, "sha256:aa"), (5, "sha256:XX"), (9, "sha256:cc")],
                                        b"secret", None)
    assert "tombstones" in check_checkpoint("proj_x", cp, stones[:2], b"secret", None)
    assert "prevHash" in check_checkpoint("proj_x", cp, stones, b"secret", "sha256:previous")
    forged = cp._replace(reason="edited")
    assert "hash mismatch" in check_checkpoint("proj_x", forged, stones, b"secret", None)


def test_purged_ranges_merge_neighbours_and_cap_the_list():
    ranges = PurgedRanges(limit=2)
    for seq in (1, 2, 3, 7, 9, 10):
        ranges.add(seq)
    assert ranges.report() == {"count": 6, "ranges": [[1, 3], [7, 7]], "rangesTruncated": True}
