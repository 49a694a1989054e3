"""Pure pieces of the webhook feature: event-type patterns, the intake matcher, secret
sealing, outbox ids and the [webhooks] config section."""

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
from recalled_lite.storage.sqlite.webhooks import seal_secret, unseal_secret


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


def test_secret_sealing_round_trip_and_binding():
    server = os.urandom(32)
    secret = generate_secret()
    sealed = seal_secret(server, "sub_1", secret)
    assert secret[6:] not in sealed and sealed.startswith("sealed:v1:")
    assert unseal_secret(server, "sub_1", sealed) == secret
    assert seal_secret(server, "sub_1", secret) != sealed  # fresh nonce each time
    assert unseal_secret(os.urandom(32), "sub_1", sealed) != secret  # needs the server secret
    assert unseal_secret(server, "sub_2", sealed) != secret  # bound to the subscription
    long = "whsec_" + base64.b64encode(os.urandom(64)).decode()
    assert unseal_secret(server, "s", seal_secret(server, "s", long)) == long


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
