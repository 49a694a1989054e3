"""Receipts: the public page, opened in real headless Chromium (Debian's, through Playwright).

The page verifies the inclusion proof and the checkpoint's Ed25519 signature with WebCrypto,
says "Verified" for a real event and "Not verified" when the proof it was served is altered,
and holds none of the event's personal fields. Revocation, the token and the CSP are checked
over plain HTTP.
"""

from __future__ import annotations

import re

import httpx
import pytest

from conftest import ServerProcess
from console_support import screenshot_dir

playwright_sync = pytest.importorskip("playwright.sync_api")

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PERSONAL = {"actor_id": "rcpt_actor_Q7", "name": "Émile Zola-Personal", "email": "emile.personal@example.org",
            "ip": "203.0.113.77", "ua": "PersonalAgent/9.9 (secret-device)", "meta": "meta-value-XYZZY"}


@pytest.fixture(scope="module")
def receipt(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("receipts"),
                        config_text="[checkpoints]\ninterval_seconds = 0.2\n").start()
    with srv.client() as c:
        filler = [{"action": f"filler.{i}", "actor": {"id": f"f{i}"}} for i in range(300)]
        assert c.post("/v1/events/batch", json={"events": filler}).status_code == 200
        event = c.post("/v1/events", json={
            "action": "document.signed", "organization": "org_receipt_secret",
            "actor": {"type": "user", "id": PERSONAL["actor_id"], "name": PERSONAL["name"], "email": PERSONAL["email"]},
            "metadata": {"note": PERSONAL["meta"]}, "ip_address": PERSONAL["ip"], "user_agent": PERSONAL["ua"],
            "targets": [{"type": "contract", "id": "c_1"}],
        }).json()["data"]
        assert c.post("/v1/events/batch", json={"events": filler[:17]}).status_code == 200
        r = c.get(f"/v1/events/{event['id']}/receipt")
        assert r.status_code == 200, r.text
        data = r.json()["data"]
    yield srv, event, data
    srv.kill()


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


def final_status(page) -> tuple[str, str]:
    page.wait_for_function("document.getElementById('status').dataset.state !== 'pending'", timeout=30_000)
    status = page.locator("#status")
    return status.get_attribute("data-state"), status.inner_text()


def test_the_receipt_api_and_its_mixed_casing(receipt):
    srv, event, data = receipt
    assert set(data) == {"id", "eventId", "view_url", "hash", "signature", "leafIndex", "leafHash", "treeSize",
                         "proof", "checkpoint", "createdAt"}
    assert data["eventId"] == event["id"] and data["hash"] == event["hash"]
    assert data["leafIndex"] == event["seq"] - 1 and data["treeSize"] >= event["seq"]
    assert re.fullmatch(re.escape(srv.url) + r"/r/rcpt_[0-9A-Z]{26}\.[A-Za-z0-9_-]{24}", data["view_url"])
    with srv.client() as c:  # the same receipt again, with a fresh proof
        again = c.get(f"/v1/events/{event['id']}/receipt").json()["data"]
    assert (again["id"], again["view_url"]) == (data["id"], data["view_url"])


def test_the_page_verifies_in_chromium_and_shows_no_personal_field(receipt, browser):
    srv, event, data = receipt
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    response = page.goto(data["view_url"])
    assert response.status == 200
    state, text = final_status(page)
    assert state == "verified", (text, errors)
    assert text.startswith("Verified")
    checks = page.locator("#checks li").all_inner_texts()
    assert len(checks) == 3 and all(c.startswith("\u2713") for c in checks), checks
    assert page.locator("#action").inner_text() == "document.signed"
    assert page.locator("#event-hash").inner_text() == event["hash"]
    assert page.locator("#occurred-at").inner_text() == event["occurredAt"]
    html = page.content()
    for value in [*PERSONAL.values(), "org_receipt_secret", "contract", "c_1"]:
        assert value not in html, value
    assert not errors, errors  # no CSP violation, no script error
    shots = screenshot_dir()
    for width, height in ((390, 844), (1440, 900)):
        page.set_viewport_size({"width": width, "height": height})
        assert page.evaluate("document.documentElement.scrollWidth") <= width, "sideways scroll"
        page.screenshot(path=str(shots / f"receipt-{width}.png"), full_page=True)
    print(f"receipt screenshots in {shots}")
    page.close()


def test_a_tampered_proof_is_not_verified(receipt, browser):
    srv, event, data = receipt
    page = browser.new_page()
    tampered_hash = data["proof"][1]
    replacement = ("B" if tampered_hash[5] != "B" else "C")
    altered = tampered_hash[:5] + replacement + tampered_hash[6:]

    def alter(route):
        response = route.fetch()
        body = response.text()
        assert tampered_hash in body
        route.fulfill(response=response, body=body.replace(tampered_hash, altered))

    page.route(re.compile(r".*/r/rcpt_.*"), alter)
    page.goto(data["view_url"])
    state, text = final_status(page)
    assert state == "failed" and text.startswith("Not verified"), text
    assert any(c.startswith("\u2717") and "inclusion proof" in c for c in page.locator("#checks li").all_inner_texts())
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(screenshot_dir() / "receipt-not-verified-390.png"), full_page=True)
    page.close()

    # A forged checkpoint signature is caught too (the proof itself left intact).
    page = browser.new_page()
    signature_line = data["checkpoint"].rstrip("\n").rsplit(" ", 1)[1]
    forged = signature_line[:-6] + ("AAAAA=" if not signature_line.endswith("AAAAA=") else "BBBBB=")

    def forge(route):
        response = route.fetch()
        route.fulfill(response=response, body=response.text().replace(signature_line, forged))

    page.route(re.compile(r".*/r/rcpt_.*"), forge)
    page.goto(data["view_url"])
    state, text = final_status(page)
    assert state == "failed", text
    assert "\u2717 the signature does not match the checkpoint" in page.locator("#checks li").all_inner_texts()
    page.close()


def test_headers_token_and_revocation(receipt, tmp_path):
    srv, event, data = receipt
    r = httpx.get(data["view_url"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), "an inline script"
    assert " style=" not in r.text and "<style" not in r.text
    js = httpx.get(srv.url + "/r/static/receipt.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert httpx.get(srv.url + "/r/static/other.js").json()["error"]["code"] == "NOT_FOUND"
    # a forged token, or another receipt's token, opens nothing
    receipt_id, token = data["view_url"].rsplit("/", 1)[1].split(".")
    forged = httpx.get(f"{srv.url}/r/{receipt_id}.{token[:-1]}{'A' if token[-1] != 'A' else 'B'}")
    assert forged.status_code == 404 and forged.json()["error"]["code"] == "NOT_FOUND"
    # the organization wall: another organization's key cannot make or revoke it
    other = srv.create_key(["events:read"], organization="org_other")
    with srv.client(key=other) as c:
        assert c.get(f"/v1/events/{event['id']}/receipt").status_code == 404
        assert c.delete(f"/v1/events/{event['id']}/receipt").status_code == 404
    with srv.client() as c:
        revoked = c.delete(f"/v1/events/{event['id']}/receipt").json()["data"]
        assert revoked["revokedReceipts"] == 1 and revoked["eventId"] == event["id"]
        gone = httpx.get(data["view_url"])
        assert gone.status_code == 404 and "revoked" in gone.json()["error"]["message"]
        assert gone.json()["error"]["details"]["revokedAt"] == revoked["revokedAt"]
        fresh = c.get(f"/v1/events/{event['id']}/receipt").json()["data"]
        assert fresh["id"] != data["id"] and httpx.get(fresh["view_url"]).status_code == 200
