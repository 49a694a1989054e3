"""The server's own audit events, at the store: atomic with the action, chained, never half done.

These run the real SqliteStore and its writer thread on a real file (no server), so a failure
can be injected between the action and its audit event.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from recalled_lite import audit
from recalled_lite.actions import SERVER_ACTION_PREFIX, AuditAction, is_server_action
from recalled_lite.audit import AdminAction, Caller
from recalled_lite.auth import new_key_record
from recalled_lite.config import EventsConfig
from recalled_lite.delivery.subscriptions import SubscriptionIndex, TypeFilter
from recalled_lite.errors import StorageError
from recalled_lite.intake import prepare_resolved
from recalled_lite.schemas import ActorIn, EventIn
from recalled_lite.storage.base import RecordNotFound
from recalled_lite.storage.sqlite.store import SqliteStore

SECRET = b"s" * 64


def caller(organization: str | None = None) -> Caller:
    _, admin = new_key_record("ops", frozenset({"admin"}), organization)
    return Caller.for_key(admin, ip_address="198.51.100.4", user_agent="unit/1", request_id="req_unit")


def test_the_audit_event_belongs_to_the_acting_keys_organization():
    _, record = new_key_record("x", frozenset({"events:read"}), "org_obj")
    (bound,) = AdminAction(caller("org_acting"), AuditAction.KEY_CREATED, audit.key_created(record)).prepare(None)
    (unbound,) = AdminAction(caller(None), AuditAction.KEY_CREATED, audit.key_created(record)).prepare(None)
    assert bound.organization == "org_acting" and unbound.organization is None
    assert '"organization":"org_obj"' in bound.metadata_json


def rows(path: Path, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def plain_event(action: str, actor_id: str | None = None) -> object:
    event = EventIn(action=action, actor=ActorIn(id=actor_id) if actor_id else None)
    return prepare_resolved(event, action, None, EventsConfig(), 1_700_000_000_000)


async def started(path: Path) -> SqliteStore:
    store = SqliteStore(path, secret=SECRET)
    store.start(asyncio.get_running_loop())
    return store


def test_key_creation_and_its_audit_event_commit_together(tmp_path):
    async def main():
        store = await started(tmp_path / "a.db")
        try:
            _, record = new_key_record("ci", frozenset({"events:write"}), "org_a")
            await store.create_key(record, audit=AdminAction(caller(), AuditAction.KEY_CREATED,
                                                             audit.key_created(record)))
            (result,) = await store.append_events([plain_event("after.audit")])
            assert result.event.seq == 2 and result.event.prev_hash is not None
            return await store.verify_chain()
        finally:
            store.close()

    verified = asyncio.run(main())
    assert verified["valid"] and verified["checked"] == 2
    (event,) = rows(tmp_path / "a.db", "SELECT action, organization, actor_type, actor_name, targets, metadata, "
                                       "ip_address, user_agent FROM events WHERE seq = 1")
    assert event[0] == "recalled.key.created" and event[1] is None  # the acting key is unbound
    assert '"organization":"org_a"' in event[5]
    assert event[2:4] == ("api_key", "ops")
    assert '"type":"api_key"' in event[4] and '"scopes":["events:write"]' in event[5]
    assert '"request_id":"req_unit"' in event[5]
    assert event[6:] == ("198.51.100.4", "unit/1")


def test_a_business_error_in_the_action_appends_nothing(tmp_path):
    async def main():
        store = await started(tmp_path / "b.db")
        try:
            await store.append_events([plain_event("before")])
            with pytest.raises(RecordNotFound):
                await store.revoke_key("key_missing", None, audit=AdminAction(
                    caller(), AuditAction.KEY_REVOKED, audit.key_revoked))
            assert store.head_seq == 1  # the in-memory head did not move
            (after,) = await store.append_events([plain_event("after")])
            return after.event.seq, await store.verify_chain()
        finally:
            store.close()

    seq, verified = asyncio.run(main())
    assert seq == 2 and verified["valid"]
    assert rows(tmp_path / "b.db", "SELECT count(*) FROM events WHERE action LIKE 'recalled.%'") == [(0,)]


class Exploding(AdminAction):
    def prepare(self, result):
        raise RuntimeError("audit bug")


def test_a_failing_audit_step_undoes_the_action_and_keeps_the_chain(tmp_path):
    async def main():
        store = await started(tmp_path / "c.db")
        try:
            await store.append_events([plain_event("before")])
            _, record = new_key_record("doomed", frozenset({"events:read"}), None)
            with pytest.raises(StorageError):
                await store.create_key(record, audit=Exploding(caller(), AuditAction.KEY_CREATED,
                                                               audit.key_created(record)))
            assert store.head_seq == 1
            (after,) = await store.append_events([plain_event("after")])
            return record.id, after.event.seq, await store.verify_chain()
        finally:
            store.close()

    key_id, seq, verified = asyncio.run(main())
    assert seq == 2 and verified["valid"] and verified["checked"] == 2
    assert rows(tmp_path / "c.db", "SELECT count(*) FROM api_keys WHERE id = ?", key_id) == [(0,)]


def test_revoking_a_revoked_key_is_not_audited_twice(tmp_path):
    async def main():
        store = await started(tmp_path / "d.db")
        try:
            _, record = new_key_record("twice", frozenset({"events:read"}), None)
            await store.create_key(record)
            for _ in range(2):
                await store.revoke_key(record.id, None, audit=AdminAction(
                    caller(), AuditAction.KEY_REVOKED, audit.key_revoked))
        finally:
            store.close()

    asyncio.run(main())
    assert rows(tmp_path / "d.db", "SELECT action FROM events") == [("recalled.key.revoked",)]


def test_an_erasure_is_audited_once_with_the_total_of_every_chunk(tmp_path):
    count = 1234  # more than two chunks of erasure.ERASE_CHUNK (500)

    async def main():
        store = await started(tmp_path / "e.db")
        try:
            await store.append_events([plain_event("doc.viewed", "u_erase") for _ in range(count)])
            erased = await store.erase_actor("u_erase", None, 1_700_000_000_000, audit=AdminAction(
                caller(), AuditAction.ACTOR_ERASED, audit.actor_erased("hmac-sha256:ref", None)))
            return erased, await store.verify_chain()
        finally:
            store.close()

    erased, verified = asyncio.run(main())
    assert erased == count and verified["valid"]
    (event,) = rows(tmp_path / "e.db", "SELECT seq, targets, metadata FROM events WHERE action = 'recalled.actor.erased'")
    assert event[0] == count + 1
    assert '"id":"hmac-sha256:ref"' in event[1] and f'"anonymized_events":{count}' in event[2]


def test_another_process_appending_audit_events_does_not_fork_the_chain(tmp_path):
    """`recalled-lite keys create` runs in its own process while the server runs: the server's
    writer must see the new chain head before its next append."""
    path = tmp_path / "f.db"

    async def main():
        server = await started(path)
        try:
            await server.append_events([plain_event("server.one")])
            cli = SqliteStore(path, secret=SECRET)  # a second connection, as the CLI has
            try:
                _, record = new_key_record("from-cli", frozenset({"events:read"}), None)
                cli.create_key_sync(record, audit=AdminAction(Caller.for_command("keys create"),
                                                              AuditAction.KEY_CREATED, audit.key_created(record)))
            finally:
                cli.close()
            (after,) = await server.append_events([plain_event("server.two")])
            return after.event.seq, await server.verify_chain()
        finally:
            server.close()

    seq, verified = asyncio.run(main())
    assert seq == 3 and verified["valid"] and verified["checked"] == 3
    assert rows(path, "SELECT seq, action, actor_type FROM events ORDER BY seq") == [
        (1, "server.one", None), (2, "recalled.key.created", "cli"), (3, "server.two", None)]


# -- pure rules -------------------------------------------------------------------------------


def test_every_audit_action_is_a_server_action():
    assert all(str(action).startswith(SERVER_ACTION_PREFIX) for action in AuditAction)
    assert is_server_action("recalled.key.created") and not is_server_action("recalledx.key")


@pytest.mark.parametrize("patterns,matches", [
    ([], False), (["*"], False), (["recalled.*"], True), (["recalled.key.*"], True),
    (["recalled.key.created"], True), (["recalled.subscription.*"], False), (["*", "recalled.*"], True),
])
def test_everything_does_not_include_the_servers_own_events(patterns, matches):
    assert TypeFilter(patterns).matches("recalled.key.created") is matches
    assert TypeFilter(patterns).matches("invoice.paid") is (not patterns or "*" in patterns)


def test_the_index_routes_admin_events_only_to_explicit_subscriptions():
    from recalled_lite.delivery.subscriptions import SubscriptionInfo

    def sub(sid: str, patterns: tuple[str, ...]) -> SubscriptionInfo:
        return SubscriptionInfo(id=sid, url="https://x.example/h", description="", event_types=patterns,
                                organization=None, disabled=False, state="valid", state_reason=None,
                                state_changed_at=0, secret="whsec_x", previous_secret=None,
                                previous_secret_expires_at=None, test_message_id=None, first_failure_at=None,
                                last_success_at=None, created_at=0, updated_at=0)

    index = SubscriptionIndex([sub("all", ()), sub("star", ("*",)), sub("admin", ("recalled.*",))])
    assert sorted(index.match(None, "invoice.paid")) == ["all", "star"]
    assert index.match("org_a", "recalled.key.revoked") == ["admin"]


def test_public_url_drops_credentials_and_the_query():
    assert audit.public_url("https://user:pw@hooks.example.com:8443/in/abc?token=t#x") == \
        "https://hooks.example.com:8443/in/abc"
    assert audit.public_url("http://[2001:db8::1]/h") == "http://[2001:db8::1]/h"


def test_an_update_that_changes_nothing_is_not_audited():
    from types import SimpleNamespace

    sub = SimpleNamespace(id="sub_1", url="https://x.example/h", description="d", event_types=("a.*",),
                          organization=None, disabled=False, state="valid")
    assert audit.subscription_updated(sub, sub) is None
    moved = SimpleNamespace(**{**vars(sub), "url": "https://y.example/h?k=secret"})
    described = audit.subscription_updated(moved, sub)
    assert described.metadata == {"changed": ["url"], "before": {"url": "https://x.example/h"},
                                  "after": {"url": "https://y.example/h"}}


def test_nul_in_a_key_name_never_fails_the_audit_event():
    _, record = new_key_record("bad\x00name", frozenset({"events:read"}), None)
    (event,) = AdminAction(caller(), AuditAction.KEY_CREATED, audit.key_created(record)).prepare(None)
    assert "\x00" not in event.targets_json and "\ufffd" in event.targets_json
