"""Pure pieces of the webhook feature: event-type patterns, the intake matcher, secret
sealing, re-test and quarantine rules, outbox ids and the [webhooks] config section."""

from __future__ import annotations

import base64
import random
import os

import pytest

from recalled_lite.config import load_config
from recalled_lite.delivery.signing import generate_secret
from recalled_lite.delivery.subscriptions import SubscriptionIndex, SubscriptionInfo, TypeFilter, validate_pattern
from recalled_lite.ids import UlidGenerator, encode_ulid, ulid_ceiling, ulid_floor
from recalled_lite.errors import ConfigError
from recalled_lite.delivery import healing, quarantine
from recalled_lite.delivery.faults import Faults
from recalled_lite.delivery.sealing import SealError, Sealer
from recalled_lite.errors import StorageError, StorageUnavailable


@pytest.mark.parametrize("pattern", ["invoice.paid", "invoice.*", "*", "a", "a.b.c.*", "user_signed-in"])
def test_valid_patterns(pattern):
    assert validate_pattern(pattern) is None


@pytest.mark.parametrize("pattern", ["", ".*", "inv*", "*.paid", "a.*.b", "a b", "a.**", "x" * 256, "invoice*"])
def test_invalid_patterns(pattern):
    assert validate_pattern(pattern) is not None


def test_type_filter():
    f = TypeFilter(["invoice.*", "user.created"])
    assert f.matches("invoice.paid") and f.matches("invoice.line.added") and f.matches("user.created")
    assert not f.matches("invoice") and not f.matches("invoices.paid") and not f.matches("user.created.x")
    assert TypeFilter([]).matches("anything") and TypeFilter(["*"]).matches("anything")


def sub(sid, org=None, types=(), state="valid", disabled=False):
    return SubscriptionInfo(sid, "http://x/", "", tuple(types), org, disabled, state, None, 0, "whsec_x",
                            None, None, None, None, None, 0, 0)


def test_index_matches_receiving_subscriptions_only():
    index = SubscriptionIndex([
        sub("a"), sub("b", org="o1"), sub("c", types=["inv.*"]), sub("d", state="invalid"),
        sub("e", state="deactivated", disabled=True), sub("f", state="new", org="o2", types=["inv.paid"]),
    ])
    assert sorted(index.match("o1", "inv.paid")) == ["a", "b", "c"]
    assert sorted(index.match("o2", "inv.paid")) == ["a", "c", "f"]
    assert sorted(index.match(None, "other")) == ["a"]
    assert sorted(index.match("o2", "inv.paid")) == ["a", "c", "f"]  # memoised path
    assert not SubscriptionIndex([sub("d", state="invalid")]).active


def test_signing_secrets_during_overlap():
    s = SubscriptionInfo("s", "u", "", (), None, False, "valid", None, 0, "whsec_new", "whsec_old", 1000,
                         None, None, None, 0, 0)
    assert s.signing_secrets(999) == ["whsec_new", "whsec_old"]
    assert s.signing_secrets(1000) == ["whsec_new"]


def legacy_seal_v1(server_secret: bytes, sub_id: str, secret: str) -> str:
    """The first release's sealing, verbatim (HMAC-SHA256 keystream XOR, no tag)."""
    import hashlib
    import hmac

    key = base64.b64decode(secret[6:])
    nonce = os.urandom(16)
    out = bytearray()
    counter = 0
    while len(out) < len(key):
        out += hmac.new(server_secret, b"recalled-lite webhook secret\x00" + sub_id.encode() + b"\x00" + nonce
                        + counter.to_bytes(4, "big"), hashlib.sha256).digest()
        counter += 1
    return "sealed:v1:" + base64.b64encode(nonce + bytes(a ^ b for a, b in zip(key, out))).decode("ascii")


def test_secret_sealing_round_trip_and_binding():
    server = os.urandom(32)
    sealer = Sealer(server)
    secret = generate_secret()
    sealed = sealer.seal("sub_1", "secret", secret)
    assert secret[6:] not in sealed and sealed.startswith("sealed:v2:")
    assert sealer.unseal("sub_1", "secret", sealed) == secret
    assert sealer.seal("sub_1", "secret", secret) != sealed  # fresh nonce each time
    with pytest.raises(SealError, match="integrity check"):
        Sealer(os.urandom(32)).unseal("sub_1", "secret", sealed)  # needs the server secret
    with pytest.raises(SealError, match="integrity check"):
        sealer.unseal("sub_2", "secret", sealed)  # bound to the subscription
    with pytest.raises(SealError, match="integrity check"):
        sealer.unseal("sub_1", "previous_secret", sealed)  # and to the column
    long = "whsec_" + base64.b64encode(os.urandom(64)).decode()
    assert sealer.unseal("s", "secret", sealer.seal("s", "secret", long)) == long


def test_tampered_unknown_and_cleartext_secrets_are_refused_with_a_reason():
    sealer = Sealer(os.urandom(32))
    sealed = sealer.seal("sub_1", "secret", generate_secret())
    raw = bytearray(base64.b64decode(sealed[len("sealed:v2:"):]))
    raw[20] ^= 1
    tampered = "sealed:v2:" + base64.b64encode(bytes(raw)).decode()
    cases = {
        tampered: "integrity check",
        "sealed:v2:!!!notbase64": "damaged",
        "sealed:v2:" + base64.b64encode(b"short").decode(): "too short",
        "sealed:v9:AAAA": "unknown format",
        generate_secret(): "not sealed",
        legacy_seal_v1(b"x" * 32, "sub_1", generate_secret()): "sealed:v1",
    }
    for stored, reason in cases.items():
        with pytest.raises(SealError, match=reason):
            sealer.unseal("sub_1", "secret", stored)


def test_v1_and_cleartext_secrets_upgrade_to_v2():
    server = os.urandom(32)
    sealer = Sealer(server)
    secret = generate_secret()
    v1 = legacy_seal_v1(server, "sub_1", secret)
    upgraded = sealer.upgrade("sub_1", "secret", v1)
    assert upgraded.startswith("sealed:v2:") and sealer.unseal("sub_1", "secret", upgraded) == secret
    clear = sealer.upgrade("sub_1", "previous_secret", secret)
    assert sealer.unseal("sub_1", "previous_secret", clear) == secret
    assert sealer.upgrade("sub_1", "secret", upgraded) is None  # already v2
    for bad in ("sealed:v1:***", "sealed:v7:abc", "not a secret at all"):
        with pytest.raises(SealError):
            sealer.upgrade("sub_1", "secret", bad)


def test_retest_rules():
    kw = {"enabled": True, "initial_ms": 60_000, "max_ms": 3_600_000}
    assert healing.first_retest_at(healing.InvalidCause.TEST_FAILED, 1000, **kw) == 61_000
    assert healing.first_retest_at(healing.InvalidCause.NO_SUCCESS, 1000, **kw) == 61_000
    assert healing.first_retest_at(healing.InvalidCause.GONE, 1000, **kw) is None  # it asked us to stop
    assert healing.first_retest_at(healing.InvalidCause.TEST_FAILED, 1000, **{**kw, "enabled": False}) is None
    delays = [healing.next_retest_at(n, 0, initial_ms=60_000, max_ms=3_600_000) for n in range(1, 10)]
    assert delays == [120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000, 3_600_000, 3_600_000, 3_600_000]
    assert healing.next_retest_at(10**6, 0, initial_ms=60_000, max_ms=3_600_000) == 3_600_000  # no overflow
    assert healing.replay_begin(10_000_000, 1_000) == 10_000_000 - healing.REPLAY_MARGIN_MS
    assert healing.replay_begin(10_000_000, 9_990_000) == 9_990_000  # never before it existed


def test_quarantine_rules():
    policy = quarantine.FailurePolicy(initial_seconds=0.5, max_seconds=4, quarantine_after=3)
    assert [quarantine.backoff_seconds(n, policy) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert not quarantine.should_quarantine(2, policy) and quarantine.should_quarantine(3, policy)
    assert quarantine.is_transient(StorageUnavailable("the disk is full"))
    assert not quarantine.is_transient(StorageError("database error")) and not quarantine.is_transient(ValueError())
    assert quarantine.halves([1, 2, 3]) == ([1], [2, 3])


def test_faults_are_inert_unless_asked_for():
    assert not Faults("") and not Faults.from_env()
    faults = Faults("lose_delivery:2, poison_job:1")
    assert [faults.take("lose_delivery") for _ in range(3)] == [True, True, False]
    assert faults.mark("poison_job", "job_a") and faults.mark("poison_job", "job_a")
    assert not faults.mark("poison_job", "job_b")
    assert not faults.take("unknown")


def _reference_ulid(value: int) -> str:
    # The ULID spec's definition, 5 bits at a time: what the base32 trick must equal.
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(alphabet[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def test_fast_ulids():
    for value in [0, 1, (1 << 128) - 1, 123456789 << 80, *(random.getrandbits(128) for _ in range(1000))]:
        assert encode_ulid(value) == _reference_ulid(value)
    gen = UlidGenerator()
    ids = gen.batch(1000) + gen.batch(1000)
    assert ids == sorted(ids) and len(set(ids)) == 2000 and all(len(i) == 26 for i in ids)
    assert ulid_floor(5) < encode_ulid((5 << 80) + 1) < ulid_ceiling(5) < ulid_floor(6)


def test_webhooks_config(tmp_path):
    config = load_config(None, environ={})
    w = config.webhooks
    assert (w.allow_private_destinations, w.timeout_seconds, w.jitter, w.max_in_flight) == (False, 15.0, 0.2, 64)
    assert w.retry_schedule == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert (w.max_in_flight_per_subscription, w.disable_after_seconds) == (4, 432000)
    assert (w.secret_rotation_overlap_seconds, w.max_response_body_bytes, w.max_response_read_bytes) == (
        86400, 20480, 65536)
    path = tmp_path / "c.toml"
    path.write_text("[webhooks]\nretry_schedule = [1, 2.5]\njitter = 0\n")
    assert load_config(str(path), environ={}).webhooks.retry_schedule == [1, 2.5]
    for bad in ["jitter = 1.0", "retry_schedule = [-1]", "timeout_seconds = 0", "nope = 1"]:
        path.write_text(f"[webhooks]\n{bad}\n")
        with pytest.raises(ConfigError, match="webhooks"):
            load_config(str(path), environ={})


def test_example_config_documents_every_webhooks_key():
    import tomllib
    from pathlib import Path

    example = tomllib.loads((Path(__file__).resolve().parents[1] / "config.example.toml").read_text())
    defaults = load_config(None, environ={}).webhooks
    assert set(example["webhooks"]) == set(defaults.__struct_fields__)
    for key, value in example["webhooks"].items():
        assert value == getattr(defaults, key), key
