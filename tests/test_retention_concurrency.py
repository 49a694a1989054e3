"""Issue #13, must-show 4: 16 concurrent writers while a purge runs lose no acknowledged event
that was not expired (intake latency under a purge is a bench row: bench/retention.py)."""

from __future__ import annotations

import asyncio
import time

from test_retention_server import CONFIG, days_ago, post_batch, wait_job

WRITERS = 16


def test_sixteen_writers_during_a_purge_lose_nothing(make_server):
    srv = make_server("concurrent", args=["--dev"], config_text=CONFIG.format(batch=100))
    with srv.client() as c:
        assert c.put("/v1/retention/rules", json={"action_prefix": "old.", "days": 30}).status_code == 200
        stored = post_batch(c, [{"action": "old.x", "organization": f"org_{i % 3}", "occurred_at": days_ago(40),
                                 "actor": {"id": f"u{i % 7}"}, "metadata": {"i": i}} for i in range(4000)])
        expired = {e["id"] for e in stored}

    acknowledged: list[str] = []
    failures: list[str] = []

    async def writer(n: int, stop: asyncio.Event) -> None:
        async with srv.async_client() as client:
            i = 0
            while not stop.is_set() or i < 20:
                # Live events, some of them under the same prefix as the expired ones.
                action = "old.live" if i % 2 else f"new.w{n}"
                r = await client.post("/v1/events", json={"action": action, "organization": f"org_{n % 3}",
                                                          "metadata": {"writer": n, "i": i}})
                if r.status_code == 200:
                    acknowledged.append(r.json()["data"]["id"])
                else:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                i += 1

    async def scenario() -> dict:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(writer(n, stop)) for n in range(WRITERS)]
        await asyncio.sleep(0.3)  # the writers are flowing before the purge starts
        async with srv.async_client() as client:
            r = await client.post("/v1/retention/run", json={"reason": "concurrency test"})
            assert r.status_code == 202, r.text
            job_id = r.json()["data"]["id"]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                job = (await client.get(f"/v1/retention/jobs/{job_id}")).json()["data"]
                if job["status"] != "running":
                    break
                await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
        return job

    job = asyncio.run(scenario())
    assert job["status"] == "completed" and job["purged"] == 4000, job
    assert job["batches"] == 40
    assert not failures, failures[:5]
    assert len(acknowledged) >= WRITERS * 20
    with srv.client() as c:
        wait_job(c, job["id"])
        seen: set[str] = set()
        after = 0
        while True:
            page = c.get("/v1/events", params={"after_seq": after, "limit": 200}).json()["data"]
            if not page:
                break
            seen |= {e["id"] for e in page}
            after = page[-1]["seq"]
        assert set(acknowledged) <= seen, f"{len(set(acknowledged) - seen)} acknowledged events lost"
        assert not (seen & expired)
        verified = c.get("/v1/events/verify").json()["data"]
        assert verified["valid"] and verified["purged"]["count"] == 4000, verified
