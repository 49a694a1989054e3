"""Property (SPEC §4.5): walking every page of GET /v1/events, under any filter and page size,
returns each matching event exactly once, newest occurredAt first with seq breaking ties — with
many events sharing a timestamp, back-dated events, and events arriving during the walk.

Runs against the real server; the expected result comes from a model of the filters applied to
the events the server returned when they were created."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_events import audit_events
from conftest import ServerProcess

ORGS = ["org_a", "org_b", "org_c"]
ACTORS = ["u1", "u2", "u3", "u4"]
ACTIONS = ["invoice.paid", "invoice.sent", "invoice.void", "user.login", "user.logout", "invoices.x"]
TARGETS = [("invoice", "i1"), ("invoice", "i2"), ("doc", "i1"), ("doc", "d7")]
# Few distinct instants (many collisions), spread over three days, sent in random order (back-dating).
TIMES = [f"2026-03-0{d}T{h:02d}:00:00.000Z" for d in (1, 2, 3) for h in (0, 12, 23)] + ["2026-03-02T23:59:59.999Z"]
N_EVENTS = 260
MAX_PAGES = 1000


def random_event(rng: random.Random) -> dict:
    body = {"action": rng.choice(ACTIONS), "occurred_at": rng.choice(TIMES)}
    if rng.random() < 0.9:
        body["organization"] = rng.choice(ORGS)
    if rng.random() < 0.85:
        body["actor"] = {"id": rng.choice(ACTORS)}
    if rng.random() < 0.7:
        chosen = rng.sample(TARGETS, rng.randint(1, 2))
        body["targets"] = [{"type": t, "id": i} for t, i in chosen]
    return body


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("pagination")).start()
    rng = random.Random(20260301)
    events: list[dict] = []
    with srv.client() as c:
        while len(events) < N_EVENTS:
            if rng.random() < 0.5:
                r = c.post("/v1/events", json=random_event(rng))
                assert r.status_code == 200, r.text
                events.append(r.json()["data"])
            else:
                batch = [random_event(rng) for _ in range(rng.randint(2, 30))]
                r = c.post("/v1/events/batch", json={"events": batch})
                assert r.status_code == 200, r.text
                events.extend(r.json()["data"])
        events.extend(audit_events(c))  # the server's own (the bootstrap key's): the model has every event
    yield World(srv, events)
    srv.kill()


class World:
    def __init__(self, srv, events):
        self.srv, self.events = srv, events

    def __iter__(self):
        return iter((self.srv, self.events))

    def __repr__(self) -> str:  # keeps hypothesis reports short
        return f"<{len(self.events)} events>"


def ordered(f: dict) -> dict:
    if "date_from" in f and "date_to" in f and f["date_to"] < f["date_from"]:
        f = {**f, "date_from": f["date_to"], "date_to": f["date_from"]}
    return f


def matches(e: dict, f: dict) -> bool:
    if "organization" in f and e["organization"] != f["organization"]:
        return False
    if "actor_id" in f and e["actor"]["id"] != f["actor_id"]:
        return False
    if "action" in f:
        a = f["action"]
        if a.endswith("*"):
            if not e["action"].startswith(a[:-1]):
                return False
        elif e["action"] != a:
            return False
    targets = [(t["type"], t["id"]) for t in e["targets"] or []]
    if "target_type" in f and "target_id" in f:
        if (f["target_type"], f["target_id"]) not in targets:
            return False
    elif "target_type" in f and not any(t == f["target_type"] for t, _ in targets):
        return False
    elif "target_id" in f and not any(i == f["target_id"] for _, i in targets):
        return False
    # Bounds: the RFC 3339 strings used here are all UTC with milliseconds: they compare as text.
    if "date_from" in f and e["occurredAt"] < f["date_from"]:
        return False
    if "date_to" in f and e["occurredAt"] > f["date_to"]:
        return False
    return True


filters_strategy = st.fixed_dictionaries({}, optional={
    "organization": st.sampled_from(ORGS),
    "actor_id": st.sampled_from(ACTORS),
    "action": st.sampled_from(ACTIONS + ["invoice.*", "invoice*", "user.*", "*"]),
    "target_type": st.sampled_from(["invoice", "doc"]),
    "target_id": st.sampled_from(["i1", "i2", "d7"]),
    "date_from": st.sampled_from(TIMES),
    "date_to": st.sampled_from(TIMES),
})


def walk(c, params: dict, limit: int, repeat_filters: bool, during=None) -> list[dict]:
    out: list[dict] = []
    r = c.get("/v1/events", params={**params, "limit": limit})
    for page in range(MAX_PAGES):
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["data"]) <= limit
        out.extend(body["data"])
        if body["nextCursor"] is None:
            return out
        assert len(body["data"]) == limit  # a short page is the last page
        if during is not None:
            during(page)
        nxt = {"cursor": body["nextCursor"], "limit": limit}
        if repeat_filters:
            nxt.update(params)
        r = c.get("/v1/events", params=nxt)
    raise AssertionError("more pages than events")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=filters_strategy, limit=st.sampled_from([1, 2, 3, 7, 50, 200]), repeat=st.booleans())
def test_every_matching_event_exactly_once_in_order(world, f, limit, repeat):
    srv, events = world
    f = ordered(f)
    expected = sorted((e for e in events if matches(e, f)), key=lambda e: (e["occurredAt"], e["seq"]), reverse=True)
    with srv.client() as c:
        got = walk(c, f, limit, repeat)
    assert [e["seq"] for e in got] == [e["seq"] for e in expected]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=filters_strategy, limit=st.sampled_from([1, 3, 50]), start=st.integers(0, N_EVENTS))
def test_tailing_with_after_seq_is_ascending_and_complete(world, f, limit, start):
    srv, events = world
    f = ordered(f)
    expected = sorted(e["seq"] for e in events if e["seq"] > start and matches(e, f))
    with srv.client() as c:
        got = walk(c, {**f, "after_seq": start}, limit, repeat_filters=False)
    assert [e["seq"] for e in got] == expected


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=filters_strategy, seed=st.integers(0, 10_000))
def test_events_arriving_during_a_walk_never_cause_a_skip_or_a_repeat(world, f, seed):
    """Back-dated and current events are written between pages: every event that existed when
    the walk started is seen exactly once, and no event is seen twice."""
    srv, events = world
    f = ordered(f)
    rng = random.Random(seed)
    before = {e["seq"] for e in events if matches(e, f)}
    with srv.client() as c:
        def insert(page: int) -> None:
            if page < 6:
                body = random_event(rng)
                r = c.post("/v1/events", json=body)
                assert r.status_code == 200
                events.append(r.json()["data"])

        got = walk(c, f, 5, repeat_filters=False, during=insert)
    seen = [e["seq"] for e in got]
    assert len(seen) == len(set(seen))
    assert before <= set(seen)
    keys = [(e["occurredAt"], e["seq"]) for e in got]
    assert keys == sorted(keys, reverse=True)


# --- back-dated and future-dated events over several blocks of the filter index ---------------
#
# Filters with keys are answered by walking events_keys newest seq first (storage/sqlite/reads.py,
# keyed_page), which is not list order. This log spans several 1024-seq blocks of the
# event_blocks summary, and a quarter of its events are back-dated (up to 60 days) or
# future-dated (up to limits.max_future_seconds): every filter combination must still list
# each matching event once, in order.

N_DATED = 2600


def dated_event(rng: random.Random, now_s: float) -> dict:
    from datetime import datetime, timezone

    body = random_event(rng)
    r = rng.random()
    if r < 0.15:
        body["occurred_at"] = datetime.fromtimestamp(now_s - rng.uniform(60, 60 * 86400), timezone.utc).isoformat()
    elif r < 0.25:
        body["occurred_at"] = datetime.fromtimestamp(now_s + rng.uniform(1, 3000), timezone.utc).isoformat()
    else:
        del body["occurred_at"]  # the receive time: in seq order
    return body


@pytest.fixture(scope="module")
def dated_world(tmp_path_factory):
    import time

    srv = ServerProcess(tmp_path_factory.mktemp("dated")).start()
    rng = random.Random(20261202)
    events: list[dict] = []
    with srv.client() as c:
        while len(events) < N_DATED:
            batch = [dated_event(rng, time.time()) for _ in range(rng.randint(1, 120))]
            r = c.post("/v1/events/batch", json={"events": batch})
            assert r.status_code == 200, r.text
            events.extend(r.json()["data"])
        events.extend(audit_events(c))
    yield World(srv, events)
    srv.kill()


def test_dated_world_is_out_of_order_across_blocks(dated_world):
    _, events = dated_world
    assert max(e["seq"] for e in events) > 2 * 1024
    by_seq = sorted(events, key=lambda e: e["seq"])
    by_time = sorted(events, key=lambda e: (e["occurredAt"], e["seq"]))
    assert by_seq != by_time
    assert any(e["occurredAt"] > e["receivedAt"] for e in events)      # future-dated
    assert sum(e["occurredAt"] < e["receivedAt"] for e in events) > 200  # back-dated


KEYED = ["organization", "actor_id", "action", "target_type", "target_id"]
COMBINATIONS = [tuple(k for i, k in enumerate(KEYED) if mask >> i & 1) for mask in range(1 << len(KEYED))]
VALUES = {"organization": ORGS, "actor_id": ACTORS, "action": ACTIONS + ["invoice.*", "invoice*", "user.*"],
          "target_type": ["invoice", "doc"], "target_id": ["i1", "i2", "d7"]}


@pytest.mark.parametrize("combo", COMBINATIONS, ids=lambda c: "+".join(c) or "none")
def test_every_filter_combination_lists_dated_events_once_in_order(dated_world, combo):
    srv, events = dated_world
    rng = random.Random("+".join(combo))
    with srv.client() as c:
        for limit in (7, 50):
            f = {k: rng.choice(VALUES[k]) for k in combo}
            if rng.random() < 0.5:
                f["date_to"] = max(e["occurredAt"] for e in events if e["occurredAt"] <= e["receivedAt"])
            expected = sorted((e for e in events if matches(e, f)),
                              key=lambda e: (e["occurredAt"], e["seq"]), reverse=True)
            got = walk(c, f, limit, repeat_filters=rng.random() < 0.5)
            assert [e["seq"] for e in got] == [e["seq"] for e in expected], f
