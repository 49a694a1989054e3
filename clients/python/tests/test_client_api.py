"""Every resource against the real server, with the sync and with the async client.

Each scenario is written once as a coroutine; ``r()`` awaits what the async client returns
and passes the sync client's values through, and ``items()`` walks a list either way
(``for`` over a SyncPage, ``async for`` over an AsyncPaginator).
"""

from __future__ import annotations

import asyncio
import csv
import inspect
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

import recalled
from recalled import (
    AuthenticationError, NotFoundError, PermissionDeniedError, ValidationError,
)

from .harness import Receiver, Server, tag

CONFIG = """
[webhooks]
allow_private_destinations = true
"""


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("client_api"), config_text=CONFIG).start()
    yield srv
    srv.kill()


async def r(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def items(listing: Any) -> list[Any]:
    if hasattr(listing, "__aiter__"):
        return [item async for item in listing]
    return list(listing)


async def first_page(listing: Any) -> Any:
    return await listing if inspect.isawaitable(listing) else listing


def run(mode: str, scenario: Any, srv: Server, **kwargs: Any) -> None:
    async def main() -> None:
        cls = recalled.Recalled if mode == "sync" else recalled.AsyncRecalled
        client = cls(api_key=kwargs.pop("api_key", srv.key), base_url=srv.url,
                     spool=recalled.SpoolConfig(path=kwargs.pop("spool")))
        try:
            await scenario(client, srv, **kwargs)
        finally:
            await r(client.aclose(timeout=0) if mode == "async" else client.close(timeout=0))
    asyncio.run(main())


async def _events(client: Any, srv: Server) -> None:
    org = f"org_api_{tag()}"
    when = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
    first = await r(client.events.create(
        action="invoice.paid", organization=org,
        actor={"type": "user", "id": "ada", "name": "Ada", "email": "ada@example.com"},
        targets=[recalled.Target(type="invoice", id="inv_1")], metadata={"amount": 4200},
        occurred_at=when, ip_address="203.0.113.9", user_agent="pytest/1", idempotency_key=f"k-{org}"))
    assert isinstance(first, recalled.Event)
    assert first.organization == org and first.action == "invoice.paid"
    assert first.actor == recalled.Actor(type="user", id="ada", name="Ada", email="ada@example.com")
    assert first.targets == [recalled.Target(type="invoice", id="inv_1", name=None)]
    assert first.occurred_at == when and first.ip_address == "203.0.113.9" and first.user_agent == "pytest/1"
    assert first.idempotency_key == f"k-{org}" and first.hash.startswith("sha256:")
    assert first.raw["occurredAt"] == "2026-01-05T10:00:00.000Z"
    again = await r(client.events.create(
        action="invoice.paid", organization=org,
        actor={"type": "user", "id": "ada", "name": "Ada", "email": "ada@example.com"},
        targets=[{"type": "invoice", "id": "inv_1"}], metadata={"amount": 4200},
        occurred_at="2026-01-05T10:00:00Z", ip_address="203.0.113.9", user_agent="pytest/1",
        idempotency_key=f"k-{org}"))
    assert again.id == first.id  # deduplicated by the server
    batch = await r(client.events.create_batch(
        [{"action": f"invoice.line.{i}", "organization": org, "occurred_at": when + timedelta(minutes=i)}
         for i in range(1, 5)] + [{"action": "user.login", "organization": org, "actor": {"id": "bob"}}]))
    assert [e.seq for e in batch] == list(range(first.seq + 1, first.seq + 6))

    everything = await items(client.events.list(organization=org, limit=2))
    assert len(everything) == 6
    assert {e.id for e in everything} == {first.id, *(e.id for e in batch)}
    page = await first_page(client.events.list(organization=org, limit=2))
    assert len(page.data) == 2 and page.next_cursor and page.has_more
    nxt = await first_page(client.events.list(cursor=page.next_cursor, limit=2))
    assert [e.id for e in nxt.data] == [e.id for e in everything[2:4]]
    assert [e.id for e in (await r(page.next_page())).data] == [e.id for e in nxt.data]
    prefix = await items(client.events.list(organization=org, action="invoice.*"))
    assert len(prefix) == 5
    since = await items(client.events.list(organization=org, date_from=when + timedelta(minutes=2),
                                           date_to="2026-01-05"))
    assert sorted(e.action for e in since) == ["invoice.line.2", "invoice.line.3", "invoice.line.4"]
    tail = await items(client.events.list(organization=org, after_seq=first.seq, limit=2))
    assert [e.seq for e in tail] == [e.seq for e in batch]  # ascending, across pages

    found = await items(client.events.search("bob", organization=org))
    assert [e.action for e in found] == ["user.login"]
    assert (await r(client.events.retrieve(first.id))).raw == first.raw
    with pytest.raises(NotFoundError) as missing:
        await r(client.events.retrieve("evt_01ARZ3NDEKTSV4RRFFQ69G5FAV"))
    assert missing.value.status == 404 and missing.value.code == "NOT_FOUND" and missing.value.request_id
    with pytest.raises(ValidationError) as bad:
        await first_page(client.events.list(limit=500))
    assert bad.value.details == {"field": "limit"}
    with pytest.raises(ValidationError) as bad_q:
        await first_page(client.events.search('"unterminated'))
    assert bad_q.value.details["field"] == "q"
    verified = await r(client.verify())
    assert verified.valid and verified.first_invalid is None and verified.head is not None


async def _exports_actors_embed(client: Any, srv: Server, *, tmp: Path) -> None:
    org = f"org_exp_{tag()}"
    made = await r(client.events.create_batch(
        [{"action": "exp.x", "organization": org, "actor": {"id": f"carol-{org}", "name": "Carol"},
          "metadata": {"i": i}} for i in range(3)]))
    whole = await r(client.exports.fetch(format="json", organization=org))
    assert [e.id for e in whole.data] == [e.id for e in made]
    assert whole.head.seq >= made[-1].seq and whole.data[0].personal_salt
    nd = await r(client.exports.fetch(format="ndjson", organization=org))
    assert [e.id for e in nd.data] == [e.id for e in made]
    assert nd.head.seq >= whole.head.seq and nd.head.hash and nd.head.hash.startswith("sha256:")
    target = tmp / "export.csv"
    if isinstance(client, recalled.Recalled):
        with client.exports.stream(format="csv", organization=org) as export:
            assert export.chain_head is not None
            written = export.write_to(target)
        with client.exports.stream(format="ndjson", organization=org) as export:
            streamed = list(export.iter_events())
            assert export.head is not None
    else:
        async with client.exports.stream(format="csv", organization=org) as export:
            written = await export.write_to(target)
        async with client.exports.stream(format="ndjson", organization=org) as export:
            streamed = [e async for e in export.iter_events()]
            assert export.head is not None
    assert [e.id for e in streamed] == [e.id for e in made]
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert written == target.stat().st_size and rows[-1][0] == "head" and len(rows) == 1 + 3 + 1
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError):
        await r(client.exports.fetch(format="csv"))

    erased = await r(client.actors.delete(f"carol-{org}", organization=org))
    assert erased.actor_id == f"carol-{org}" and erased.anonymized_events == 3
    after = await r(client.events.retrieve(made[0].id))
    assert after.actor.id == "[deleted]" and after.metadata is None and after.hash == made[0].hash

    token = await r(client.embed.create_token(organization=org, ttl_seconds=900))
    assert token.token.startswith("emb_") and token.scopes == ["events:read"] and token.organization == org
    assert 0 < (token.expires_at - datetime.now(timezone.utc)).total_seconds() <= 900


async def _keys(client: Any, srv: Server) -> None:
    org = f"org_keys_{tag()}"
    made = await r(client.keys.create(name="reader", scopes=["events:read"], organization=org))
    assert made.key and made.key.startswith("rec_live_") and made.organization == org
    listed = await items(client.keys.list())
    assert made.id in {k.id for k in listed} and all(k.key is None for k in listed)
    reader = type(client)(api_key=made.key, base_url=srv.url,
                          spool=recalled.SpoolConfig(path=srv.workdir / f"reader-{org}.db"))
    with pytest.raises(PermissionDeniedError) as denied:
        await r(reader.events.create(action="not.allowed"))
    assert denied.value.code == "FORBIDDEN" and denied.value.details == {"scope": "events:write"}
    revoked = await r(client.keys.revoke(made.id))
    assert revoked.revoked_at is not None
    with pytest.raises(AuthenticationError) as gone:
        await first_page(reader.events.list())
    assert gone.value.code == "REVOKED_API_KEY" and gone.value.status == 401


async def _subscriptions(client: Any, srv: Server, *, receiver: Receiver) -> None:
    org = f"org_subs_{tag()}"
    path = f"/subs-{org}"
    subs = client.event_subscriptions
    made = await r(subs.create(url=receiver.url + path, organization=org, event_types=["sub.*"]))
    assert made.secret and made.event_types == ["sub.*"] and made.organization == org
    other = await r(subs.create(url=receiver.url + path + "-2", organization=org, disabled=True))
    assert other.state == "deactivated" and other.secret

    async def valid() -> bool:
        return (await r(subs.retrieve(made.id))).state == "valid"
    for _ in range(300):
        if await valid():
            break
        await asyncio.sleep(0.05)
    assert await valid()
    listed = await items(subs.list(limit=1))
    assert made.id in {s.id for s in listed} and other.id not in {s.id for s in listed}
    assert other.id in {s.id for s in await items(subs.list(state="deactivated", limit=1))}
    updated = await r(subs.update(made.id, description="renamed"))
    assert updated.description == "renamed" and updated.event_types == ["sub.*"]
    assert (await r(subs.secret(made.id))).secret == made.secret

    event = await r(client.events.create(action="sub.created", organization=org))
    attempts: list[Any] = []
    for _ in range(300):
        attempts = [a for a in await items(subs.attempts(made.id, limit=1)) if a.trigger != "test"]
        if attempts and attempts[0].status == "success":
            break
        await asyncio.sleep(0.05)
    assert attempts and attempts[0].status == "success" and attempts[0].event_id == event.id
    by_event = await items(client.events.attempts(event.id))
    assert {a.id for a in by_event} >= {attempts[0].id}
    resent = await r(client.events.resend(event.id, made.id))
    assert resent.trigger == "manual" and resent.message_id == attempts[0].message_id

    begin = datetime.now(timezone.utc) - timedelta(hours=1)
    job = await r(subs.replay_missing(made.id, begin=begin))
    assert job.type == "replay_missing" and job.event_subscription_id == made.id
    rec = await r(subs.recover(made.id, begin=begin))
    assert rec.type == "recover"
    assert {j.id for j in await items(subs.jobs(made.id))} >= {job.id, rec.id}
    assert (await r(subs.retrieve_job(made.id, job.id))).id == job.id
    example = await r(subs.send_example(made.id, event_type="sub.example"))
    assert example.trigger == "example"
    assert (await r(subs.test(made.id))).state == "new"
    deleted = await r(subs.delete(other.id))
    assert deleted.id == other.id
    with pytest.raises(NotFoundError):
        await r(subs.retrieve(other.id))


def test_events(mode, api_server, spool_path):
    run(mode, _events, api_server, spool=spool_path)


def test_exports_actors_and_embed_tokens(mode, api_server, spool_path, tmp_path):
    run(mode, _exports_actors_embed, api_server, spool=spool_path, tmp=tmp_path)


def test_keys_and_the_errors_of_a_key(mode, api_server, spool_path):
    run(mode, _keys, api_server, spool=spool_path)


def test_event_subscriptions(mode, api_server, spool_path):
    receiver = Receiver()
    try:
        run(mode, _subscriptions, api_server, spool=spool_path, receiver=receiver)
    finally:
        receiver.close()


def test_base_url_accepts_the_js_sdk_form_and_the_environment(api_server, spool_path, monkeypatch):
    monkeypatch.setenv("RECALLED_API_KEY", api_server.key)
    monkeypatch.setenv("RECALLED_BASE_URL", api_server.url + "/v1/")
    with recalled.Recalled(spool=recalled.SpoolConfig(path=spool_path)) as client:
        assert client.base_url == api_server.url
        assert client.verify().valid
    monkeypatch.delenv("RECALLED_BASE_URL")
    assert recalled.Recalled(spool=recalled.SpoolConfig(path=spool_path)).base_url == "http://127.0.0.1:8080"
    monkeypatch.delenv("RECALLED_API_KEY")
    with pytest.raises(ValueError, match="RECALLED_API_KEY"):
        recalled.Recalled()


def test_an_unreachable_server_is_an_api_connection_error(spool_path):
    client = recalled.Recalled(api_key="rec_live_aaaaaaaa_" + "b" * 32, base_url="http://127.0.0.1:9",
                               max_retries=0, spool=recalled.SpoolConfig(path=spool_path))
    with pytest.raises(recalled.APIConnectionError) as down:
        client.events.retrieve("evt_x")
    assert down.value.code == "NETWORK_ERROR" and down.value.status == 0
