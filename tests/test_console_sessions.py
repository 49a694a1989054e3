"""Console sign-in against the real server: the session cookie, what the browser never gets,
how sessions end, one-time links, the security headers, and the keys' last use."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time

import pytest

from conftest import ServerProcess
from console_support import ConsoleSession, csrf_in, signed_in
from webhook_receiver import wait_until


def set_cookies(response) -> dict[str, str]:
    """name -> the whole Set-Cookie value, for each cookie the response sets."""
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


def attributes(header: str) -> set[str]:
    return {part.strip().lower() for part in header.split(";")[1:]}


def sign_in_response(srv: ServerProcess, key: str, headers: dict | None = None):
    s = ConsoleSession(srv.url)
    login = s.http.get("/console/login", headers=headers)
    return s, s.http.post("/console/login", data={"csrf": csrf_in(login.text), "key": key}, headers=headers)


def test_the_session_cookie_is_httponly_strict_and_scoped_to_the_console(server):
    s, answer = sign_in_response(server, server.key)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/"
    cookie = set_cookies(answer)["recalled_console"]
    assert {"httponly", "samesite=strict", "path=/console"} <= attributes(cookie)
    assert "secure" not in attributes(cookie), "plain http: a Secure cookie would never come back"
    assert server.key not in cookie
    login_cookie = set_cookies(s.http.get("/console/login"))  # already signed in: no new login cookie
    assert "recalled_console_login" not in login_cookie


def sign_in_like_a_tls_browser(srv: ServerProcess, headers: dict[str, str]):
    """Sign in, sending back Secure cookies by hand (httpx, rightly, will not over http)."""
    s = ConsoleSession(srv.url)
    login = s.http.get("/console/login", headers=headers)
    login_cookie = set_cookies(login)["recalled_console_login"]
    value = login_cookie.split(";")[0].split("=", 1)[1]
    answer = s.http.post("/console/login", data={"csrf": csrf_in(login.text), "key": srv.key},
                         headers={**headers, "Cookie": f"recalled_console_login={value}"})
    return login_cookie, answer


def test_the_cookie_is_secure_when_the_request_came_over_https(server, make_server):
    # X-Forwarded-Proto counts only from server.trusted_proxies: from anyone else it is ignored.
    untrusted, _ = sign_in_like_a_tls_browser(server, {"X-Forwarded-Proto": "https"})
    assert "secure" not in attributes(untrusted)
    proxied = make_server("behind-proxy", config_text='[server]\ntrusted_proxies = ["127.0.0.1"]\n')
    login_cookie, answer = sign_in_like_a_tls_browser(proxied, {"X-Forwarded-Proto": "https"})
    assert "secure" in attributes(login_cookie)
    assert answer.status_code == 303, answer.text
    assert {"secure", "httponly", "samesite=strict", "path=/console"} <= attributes(set_cookies(answer)["recalled_console"])


def test_secure_cookies_setting_marks_the_cookie_secure_over_http(make_server):
    srv = make_server("secure", config_text="[console]\nsecure_cookies = true\n")
    login_cookie, answer = sign_in_like_a_tls_browser(srv, {})
    assert "secure" in attributes(login_cookie)
    assert answer.status_code == 303, answer.text
    assert {"secure", "httponly", "samesite=strict", "path=/console"} <= attributes(set_cookies(answer)["recalled_console"])


def test_the_browser_gets_a_random_id_and_the_database_keeps_only_its_hash(make_server):
    srv = make_server("hash")
    s, answer = sign_in_response(srv, srv.key)
    value = set_cookies(answer)["recalled_console"].split(";")[0].split("=", 1)[1]
    assert len(value) >= 40 and srv.key not in value
    srv.stop()
    stored = [row[0] for row in srv.query("SELECT token_hash FROM console_sessions")]
    assert stored == [hashlib.sha256(value.encode()).hexdigest()]
    if srv.on_postgres:  # every column of the session row, as text
        raw = "".join(row[0] for row in srv.query("SELECT s::text FROM console_sessions s")).encode()
    else:
        raw = b"".join(p.read_bytes() for p in srv.workdir.glob("recalled.db*"))
    assert value.encode() not in raw, "the cookie value itself must not be stored"


def test_the_key_is_never_in_a_page_or_a_cookie(server):
    s = signed_in(server.url, server.key)
    assert server.key not in s.http.cookies.get("recalled_console", "")
    for path in ("/console/", "/console/events", "/console/keys", "/console/webhooks", "/console/chain",
                 "/console/actors"):
        page = s.get(path)
        assert page.status_code == 200, path
        assert server.key not in page.text, path
        assert server.key.split("_")[3] not in page.text, path  # not even the secret part
    # a failed sign-in shows the form again, without what was typed
    fresh = ConsoleSession(server.url)
    login = fresh.http.get("/console/login")
    wrong = server.key[:-4] + "zzzz"
    answer = fresh.http.post("/console/login", data={"csrf": csrf_in(login.text), "key": wrong})
    assert answer.status_code == 401
    assert wrong not in answer.text and "This key was not recognised" in answer.text


@pytest.mark.parametrize("typed,sentence", [
    ("", "Paste an API key to sign in."),
    ("hunter2", "That does not look like an API key"),
    ("rec_live_nosuchk1_" + "x" * 32, "This key was not recognised"),
])
def test_sign_in_problems_are_sentences(server, typed, sentence):
    s = ConsoleSession(server.url)
    login = s.http.get("/console/login")
    answer = s.http.post("/console/login", data={"csrf": csrf_in(login.text), "key": typed})
    assert answer.status_code == 401
    assert sentence in answer.text
    assert '{"error"' not in answer.text


def test_a_revoked_key_cannot_sign_in(server):
    with server.client() as c:
        made = c.post("/v1/keys", json={"name": "gone", "scopes": ["admin"]}).json()["data"]
        c.delete(f"/v1/keys/{made['id']}")
    _, answer = sign_in_response(server, made["key"])
    assert answer.status_code == 401 and "This key has been revoked" in answer.text


def test_revoking_the_key_from_the_cli_ends_its_sessions(make_server):
    srv = make_server("cli-revoke")
    with srv.client() as c:
        made = c.post("/v1/keys", json={"name": "ops", "scopes": ["admin"]}).json()["data"]
    s = signed_in(srv.url, made["key"])
    assert s.get("/console/events").status_code == 200
    subprocess.run([sys.executable, "-m", "recalled_lite.cli", "keys", "revoke", made["id"], "--db", srv.db_location],
                   check=True, capture_output=True, cwd=srv.workdir, timeout=60)
    # the server's key cache picks up a change made by another process within ~2 s
    wait_until(lambda: s.get("/console/events").status_code == 303, timeout=15, message="session ended")
    assert s.get("/console/").headers["location"].startswith("/console/login")


def test_sign_out_ends_the_session_for_good(server):
    s = signed_in(server.url, server.key)
    cookie = s.http.cookies.get("recalled_console")
    answer = s.post("/console/logout")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login?signed_out=1"
    cleared = set_cookies(answer)["recalled_console"]
    assert "max-age=0" in attributes(cleared)
    assert "You are signed out." in s.get("/console/login?signed_out=1").text
    replay = ConsoleSession(server.url)
    replay.http.cookies.set("recalled_console", cookie, path="/console")
    assert replay.get("/console/").status_code == 303, "the old cookie must not work again"


def test_sessions_live_in_the_database_and_survive_a_restart(make_server):
    srv = make_server("restart")
    s = signed_in(srv.url, srv.key)
    srv.restart()
    assert s.get("/console/events").status_code == 200


def test_use_keeps_a_session_alive_and_idleness_ends_it(make_server):
    srv = make_server("idle", config_text="[console]\nsession_idle_hours = 0.001\n")  # 3.6 s
    s = signed_in(srv.url, srv.key)
    started = time.monotonic()
    while time.monotonic() - started < 5:  # longer than the idle time, but never idle that long
        assert s.get("/console/").status_code == 200
        time.sleep(0.5)
    time.sleep(4.5)
    assert s.get("/console/").status_code == 303


def test_after_sign_in_the_browser_goes_back_where_it_was(server):
    s = ConsoleSession(server.url)
    bounce = s.get("/console/keys?notice=revoked")
    assert bounce.status_code == 303
    login = s.http.get(bounce.headers["location"])
    assert 'name="next" value="/console/keys?notice=revoked"' in login.text
    answer = s.http.post("/console/login", data={"csrf": csrf_in(login.text), "key": server.key,
                                                 "next": "/console/keys?notice=revoked"})
    assert answer.headers["location"] == "/console/keys?notice=revoked"
    # never to another site
    s2 = ConsoleSession(server.url)
    login = s2.http.get("/console/login")
    answer = s2.http.post("/console/login", data={"csrf": csrf_in(login.text), "key": server.key,
                                                  "next": "//evil.example/console/"})
    assert answer.headers["location"] == "/console/"


def test_every_console_response_carries_the_security_headers(server):
    s = signed_in(server.url, server.key)
    css = re.search(r'href="(/console/static/console\.css\?v=[0-9a-f]+)"', s.get("/console/").text).group(1)
    responses = [s.get("/console/"), s.get("/console/events"), s.get("/console/nope"), s.get(css),
                 s.get("/console/events/tail?after_seq=0"), ConsoleSession(server.url).get("/console/keys"),
                 s.http.get("/"), s.post("/console/keys", csrf=False), s.http.delete("/console/keys")]
    for r in responses:
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, r.url
        assert "unsafe-inline" not in csp
        assert r.headers.get("referrer-policy") == "same-origin", r.url
        assert r.headers.get("x-content-type-options") == "nosniff", r.url
        assert r.headers.get("x-request-id"), r.url
    page = s.get("/console/events").text
    assert "<script>" not in page and " on" + "click=" not in page and "style=" not in page


def test_root_and_unknown_paths_lead_somewhere_sensible(server):
    s = signed_in(server.url, server.key)
    assert s.http.get("/").headers["location"] == "/console/"
    assert s.http.get("/console").headers["location"] == "/console/"
    missing = s.get("/console/no/such/page")
    assert missing.status_code == 404 and "There is no console page at this address." in missing.text
    assert missing.headers["content-type"].startswith("text/html")
    wrong_method = s.http.delete("/console/keys")
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["allow"]
    assert '{"error"' not in wrong_method.text


def test_static_files_are_cached_by_content(server):
    s = ConsoleSession(server.url)
    page = s.get("/console/login").text
    css = re.search(r'href="(/console/static/console\.css\?v=([0-9a-f]+))"', page)
    versioned = s.get(css.group(1))
    assert versioned.status_code == 200 and versioned.headers["content-type"].startswith("text/css")
    assert "immutable" in versioned.headers["cache-control"] and "max-age=31536000" in versioned.headers["cache-control"]
    plain = s.get("/console/static/console.css")
    assert plain.headers["cache-control"] == "no-cache"
    again = s.get("/console/static/console.css", headers={"If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304
    assert s.get("/console/static/nope.js").status_code == 404


def run_console_link(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recalled_lite.cli", "console-link", "--db", srv.db_location,
                           "--base-url", srv.url, *args], capture_output=True, text=True, cwd=srv.workdir, timeout=60)


def test_console_link_signs_in_once(server):
    done = run_console_link(server)
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    assert url.startswith(server.url + "/console/link?token=")
    s = ConsoleSession(server.url)
    landing = s.http.get(url.removeprefix(server.url))
    assert landing.status_code == 200 and "bootstrap" in landing.text  # the default: the oldest admin key
    token = url.split("token=")[1]
    answer = s.http.post("/console/link", data={"csrf": csrf_in(landing.text), "token": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/"
    assert s.get("/console/keys").status_code == 200
    again = ConsoleSession(server.url)
    used = again.http.get(url.removeprefix(server.url))
    assert used.status_code == 404 and "it was used already" in used.text


def test_console_link_for_a_chosen_key_and_its_errors(server):
    with server.client() as c:
        made = c.post("/v1/keys", json={"name": "reader", "scopes": ["events:read"]}).json()["data"]
    done = run_console_link(server, "--key-id", made["id"])
    assert done.returncode == 0, done.stderr
    s = ConsoleSession(server.url)
    path = done.stdout.strip().removeprefix(server.url)
    landing = s.http.get(path)
    assert "reader" in landing.text
    s.http.post("/console/link", data={"csrf": csrf_in(landing.text), "token": path.split("token=")[1]})
    assert s.get("/console/events").status_code == 200
    assert s.get("/console/keys").status_code == 403, "the link signs in as that key, with its scopes only"
    bad = run_console_link(server, "--key-id", "key_nope")
    assert bad.returncode == 2 and "no key with id key_nope" in bad.stderr


def test_last_use_of_a_key_is_recorded_without_a_write_per_request(make_server):
    srv = make_server("last-used")
    with srv.client() as c:
        made = c.post("/v1/keys", json={"name": "used", "scopes": ["events:read"]}).json()["data"]
        listed = {k["id"]: k for k in c.get("/v1/keys").json()["data"]}
        assert listed[made["id"]]["last_used_at"] is None

        def writer_ops() -> int:
            text = c.get("/metrics").text
            return int(float(re.search(r"^recalled_writer_ops_total (\S+)$", text, re.M).group(1)))

        before = writer_ops()
        with srv.client(key=made["key"]) as user:
            for _ in range(25):
                assert user.get("/v1/events").status_code == 200
        assert writer_ops() == before, "noting a key's use must not write on the request path"
        listed = {k["id"]: k for k in c.get("/v1/keys").json()["data"]}
        assert listed[made["id"]]["last_used_at"] is not None
        seen = listed[made["id"]]["last_used_at"]
    srv.stop()  # a clean stop flushes what was noted
    stored = srv.query("SELECT last_used_at FROM api_keys WHERE id = ?", made["id"])[0][0]
    assert stored is not None
    srv.start()
    with srv.client() as c:
        listed = {k["id"]: k for k in c.get("/v1/keys").json()["data"]}
    assert listed[made["id"]]["last_used_at"] == seen


def test_signing_in_again_ends_the_previous_session(server):
    s = signed_in(server.url, server.key)
    first = s.http.cookies.get("recalled_console")
    login = s.http.get("/console/login?next=/console/keys")  # signed in: sent on
    assert login.status_code == 303
    fresh = ConsoleSession(server.url)
    fresh.http.cookies.set("recalled_console", first, path="/console")
    page = fresh.http.get("/console/login")
    assert page.status_code == 303, "still signed in with the first session"
    fresh.http.cookies.clear()
    page = fresh.http.get("/console/login")
    fresh.http.cookies.set("recalled_console", first, path="/console")
    answer = fresh.http.post("/console/login", data={"csrf": csrf_in(page.text), "key": server.key})
    assert answer.status_code == 303
    stale = ConsoleSession(server.url)
    stale.http.cookies.set("recalled_console", first, path="/console")
    assert stale.get("/console/").status_code == 303, "the first session ended"


def test_the_console_can_be_turned_off(make_server):
    srv = make_server("no-console", config_text="[console]\nenabled = false\n")
    with srv.client(key=None) as c:
        assert c.get("/").status_code == 404
        gone = c.get("/console/login")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND"
    with srv.client() as c:
        assert c.get("/v1/events").status_code == 200
