"""A recover job's id range reaches every message id issued so far, also when the id clock
runs ahead of the wall clock (continue_after() met a stored id from a clock that was ahead:
another instance's, or ours before it was set back)."""

from __future__ import annotations

import time

from recalled_lite.ids import UlidGenerator, encode_ulid
from recalled_lite.storage import webhook_jobs


def bounds_counted(monkeypatch, generator: UlidGenerator) -> tuple[str, str]:
    monkeypatch.setattr(webhook_jobs, "ulids", generator)
    seen: list[tuple[str, str]] = []

    def count_failed(conn, sub_id, first_id, last_id):
        seen.append((first_id, last_id))
        return 0

    queries = webhook_jobs.JobQueries(head_seq=lambda c: 0, first_seq_for_replay=lambda c, b: None,
                                      count_failed=count_failed, never_sent=lambda c, s, q: [],
                                      event_chunk=lambda c, a, b, n: [])
    start = webhook_jobs.job_start(queries, None, "recover", "sub_1", 0, None, int(time.time() * 1000))
    assert seen == [(start.cursor_id, start.stop_id)]
    return start.cursor_id, start.stop_id


def test_the_range_reaches_ids_issued_ahead_of_the_clock(monkeypatch):
    generator = UlidGenerator()
    an_hour_ahead = (int(time.time() * 1000) + 3_600_000) << 80
    generator.continue_after(encode_ulid(an_hour_ahead))
    message_id = "whd_" + generator.new()  # what a failed delivery's row carries
    first, last = bounds_counted(monkeypatch, generator)
    assert first <= message_id <= last


def test_with_the_clock_in_step_the_range_ends_now(monkeypatch):
    generator = UlidGenerator()
    message_id = "whd_" + generator.new()
    first, last = bounds_counted(monkeypatch, generator)
    assert first <= message_id <= last
    assert last < "whd_" + encode_ulid((int(time.time() * 1000) + 60_000) << 80)
