"""Standard Webhooks signing: round trips through independent verifiers (spec §5.2)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import standardwebhooks.webhooks as stdwh
import svix.webhooks as svixwh

from recalled_lite.delivery import signing

BODY = json.dumps(
    {"id": "whd_01", "type": "event.created", "createdAt": "2024-01-01T00:00:00Z",
     "projectId": "p", "event": {"action": "user.login", "note": "caf\u00e9 \u2713"}},
    ensure_ascii=False,
).encode()


def _reference_verify(secret: str, body: bytes, hdrs: dict[str, str]) -> bool:
    """Spec-text verifier written from the Standard Webhooks spec, independent of our module.

    (svix 2.x delegates to the standardwebhooks package, so this is the truly separate check.)
    """
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{hdrs['webhook-id']}.{hdrs['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(sig, expected)
        for version, _, sig in (item.partition(",") for item in hdrs["webhook-signature"].split(" "))
    )


def _verifiers(secret: str):
    return (
        ("standardwebhooks", lambda body, h: stdwh.Webhook(secret).verify(body, h)),
        ("svix", lambda body, h: svixwh.Webhook(secret).verify(body, h)),
        ("svix-headers", lambda body, h: svixwh.Webhook(secret).verify(body, {
            "svix-id": h["webhook-id"], "svix-timestamp": h["webhook-timestamp"],
            "svix-signature": h["webhook-signature"]})),
    )


def test_generated_secret_shape():
    secret = signing.generate_secret()
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_"):], validate=True)
    assert len(key) == 24
    assert signing.secret_key_bytes(secret) == key
    assert signing.generate_secret() != secret


@pytest.mark.parametrize("bad", ["whsec_", "whsec_not base64!", "whsec_abc", "", "whsec_====", 42])
def test_malformed_secret_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="webhook secret"):
        signing.secret_key_bytes(bad)


def test_secret_prefix_is_optional():
    secret = signing.generate_secret()
    assert signing.secret_key_bytes(secret.removeprefix("whsec_")) == signing.secret_key_bytes(secret)


def test_round_trip_with_three_verifiers():
    secret = signing.generate_secret()
    ts = int(time.time())
    hdrs = signing.headers("whd_01", ts, BODY, [secret])
    assert hdrs["webhook-id"] == "whd_01"
    assert hdrs["webhook-timestamp"] == str(ts)
    assert hdrs["content-type"] == "application/json"
    assert hdrs["webhook-signature"].startswith("v1,")
    assert " " not in hdrs["webhook-signature"]

    assert stdwh.Webhook(secret).verify(BODY, hdrs) == json.loads(BODY)
    for _name, verify in _verifiers(secret)[1:]:
        verify(BODY, hdrs)  # raises on failure
    assert _reference_verify(secret, BODY, hdrs)


def test_known_vector_matches_spec_formula():
    # Fixed inputs -> fixed output, computed from the formula, not from our module.
    secret = "whsec_" + base64.b64encode(bytes(range(24))).decode()
    expected = base64.b64encode(
        hmac.new(bytes(range(24)), b"msg_1.1700000000.{}", hashlib.sha256).digest()
    ).decode()
    assert signing.sign("msg_1", 1700000000, b"{}", [secret]) == f"v1,{expected}"


def test_rotation_overlap_each_single_secret_verifies():
    old, new = signing.generate_secret(), signing.generate_secret()
    ts = int(time.time())
    hdrs = signing.headers("whd_rot", ts, BODY, [new, old])
    sigs = hdrs["webhook-signature"].split(" ")
    assert len(sigs) == 2 and all(s.startswith("v1,") for s in sigs)
    assert sigs[0] == signing.sign("whd_rot", ts, BODY, [new])
    assert sigs[1] == signing.sign("whd_rot", ts, BODY, [old])
    for secret in (old, new):
        for _name, verify in _verifiers(secret):
            verify(BODY, hdrs)
        assert _reference_verify(secret, BODY, hdrs)
    # A third, unrelated secret verifies neither signature.
    stranger = signing.generate_secret()
    with pytest.raises(stdwh.WebhookVerificationError):
        stdwh.Webhook(stranger).verify(BODY, hdrs)
    assert not _reference_verify(stranger, BODY, hdrs)


@pytest.mark.parametrize("tamper", ["body", "timestamp", "id", "signature"])
def test_tampering_fails_every_verifier(tamper):
    secret = signing.generate_secret()
    ts = int(time.time())
    hdrs = signing.headers("whd_01", ts, BODY, [secret])
    body = BODY
    if tamper == "body":
        body = BODY.replace(b"user.login", b"user.logout")
    elif tamper == "timestamp":
        hdrs["webhook-timestamp"] = str(ts - 1)
    elif tamper == "id":
        hdrs["webhook-id"] = "whd_02"
    else:
        raw = bytearray(base64.b64decode(hdrs["webhook-signature"][3:]))
        raw[0] ^= 1
        hdrs["webhook-signature"] = "v1," + base64.b64encode(bytes(raw)).decode()
    for name, verify in _verifiers(secret):
        with pytest.raises(stdwh.WebhookVerificationError):
            verify(body, hdrs)
    assert not _reference_verify(secret, body, hdrs)


def test_raw_key_bytes_accepted_and_equivalent():
    secret = signing.generate_secret()
    key = signing.secret_key_bytes(secret)
    assert signing.sign("m", 1, b"x", [key]) == signing.sign("m", 1, b"x", [secret])


@pytest.mark.parametrize(
    "args",
    [
        ("m", 1, b"x", []),  # no secret
        ("m", 1, b"x", "whsec_AAAA"),  # a bare string, not a list of secrets
        ("", 1, b"x", ["whsec_AAAA"]),  # empty id
        ("m", 1.5, b"x", ["whsec_AAAA"]),  # fractional timestamp
        ("m", 1, b"x", ["whsec_!!"]),  # malformed secret
    ],
)
def test_sign_rejects_bad_input(args):
    with pytest.raises(ValueError):
        signing.sign(*args)
