"""recalled.webhooks.verify against real deliveries from the real server to a real loopback
receiver, and against the reference `standardwebhooks` library in both directions."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Iterator

import pytest
import standardwebhooks

import recalled
from recalled import webhooks

from .harness import Receiver, Server, tag, wait_until

CONFIG = """
[webhooks]
allow_private_destinations = true
secret_rotation_overlap_seconds = 600
"""


@pytest.fixture(scope="module")
def hooks_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("client_hooks"), config_text=CONFIG).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.close()


def _subscribe(client: recalled.Recalled, url: str, org: str) -> recalled.Subscription:
    sub = client.event_subscriptions.create(url=url, organization=org, description="client test")
    assert sub.secret and sub.secret.startswith("whsec_")
    wait_until(lambda: client.event_subscriptions.retrieve(sub.id).state == "valid", message="valid")
    return sub


def test_real_deliveries_verify_with_our_verifier_and_the_reference(hooks_server, receiver):
    org = f"org_hook_{tag()}"
    path = f"/hook-{org}"
    with recalled.Recalled(api_key=hooks_server.key, base_url=hooks_server.url) as client:
        sub = _subscribe(client, receiver.url + path, org)
        created = [client.events.create(action="hook.sent", organization=org, metadata={"i": i}) for i in range(3)]
        got = wait_until(lambda: len(receiver.deliveries(path)) >= 3 and receiver.deliveries(path),
                         message="three deliveries")
    reference = standardwebhooks.Webhook(sub.secret)
    assert sub.secret is not None
    for headers, body in got:
        ours = webhooks.verify(body, headers, sub.secret)
        assert ours == reference.verify(body, headers)
        assert ours["type"] == "event.created" and ours["id"] == headers["webhook-id"]
        assert webhooks.Webhook(sub.secret).verify(body, headers) == ours
        # Tampered bytes fail both verifiers.
        forged = body.replace(b'"hook.sent"', b'"hook.sEnt"')
        with pytest.raises(webhooks.WebhookVerificationError):
            webhooks.verify(forged, headers, sub.secret)
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            reference.verify(forged, headers)
        # The wrong secret fails too.
        with pytest.raises(webhooks.WebhookVerificationError):
            webhooks.verify(body, headers, "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")
    assert sorted(json.loads(b)["event"]["id"] for _, b in got) == sorted(e.id for e in created)


def test_timestamp_tolerance(hooks_server, receiver):
    org = f"org_hook_ts_{tag()}"
    path = f"/hook-{org}"
    with recalled.Recalled(api_key=hooks_server.key, base_url=hooks_server.url) as client:
        sub = _subscribe(client, receiver.url + path, org)
        client.events.create(action="hook.ts", organization=org)
        headers, body = wait_until(lambda: receiver.deliveries(path), message="a delivery")[0]
    assert sub.secret is not None
    sent = int(headers["webhook-timestamp"])
    assert webhooks.verify(body, headers, sub.secret, now=sent + 299)
    assert webhooks.verify(body, headers, sub.secret, now=sent - 299)
    with pytest.raises(webhooks.WebhookVerificationError, match="too old"):
        webhooks.verify(body, headers, sub.secret, now=sent + 301)
    with pytest.raises(webhooks.WebhookVerificationError, match="future"):
        webhooks.verify(body, headers, sub.secret, now=sent - 301)
    assert webhooks.verify(body, headers, sub.secret, now=sent + 3000, tolerance=3600)


def test_during_a_rotation_either_secret_verifies(hooks_server, receiver):
    org = f"org_hook_rot_{tag()}"
    path = f"/hook-{org}"
    with recalled.Recalled(api_key=hooks_server.key, base_url=hooks_server.url) as client:
        sub = _subscribe(client, receiver.url + path, org)
        rotated = client.event_subscriptions.rotate_secret(sub.id)
        assert rotated.secret != sub.secret and rotated.previous_secret_expires_at is not None
        assert client.event_subscriptions.secret(sub.id).secret == rotated.secret
        client.events.create(action="hook.rotated", organization=org)
        headers, body = wait_until(lambda: receiver.deliveries(path), message="a delivery")[0]
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (sub.secret, rotated.secret):
        assert secret is not None
        assert webhooks.verify(body, headers, secret)["type"] == "event.created"
        standardwebhooks.Webhook(secret).verify(body, headers)
    assert webhooks.verify(body, headers, ["whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", rotated.secret])


def test_signatures_agree_with_the_reference_in_both_directions():
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = json.dumps({"id": "whd_1", "type": "event.created", "event": {"action": "a.b"}}).encode()
    now = int(time.time())
    ours = webhooks.sign(body, secret, msg_id="whd_1", timestamp=now)
    assert standardwebhooks.Webhook(secret).verify(body, ours)["id"] == "whd_1"
    theirs_sig = standardwebhooks.Webhook(secret).sign("whd_1", datetime.fromtimestamp(now, timezone.utc),
                                                      body.decode())
    theirs = {"webhook-id": "whd_1", "webhook-timestamp": str(now), "webhook-signature": theirs_sig}
    assert theirs_sig == ours["webhook-signature"]
    assert webhooks.verify(body, theirs, secret)["type"] == "event.created"
    # Header names are case-insensitive, and the svix- spelling is accepted.
    svix_style = {k.replace("webhook-", "Svix-"): v for k, v in theirs.items()}
    assert webhooks.verify(body.decode(), svix_style, secret)["id"] == "whd_1"
    with pytest.raises(webhooks.WebhookVerificationError, match="missing"):
        webhooks.verify(body, {"webhook-id": "whd_1"}, secret)
    with pytest.raises(ValueError):
        webhooks.Webhook("whsec_not base64!")
