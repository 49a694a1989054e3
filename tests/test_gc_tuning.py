"""The server freezes what startup made and collects young objects less often (gc_tuning.py)."""

from __future__ import annotations

import gc
import json

from recalled_lite.gc_tuning import GEN0_THRESHOLD, tune_garbage_collector


def test_tuning_freezes_startup_objects_and_raises_the_young_threshold():
    before = gc.get_threshold()
    try:
        frozen = tune_garbage_collector()
        assert frozen == gc.get_freeze_count() > 1000
        assert gc.get_threshold() == (GEN0_THRESHOLD, before[1], before[2])
        # Frozen objects are out of every generation: a full collection no longer walks them.
        assert all(count < frozen for count in gc.get_count())
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_real_server_runs_tuned_and_says_so(make_server):
    srv = make_server("gc")
    with srv.client() as c:
        assert c.post("/v1/events", json={"action": "gc.checked"}).status_code == 200
    lines = [json.loads(line) for line in srv.log_text().splitlines() if line.startswith("{")]
    (listening,) = [entry for entry in lines if entry.get("msg") == "recalled-lite listening"]
    assert listening["gc_threshold"] == GEN0_THRESHOLD
    assert listening["gc_frozen_objects"] > 10_000  # the imports, the app, the routes
