// The official @recalled/sdk 0.2.0, unmodified, against a real recalled-lite server.
//
//   RECALLED_BASE_URL=http://127.0.0.1:PORT/v1 RECALLED_API_KEY=rec_live_... node sdk_interop.mjs
//
// Exercises every method of the SDK (events.create/list/search/retrieve/emit/flush,
// exports.fetch, actors.delete, embed.createToken) and the React widget's feed hook
// (useEmbedEvents) and component (RecalledFeed), asserting on the values they return.
// Prints one line per check; exits 1 on the first failure. Driven by tests/test_sdk_interop.py.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Recalled, RecalledError, isRecalledError } from "@recalled/sdk";
import { RecalledFeed, useEmbedEvents } from "@recalled/sdk/react";
import React from "react";
import TestRenderer from "react-test-renderer";

const baseUrl = process.env.RECALLED_BASE_URL ?? process.argv[2];
const apiKey = process.env.RECALLED_API_KEY ?? process.argv[3];
if (!baseUrl || !apiKey) {
  console.error("usage: RECALLED_BASE_URL=... RECALLED_API_KEY=... node sdk_interop.mjs");
  process.exit(2);
}
globalThis.IS_REACT_ACT_ENVIRONMENT = true;
const { act } = TestRenderer;

let passed = 0;
async function check(name, fn) {
  try {
    await fn();
  } catch (err) {
    console.error(`FAIL - ${name}`);
    console.error(err);
    process.exit(1);
  }
  passed += 1;
  console.log(`ok ${passed} - ${name}`);
}

// A fetch that records what the server sent (the SDK only returns parsed JSON).
const raw = [];
async function recordingFetch(url, init) {
  const res = await fetch(url, init);
  raw.push({ url: String(url), method: init?.method ?? "GET", status: res.status, headers: res.headers,
             body: await res.clone().text() });
  return res;
}
const client = new Recalled({ apiKey, baseUrl, fetch: recordingFetch, timeoutMs: 30_000 });

const tag = randomBytes(4).toString("hex");
const org = `org_sdk_${tag}`;
const otherOrg = `org_sdk_other_${tag}`;
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const byTimeDesc = (a, b) => (a.occurredAt < b.occurredAt ? 1 : a.occurredAt > b.occurredAt ? -1 : b.seq - a.seq);

// --- events.create -------------------------------------------------------------------------
const inputs = [
  { action: "invoice.paid", actor: { type: "user", id: `ada_${tag}`, name: "Ada Lovelace", email: "ada@example.com" },
    targets: [{ type: "invoice", id: "inv_1", name: "Invoice 1" }], metadata: { amount: 4200, note: `quarterly ${tag}` },
    occurredAt: "2026-01-05T10:00:00Z" },
  { action: "invoice.sent", actor: { id: `ada_${tag}` }, targets: [{ type: "invoice", id: "inv_2" }],
    occurredAt: new Date("2026-01-05T10:00:00.000Z") },                       // same instant as above
  { action: "invoice.paid", actor: { id: `bob_${tag}`, name: "Bob" }, metadata: { note: `annual ${tag}` },
    occurredAt: "2026-01-06T23:59:59.999Z" },
  { action: "user.login", actor: { id: `bob_${tag}` }, occurredAt: "2026-01-07T00:00:00+02:00" },
  { action: "invoice.voided", actor: { id: `cy_${tag}` }, occurredAt: "2025-12-31T12:00:00Z" },  // back-dated
  { action: "user.logout", actor: { id: `cy_${tag}` }, metadata: { nested: { deep: `needle${tag}` } } },
  { action: "invoice.paid", actor: { id: `ada_${tag}` }, occurredAt: "2026-01-05T10:00:00Z" },
];
const created = [];
let elsewhere;
await check("events.create returns the stored Event object", async () => {
  for (const input of inputs) {
    const event = await client.events.create({ ...input, organization: org });
    assert.match(event.id, /^evt_[0-9A-HJKMNP-TV-Z]{26}$/);
    assert.match(event.projectId, /^proj_/);
    assert.equal(event.organization, org);
    assert.equal(event.action, input.action);
    assert.deepEqual(Object.keys(event.actor).sort(), ["email", "id", "name", "type"]);
    assert.equal(event.actor.id, input.actor.id);
    assert.equal(event.actor.name, input.actor.name ?? null);
    assert.deepEqual(event.targets, input.targets ? input.targets.map((t) => ({ name: null, ...t })) : null);
    assert.deepEqual(event.metadata, input.metadata ?? null);
    assert.match(event.occurredAt, ISO_MS);
    if (input.occurredAt) {
      assert.equal(event.occurredAt, new Date(input.occurredAt).toISOString());
    }
    assert.match(event.hash, /^sha256:[0-9a-f]{64}$/);
    assert.match(event.signature, /^hmac-sha256:[0-9a-f]{64}$/);
    if (created.length) assert.equal(event.seq, created.at(-1).seq + 1);
    created.push(event);
  }
  elsewhere = await client.events.create({ action: "invoice.paid", organization: otherOrg, actor: { id: `ada_${tag}` } });
  assert.equal(elsewhere.organization, otherOrg);
});

// --- events.list -----------------------------------------------------------------------------
async function walk(params, { repeatFilters = false } = {}) {
  const seen = [];
  let page = await client.events.list(params);
  for (let i = 0; i < 100; i += 1) {
    assert.ok(Array.isArray(page.data));
    assert.ok("nextCursor" in page);
    seen.push(...page.data);
    if (!page.nextCursor) return seen;
    // The README's pattern: the cursor alone continues the same filtered list.
    page = await client.events.list(repeatFilters ? { ...params, cursor: page.nextCursor }
                                                  : { cursor: page.nextCursor, limit: params.limit });
  }
  throw new Error("too many pages");
}
const expectIds = (pred) => created.filter(pred).sort(byTimeDesc).map((e) => e.id);

await check("events.list: organization, full cursor walk, newest first with seq tie-break", async () => {
  for (const limit of [1, 2, 3, 50]) {
    const got = await walk({ organization: org, limit });
    assert.deepEqual(got.map((e) => e.id), expectIds(() => true), `limit ${limit}`);
    const again = await walk({ organization: org, limit }, { repeatFilters: true });
    assert.deepEqual(again.map((e) => e.id), expectIds(() => true));
  }
});
await check("events.list: actorId", async () => {
  const got = await walk({ organization: org, actorId: `ada_${tag}`, limit: 2 });
  assert.deepEqual(got.map((e) => e.id), expectIds((e) => e.actor.id === `ada_${tag}`));
  const everywhere = await walk({ actorId: `ada_${tag}` });
  assert.equal(everywhere.length, 4);  // three here and one in the other organization
});
await check("events.list: action exact and prefix", async () => {
  const exact = await walk({ organization: org, action: "invoice.paid", limit: 1 });
  assert.deepEqual(exact.map((e) => e.id), expectIds((e) => e.action === "invoice.paid"));
  const prefix = await walk({ organization: org, action: "invoice.*", limit: 2 });
  assert.deepEqual(prefix.map((e) => e.id), expectIds((e) => e.action.startsWith("invoice.")));
});
await check("events.list: dateFrom / dateTo (Date objects, timestamps and bare dates, inclusive)", async () => {
  const a = await walk({ organization: org, dateFrom: new Date("2026-01-05T10:00:00Z"), dateTo: "2026-01-06" });
  assert.deepEqual(a.map((e) => e.id),
    expectIds((e) => e.occurredAt >= "2026-01-05T10:00:00.000Z" && e.occurredAt < "2026-01-07"));
  const b = await walk({ organization: org, dateTo: new Date("2026-01-01T00:00:00Z") });
  assert.deepEqual(b.map((e) => e.id), expectIds((e) => e.occurredAt <= "2026-01-01T00:00:00.000Z"));
  assert.equal(b.length, 1);
});
await check("events.list: limit, and a cursor sent with other filters is refused (VALIDATION_ERROR)", async () => {
  const page = await client.events.list({ organization: org, limit: 3 });
  assert.equal(page.data.length, 3);
  assert.equal(typeof page.nextCursor, "string");
  const last = await client.events.list({ organization: org, limit: 200 });
  assert.equal(last.nextCursor, null);
  await assert.rejects(client.events.list({ cursor: page.nextCursor, organization: otherOrg }),
    (err) => isRecalledError(err) && err.code === "VALIDATION_ERROR" && err.status === 400);
  await assert.rejects(client.events.list({ limit: 500 }),
    (err) => err instanceof RecalledError && err.code === "VALIDATION_ERROR" && err.details.field === "limit");
});

// --- events.search ---------------------------------------------------------------------------
async function searchAll(q, limit = 50) {
  const seen = [];
  let page = await client.events.search({ q, limit });
  for (let i = 0; i < 100; i += 1) {
    seen.push(...page.data);
    if (!page.nextCursor) return seen;
    page = await client.events.search({ q, limit, cursor: page.nextCursor });
  }
  throw new Error("too many pages");
}
await check("events.search: text, phrase, prefix, qualifiers, negation", async () => {
  const cases = [
    [`quarterly ${tag}`, created.filter((e) => e.metadata?.note === `quarterly ${tag}`)],
    [`quarterly${tag}`, []],
    [`"quarterly ${tag}"`, created.filter((e) => e.metadata?.note === `quarterly ${tag}`)],
    [`needle${tag}`, created.filter((e) => e.action === "user.logout")],
    [`org:${org} lovelace`, created.filter((e) => e.actor.name === "Ada Lovelace")],
    [`org:${org} action:invoice.*`, created.filter((e) => e.action.startsWith("invoice."))],
    [`org:${org} action:invoice.* -actor:ada_${tag}`,
      created.filter((e) => e.action.startsWith("invoice.") && e.actor.id !== `ada_${tag}`)],
    [`actor:ada_${tag} -org:${org}`, [elsewhere]],
    [`org:${org} target:invoice:inv_2`, created.filter((e) => e.targets?.some((t) => t.id === "inv_2"))],
    [`org:${org} occurred:<2026-01-01`, created.filter((e) => e.occurredAt < "2026-01-01")],
    [`org:${org} -annual -quarterly occurred:>=2026-01-05`,
      created.filter((e) => !e.metadata?.note && e.occurredAt >= "2026-01-05")],
  ];
  for (const [q, expected] of cases) {
    for (const limit of [1, 50]) {
      const got = await searchAll(q, limit);
      assert.deepEqual(got.map((e) => e.id), [...expected].sort(byTimeDesc).map((e) => e.id), `${q} (limit ${limit})`);
    }
  }
  const actorEverywhere = await searchAll(`actor:ada_${tag}`);
  assert.equal(actorEverywhere.length, 4);
});
await check("events.search: a malformed query is a VALIDATION_ERROR, not a 500", async () => {
  await assert.rejects(client.events.search({ q: '"unterminated' }),
    (err) => isRecalledError(err) && err.code === "VALIDATION_ERROR" && err.status === 400 &&
             err.details.field === "q" && typeof err.requestId === "string");
  const odd = await client.events.search({ q: "'; DROP TABLE events; -- (a OR b) NEAR*" });
  assert.deepEqual(odd.data, []);
});

// --- events.retrieve -------------------------------------------------------------------------
await check("events.retrieve returns the same Event; unknown ids are NOT_FOUND", async () => {
  for (const event of created) {
    assert.deepEqual(await client.events.retrieve(event.id), event);
  }
  await assert.rejects(client.events.retrieve("evt_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    (err) => isRecalledError(err) && err.code === "NOT_FOUND" && err.status === 404);
});

// --- events.emit + flush ---------------------------------------------------------------------
await check("events.emit queues, flush drains, the events are stored", async () => {
  const delivered = [];
  const queued = new Recalled({ apiKey, baseUrl, resilience: { onDelivered: (input, event) => delivered.push(event) } });
  for (let i = 0; i < 5; i += 1) {
    queued.events.emit({ action: `emitted.${i}`, organization: org, actor: { id: `emit_${tag}` }, metadata: { i } });
  }
  assert.equal(queued.events.queueSize(), 5);
  await queued.flush(20_000);
  assert.equal(queued.events.queueSize(), 0);
  assert.equal(delivered.length, 5);
  const stored = await walk({ organization: org, actorId: `emit_${tag}` });
  assert.deepEqual(stored.map((e) => e.action).sort(), ["emitted.0", "emitted.1", "emitted.2", "emitted.3", "emitted.4"]);
  assert.deepEqual(new Set(stored.map((e) => e.id)), new Set(delivered.map((e) => e.id)));
  created.push(...stored);
});

// --- exports.fetch ---------------------------------------------------------------------------
await check("exports.fetch csv: a streamed attachment ending with the chain head", async () => {
  const result = await client.exports.fetch({ organization: org });  // csv is the SDK's default
  assert.equal(result, undefined);  // the SDK parses JSON only; the file itself:
  const res = raw.at(-1);
  assert.ok(res.url.includes("/exports?format=csv"));
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/csv/);
  assert.match(res.headers.get("content-disposition"), /^attachment; filename="recalled-export-.*\.csv"$/);
  const lines = res.body.trimEnd().split("\r\n");
  assert.ok(lines[0].startsWith("record,seq,id,projectId,organization,action"));
  assert.equal(lines.length, created.length + 2);
  assert.ok(lines.at(-1).startsWith('"head",'));
  for (const event of created) assert.ok(res.body.includes(`"${event.id}"`));
});
await check("exports.fetch json: {data, nextCursor} with every event, in seq order, with verification fields", async () => {
  const result = await client.exports.fetch({ format: "json", organization: org });
  assert.equal(result.nextCursor, null);
  assert.deepEqual(result.data.map((e) => e.id), [...created].sort((a, b) => a.seq - b.seq).map((e) => e.id));
  for (const e of result.data) {
    assert.match(e.personalSalt, /^[0-9a-f]{32}$/);
    assert.match(e.personalDigest, /^sha256:/);
    assert.equal(e.erasedAt, null);
  }
  const body = JSON.parse(raw.at(-1).body);
  assert.deepEqual(Object.keys(body), ["data", "head"]);
  assert.ok(body.head.seq >= result.data.at(-1).seq);
  const filtered = await client.exports.fetch({ format: "json", organization: org, actorId: `bob_${tag}`,
                                                dateFrom: "2026-01-01", dateTo: new Date("2026-01-10T00:00:00Z") });
  assert.deepEqual(filtered.data.map((e) => e.id).sort(),
    created.filter((e) => e.actor.id === `bob_${tag}`).map((e) => e.id).sort());
});

// --- actors.delete ---------------------------------------------------------------------------
await check("actors.delete erases the actor's personal data and reports it", async () => {
  const before = created.filter((e) => e.actor.id === `ada_${tag}`);
  const result = await client.actors.delete({ id: `ada_${tag}`, organization: org });
  assert.deepEqual(Object.keys(result).sort(), ["actorId", "anonymizedEvents", "erasedAt"]);
  assert.equal(result.actorId, `ada_${tag}`);
  assert.equal(result.anonymizedEvents, before.length);
  assert.match(result.erasedAt, ISO_MS);
  for (const old of before) {
    const now = await client.events.retrieve(old.id);
    assert.equal(now.actor.id, "[deleted]");
    assert.equal(now.metadata, null);
    assert.equal(now.hash, old.hash);
    assert.equal(now.action, old.action);
  }
  assert.deepEqual((await client.events.list({ organization: org, actorId: `ada_${tag}` })).data, []);
  const untouched = await client.events.list({ organization: otherOrg, actorId: `ada_${tag}` });
  assert.deepEqual(untouched.data, [elsewhere]);  // scoped to the organization asked for
  const again = await client.actors.delete({ id: `ada_${tag}`, organization: org });
  assert.equal(again.anonymizedEvents, 0);
});

// --- embed.createToken + the React widget ----------------------------------------------------
let embed;
await check("embed.createToken returns {token, expiresAt, scopes}", async () => {
  embed = await client.embed.createToken({ organization: org, ttlSeconds: 900 });
  assert.deepEqual(Object.keys(embed).sort(), ["expiresAt", "scopes", "token"]);
  assert.match(embed.token, /^emb_/);
  assert.match(embed.expiresAt, ISO_MS);
  const ttl = (Date.parse(embed.expiresAt) - Date.now()) / 1000;
  assert.ok(ttl > 880 && ttl <= 900, String(ttl));
  assert.deepEqual(embed.scopes, ["events:read"]);
  const wide = await client.embed.createToken();
  assert.match(wide.token, /^emb_/);
});

async function settle(renderer, isDone) {
  for (let i = 0; i < 200; i += 1) {
    await act(() => new Promise((resolve) => setTimeout(resolve, 10)));
    if (isDone()) return;
  }
  throw new Error("the widget did not finish loading");
}

await check("useEmbedEvents (the widget's hook) loads pages and loadMore through the feed", async () => {
  let state;
  function Probe(props) {
    state = useEmbedEvents(props);
    return null;
  }
  let renderer;
  await act(async () => {
    renderer = TestRenderer.create(React.createElement(Probe, { embedToken: embed.token, baseUrl, pageSize: 3 }));
  });
  await settle(renderer, () => !state.loading);
  assert.equal(state.error, null);
  const expected = created.filter((e) => e.organization === org).sort(byTimeDesc).map((e) => e.id);
  assert.deepEqual(state.events.map((e) => e.id), expected.slice(0, 3));
  assert.equal(state.hasMore, true);
  for (let i = 0; i < 10 && state.hasMore; i += 1) {
    await act(async () => state.loadMore());
    await settle(renderer, () => !state.loading);
  }
  assert.deepEqual(state.events.map((e) => e.id), expected);
  assert.equal(state.hasMore, false);
  assert.ok(state.events.every((e) => e.organization === org));
  await act(async () => renderer.unmount());

  let searched;
  function SearchProbe(props) {
    searched = useEmbedEvents(props);
    return null;
  }
  await act(async () => {
    renderer = TestRenderer.create(React.createElement(SearchProbe,
      { embedToken: embed.token, baseUrl, pageSize: 20, search: `needle${tag}` }));
  });
  await settle(renderer, () => !searched.loading);
  assert.deepEqual(searched.events.map((e) => e.action), ["user.logout"]);
  await act(async () => renderer.unmount());

  let failed;
  function BadProbe(props) {
    failed = useEmbedEvents(props);
    return null;
  }
  await act(async () => {
    renderer = TestRenderer.create(React.createElement(BadProbe, { embedToken: embed.token + "x", baseUrl }));
  });
  await settle(renderer, () => !failed.loading);
  assert.match(failed.error.message, /invalid embed token/);
  await act(async () => renderer.unmount());
});

await check("<RecalledFeed /> renders the feed's events", async () => {
  let renderer;
  let loaded = null;
  await act(async () => {
    renderer = TestRenderer.create(React.createElement(RecalledFeed, {
      embedToken: embed.token, baseUrl, pageSize: 50, theme: "dark", showTargets: true,
      onLoad: (events) => { loaded = events; },
    }));
  });
  await settle(renderer, () => loaded !== null);
  const rows = renderer.root.findAll((node) => node.type === "li" && node.props.className === "rcld-row");
  assert.equal(rows.length, loaded.length);
  assert.ok(rows.length >= created.filter((e) => e.organization === org).length);
  const actions = renderer.root.findAll((node) => node.props.className === "rcld-action").map((n) => n.props.children);
  assert.ok(actions.includes("invoice.voided") && actions.includes("user.logout"));
  await act(async () => renderer.unmount());
});

// --- errors map to the SDK's codes -----------------------------------------------------------
await check("errors: FORBIDDEN for a missing scope, INVALID_API_KEY for an unknown key", async () => {
  const res = await fetch(`${baseUrl}/keys`, {
    method: "POST", headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ name: "sdk-write-only", scopes: ["events:write"] }),
  });
  assert.equal(res.status, 201);
  const writeOnly = new Recalled({ apiKey: (await res.json()).data.key, baseUrl });
  await assert.rejects(writeOnly.events.list({}), (err) => isRecalledError(err) && err.code === "FORBIDDEN" && err.status === 403);
  await assert.rejects(writeOnly.exports.fetch({ format: "json" }), (err) => err.code === "FORBIDDEN");
  await assert.rejects(writeOnly.actors.delete({ id: "x" }), (err) => err.code === "FORBIDDEN");
  await assert.rejects(writeOnly.embed.createToken({}), (err) => err.code === "FORBIDDEN");
  const unknown = new Recalled({ apiKey: "rec_live_zzzzzzzz_" + "q".repeat(32), baseUrl });
  await assert.rejects(unknown.events.create({ action: "x" }), (err) => err.code === "INVALID_API_KEY" && err.status === 401);
});

console.log(`all ${passed} SDK interop checks passed`);
