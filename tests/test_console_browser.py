"""The console in real headless Chromium (Debian's /usr/bin/chromium through Playwright),
against the real server on a free port, as a person would use it.

Screenshots of every page at 390 px and 1440 px (and a dark-mode pair) are written to the
directory printed at the start (RECALLED_CONSOLE_SHOTS to choose it); each shot also checks
what a first-time user would notice: no sideways scrolling, no raw JSON, every form field
labelled, a heading.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import pytest

from conftest import ServerProcess
from console_support import CHROMIUM, CHROMIUM_ARGS, screenshot_dir
from webhook_receiver import tag, wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
WIDTHS = (390, 1440)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("console-browser"), args=["--dev"]).start()
    with server.client() as c:
        for i in range(12):
            c.post("/v1/events", json={
                "action": ["invoice.paid", "user.login", "invoice.refunded"][i % 3],
                "organization": ["org_acme", "org_globex"][i % 2],
                "actor": {"type": "user", "id": f"user_{i % 4}", "name": ["Ada Lovelace", "Grace Hopper"][i % 2],
                          "email": "ada@example.com"},
                "targets": [{"type": "invoice", "id": f"inv_{i}"}],
                "metadata": {"amount": 4200 + i, "currency": "EUR", "lines": [{"sku": "A-1", "qty": 2}]},
            })
    yield server
    server.kill()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots():
    path = screenshot_dir()
    print(f"\nconsole screenshots: {path}")
    return path


def new_page(browser, width: int = 1440, **options):
    context = browser.new_context(viewport={"width": width, "height": 900}, **options)
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def sign_in(page, srv: ServerProcess, key: str | None = None) -> None:
    page.goto(srv.url + "/console/login")
    page.get_by_label("API key").fill(key or srv.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/console/$"))


def check_and_shoot(page, shots, name: str) -> None:
    """What a first-time user would notice, then the screenshot."""
    width = page.viewport_size["width"]
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name} at {width}px scrolls sideways by {overflow}px"
    text = page.inner_text("body")
    assert '{"error"' not in text and '"code":' not in text, f"{name} shows raw JSON"
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
        .map(el => el.name || el.id || el.outerHTML.slice(0, 80))""")
    assert not unlabelled, f"{name}: fields without a label: {unlabelled}"
    assert page.locator("h1").count() >= 1, f"{name} has no heading"
    page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)


def test_sign_in_list_filter_search_and_sign_out(srv, browser, shots):
    marker = tag()
    with srv.client() as c:
        posted = c.post("/v1/events", json={"action": f"browser.{marker}", "organization": "org_browser",
                                            "actor": {"id": f"actor_{marker}", "name": "Browser Tester"}}).json()["data"]
    page = new_page(browser)
    page.goto(srv.url + "/console/events")
    assert "/console/login" in page.url, "signed out: the events page leads to sign-in"
    page.get_by_label("API key").fill(srv.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/console/events$"))
    rows = page.locator("#events-body tr")
    assert page.locator(f"text={posted['id']}").is_visible(), "the event posted through the API is listed"
    assert rows.count() >= 13

    page.get_by_label("Action").fill(f"browser.{marker}")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r".*action=browser\.%s.*" % marker))
    assert rows.count() == 1 and page.locator(f"text={posted['id']}").is_visible()
    assert f"action=browser.{marker}" in page.url

    page.goto(srv.url + "/console/events")
    page.get_by_label("Search").fill(f"actor:actor_{marker}")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url(re.compile(r".*q=actor%3Aactor_.*"))
    assert rows.count() == 1 and page.locator(f"text={posted['id']}").is_visible()
    assert "q=actor%3Aactor_" + marker in page.url
    page.reload()  # the URL alone brings the same list back (bookmarkable)
    assert rows.count() == 1 and page.get_by_label("Search").input_value() == f"actor:actor_{marker}"

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/console/login\?signed_out=1$"))
    assert page.locator("text=You are signed out.").is_visible()
    page.goto(srv.url + "/console/events")
    assert "/console/login" in page.url
    page.context.close()


def test_live_tail_shows_a_new_event_within_two_seconds_without_a_reload(srv, browser):
    page = new_page(browser)
    sign_in(page, srv)
    page.goto(srv.url + "/console/events")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_timeout(300)  # let the tail start polling
    marker = tag()
    with srv.client() as c:
        posted = c.post("/v1/events", json={"action": f"tail.{marker}", "organization": "org_tail"}).json()["data"]
    acknowledged = time.monotonic()
    row = page.locator(f"#events-body tr:has-text('{posted['id']}')")
    row.wait_for(state="visible", timeout=2_000)
    print(f"live tail: the event appeared {time.monotonic() - acknowledged:.2f} s after its POST was answered")
    assert page.evaluate("window.__notReloaded === true"), "the page must not have reloaded"
    assert page.locator("#events-body tr").first.inner_text().find(f"tail.{marker}") >= 0, "newest on top"

    page.get_by_role("button", name="Pause").click()
    with srv.client() as c:
        paused = c.post("/v1/events", json={"action": f"tail.{marker}.paused"}).json()["data"]
    page.wait_for_timeout(2_500)
    assert page.locator(f"text={paused['id']}").count() == 0, "paused: nothing new is shown"
    page.get_by_role("button", name="Resume").click()
    page.locator(f"#events-body tr:has-text('{paused['id']}')").wait_for(state="visible", timeout=5_000)

    # the tail follows the filters: an event of another organization does not appear
    page.goto(srv.url + "/console/events?organization=org_tail")
    page.wait_for_timeout(300)
    with srv.client() as c:
        other = c.post("/v1/events", json={"action": f"tail.{marker}.other", "organization": "org_elsewhere"}).json()["data"]
        mine = c.post("/v1/events", json={"action": f"tail.{marker}.mine", "organization": "org_tail"}).json()["data"]
    page.locator(f"#events-body tr:has-text('{mine['id']}')").wait_for(state="visible", timeout=5_000)
    assert page.locator(f"text={other['id']}").count() == 0
    page.context.close()


def test_the_tail_keeps_a_bounded_number_of_rows(srv, browser):
    page = new_page(browser)
    sign_in(page, srv)
    page.goto(srv.url + "/console/events")
    page.evaluate("document.querySelector('[data-tail-url]').dataset.tailKeep = '5'")
    marker = tag()
    with srv.client() as c:
        last = c.post("/v1/events/batch", json={"events": [{"action": f"cap.{marker}"} for _ in range(8)]}).json()["data"][-1]
    page.locator(f"#events-body tr:has-text('{last['id']}')").wait_for(state="visible", timeout=5_000)
    assert page.locator("#events-body tr").count() == 5
    page.context.close()


def test_times_switch_between_utc_and_local(srv, browser):
    page = new_page(browser, timezone_id="Asia/Tokyo")
    sign_in(page, srv)
    page.goto(srv.url + "/console/events")
    first = page.locator("#events-body time.ts").first
    assert first.inner_text().endswith(" UTC")
    moment = datetime.fromisoformat(first.get_attribute("datetime").replace("Z", "+00:00"))
    tokyo = (moment + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S")
    page.get_by_role("button", name="Times: UTC").click()
    assert first.inner_text() == tokyo
    assert "Asia/Tokyo" in page.locator("[data-tz-toggle]").inner_text()
    page.reload()
    assert page.locator("#events-body time.ts").first.inner_text() == tokyo, "the choice is remembered"
    page.locator("[data-tz-toggle]").click()
    assert page.locator("#events-body time.ts").first.inner_text().endswith(" UTC")
    page.context.close()


def test_event_detail_shows_the_hash_and_verifies_it(srv, browser):
    with srv.client() as c:
        event = c.post("/v1/events", json={"action": "detail.shown", "metadata": {"plan": "pro", "seats": 3}}).json()["data"]
    page = new_page(browser)
    sign_in(page, srv)
    page.goto(srv.url + "/console/events")
    page.get_by_role("link", name=event["id"]).first.click()
    page.wait_for_url(re.compile(rf".*/console/events/{event['id']}$"))
    assert page.locator("[data-field=hash]").inner_text() == event["hash"]
    assert '"seats": 3' in page.locator("pre.json").inner_text(), "metadata as formatted JSON"
    page.get_by_role("link", name="Verify this event's link").click()
    result = page.locator("[data-verify-result]")
    assert result.get_attribute("data-verify-result") == "valid"
    assert "Verified." in result.inner_text()

    page.goto(srv.url + "/console/chain")
    page.get_by_role("button", name="Verify the whole chain").click()
    done = page.locator("[data-chain-result]")
    done.wait_for(state="visible", timeout=30_000)  # console.js reloads the page when the run ends
    assert done.get_attribute("data-chain-result") == "valid"
    page.goto(srv.url + "/console/")
    assert "Last verified" in page.inner_text("body")
    page.context.close()


def test_create_a_subscription_and_see_its_test_attempt(srv, browser, rx):
    path = f"/browser-{tag()}"
    page = new_page(browser)
    sign_in(page, srv)
    page.goto(srv.url + "/console/webhooks")
    page.get_by_role("link", name="New subscription").click()
    page.get_by_label("URL").fill(rx.url(path))
    page.get_by_label("Description").fill("Browser receiver")
    page.get_by_label("Event types").fill("invoice.*")
    page.get_by_role("button", name="Create subscription").click()
    secret = page.locator("[data-secret]").inner_text()
    assert secret.startswith("whsec_")
    page.get_by_role("link", name="Go to the subscription").click()
    wait_until(lambda: rx.received(path, type="webhook.test"), message="the test delivery")

    def test_attempt_listed() -> bool:
        page.reload()
        # The state follows the attempt's commit by a moment (the delivery loop's view).
        return (page.locator("table.attempts tr:has-text('test') .badge-success").count() > 0
                and page.locator("h1 .badge-valid").count() == 1)
    wait_until(test_attempt_listed, timeout=20, interval=0.5, message="the test attempt and the valid state")
    assert secret not in page.content(), "the secret is shown once"
    page.context.close()


def test_create_a_key_and_revoke_it(srv, browser):
    name = f"browser-{tag()}"
    page = new_page(browser)
    sign_in(page, srv)
    page.goto(srv.url + "/console/keys")
    page.get_by_label("Name").fill(name)
    page.get_by_label("events:read").check()
    page.get_by_role("button", name="Create key").click()
    plaintext = page.locator("[data-plaintext-key]").inner_text().strip()
    assert plaintext.startswith("rec_live_")
    with srv.client(key=plaintext) as c:
        assert c.get("/v1/events").status_code == 200
    page.goto(srv.url + "/console/keys")
    assert plaintext not in page.content(), "the plaintext is shown once"
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f"tr:has-text('{name}')").get_by_role("button", name="Revoke").click()
    page.wait_for_url(re.compile(r".*notice=revoked$"))
    assert page.locator(f"tr:has-text('{name}') .badge-deactivated").inner_text() == "revoked"
    with srv.client(key=plaintext) as c:
        assert c.get("/v1/events").status_code == 401
    page.context.close()


def test_keyboard_users_get_a_skip_link_and_a_visible_focus(srv, browser):
    page = new_page(browser)
    sign_in(page, srv)
    page.goto(srv.url + "/console/events")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent.trim()")
    assert focused == "Skip to content"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    assert page.locator("a.skip").bounding_box()["y"] >= 0, "the skip link shows when focused"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-q", "after skipping, the search box comes first"
    page.goto(srv.url + "/console/login")
    page.context.clear_cookies()
    page.goto(srv.url + "/console/login")
    # Chromium applies `autofocus` at its next rendering opportunity, which can come after the
    # load event on a busy machine: wait for it (a page without autofocus never gets there).
    page.wait_for_function("document.activeElement && document.activeElement.id === 'key'", timeout=5000)
    page.context.close()


def test_dark_mode_follows_the_system(srv, browser, shots):
    page = new_page(browser, color_scheme="dark")
    sign_in(page, srv)
    page.goto(srv.url + "/console/events")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    r, g, b = (int(v) for v in re.findall(r"\d+", background)[:3])
    assert r + g + b < 120, f"dark mode should have a dark background, got {background}"
    check_and_shoot(page, shots, "events-dark")
    page.goto(srv.url + "/console/")
    check_and_shoot(page, shots, "overview-dark")
    page.context.close()


def page_routes() -> set[str]:
    from test_console_auth_matrix import console_routes

    return {path for (method, path), endpoint in console_routes().items()
            if method == "GET" and getattr(endpoint, "console_kind") == "page"}


def test_screenshots_of_every_page(srv, browser, shots, rx):
    with srv.client() as c:
        event = c.get("/v1/events", params={"action": "invoice.paid"}).json()["data"][0]
        sub = c.post("/v1/event_subscriptions", json={"url": rx.url("/shots"), "description": "Billing service",
                                                      "event_types": ["invoice.*"]}).json()["data"]
        job = c.post(f"/v1/event_subscriptions/{sub['id']}/replay_missing",
                     json={"begin": "2020-01-01T00:00:00Z"}).json()["data"]
        c.post("/v1/event_subscriptions", json={"url": "http://127.0.0.1:9/down", "description": "Flaky CRM",
                                                "organization": "org_acme"})
    limited = srv.create_key(["events:read"], name="reader only")
    covered = {
        "/console/": "/console/",
        "/console/events": "/console/events",
        "/console/events/{event_id}": f"/console/events/{event['id']}?verify=link",
        "/console/chain": "/console/chain",
        "/console/webhooks": "/console/webhooks",
        "/console/webhooks/new": "/console/webhooks/new",
        "/console/webhooks/{sub_id}": f"/console/webhooks/{sub['id']}",
        "/console/webhooks/{sub_id}/jobs/{job_id}": f"/console/webhooks/{sub['id']}/jobs/{job['id']}",
        "/console/keys": "/console/keys",
        "/console/actors": "/console/actors",
    }
    not_pages = {"/console/events/download": "a file download, not a page"}
    assert page_routes() == set(covered) | set(not_pages), "a console page has no screenshot"
    names = {"/console/": "overview", "/console/events": "events", "/console/events/{event_id}": "event",
             "/console/chain": "chain", "/console/webhooks": "webhooks", "/console/webhooks/new": "webhook-new",
             "/console/webhooks/{sub_id}": "webhook", "/console/webhooks/{sub_id}/jobs/{job_id}": "webhook-job",
             "/console/keys": "keys", "/console/actors": "actors"}
    for width in WIDTHS:
        page = new_page(browser, width)
        page.goto(srv.url + "/console/login")
        check_and_shoot(page, shots, "login")
        page.goto(srv.url + "/console/link?token=expired")
        check_and_shoot(page, shots, "link-expired")
        sign_in(page, srv)
        for template, url in covered.items():
            response = page.goto(srv.url + url)
            assert response.status == 200, (url, response.status)
            check_and_shoot(page, shots, names[template])
        page.goto(srv.url + "/console/events?q=invoice%20action:invoice.*")
        check_and_shoot(page, shots, "events-search")
        page.goto(srv.url + "/console/events?date_from=yesterday")
        assert "That did not work." in page.inner_text("body")
        check_and_shoot(page, shots, "events-bad-filter")
        page.goto(srv.url + f"/console/webhooks/{sub['id']}")
        page.locator("form:has(input[value=replay_missing])").get_by_label("Since").fill("2020-01-01")
        page.locator("form:has(input[value=replay_missing])").get_by_role("button", name="Count messages").click()
        assert page.locator("[data-preview-count]").count() == 1
        check_and_shoot(page, shots, "webhook-job-preview")
        page.goto(srv.url + "/console/webhooks/new")
        page.get_by_label("URL").fill(rx.url("/shots-new"))
        page.get_by_role("button", name="Create subscription").click()
        check_and_shoot(page, shots, "webhook-secret")
        page.goto(srv.url + "/console/keys")
        page.get_by_label("Name").fill(f"shot-{width}")
        page.get_by_label("events:read").check()
        page.get_by_role("button", name="Create key").click()
        check_and_shoot(page, shots, "keys-created")
        page.goto(srv.url + "/console/no/such/page")
        check_and_shoot(page, shots, "not-found")
        page.get_by_role("button", name="Sign out").click()
        sign_in(page, srv, limited)
        page.goto(srv.url + "/console/keys")
        assert "keys:manage" in page.inner_text("body")
        check_and_shoot(page, shots, "missing-scope")
        page.context.close()
