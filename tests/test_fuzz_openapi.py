"""Property-based fuzzing of the real server from its own /openapi.json, with schemathesis.

Bounded: at most FUZZ_SECONDS of generation (`--max-time`) and MAX_EXAMPLES per operation, two
workers. Checks: no 5xx (`not_a_server_error`), every status, content type, header and body as
documented (`status_code_conformance`, `content_type_conformance`,
`response_headers_conformance`, `response_schema_conformance`).

What is left out, and why:
- POST /v1/event_subscriptions and PATCH /v1/event_subscriptions/{id}: a fuzzed `url` is resolved
  through DNS (the SSRF guard) and a valid one gets a test delivery: that is traffic to the
  outside world. Their validation is covered by tests/test_webhook_api.py.
- The `coverage` phase: schemathesis 4.32 crashes inside its own generator on our EventIn schema
  (a KeyError in iter_coverage_cases); the examples, fuzzing and stateful phases run.
- `positive_data_acceptance` / `negative_data_rejection`: ids the fuzzer invents are 404 whatever
  their shape, and several rules (RFC 3339 bounds, search syntax) are not expressible in the
  schema, so "valid by schema" does not mean "accepted".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FUZZ_SECONDS = 45
MAX_EXAMPLES = 25
CHECKS = ",".join(["not_a_server_error", "status_code_conformance", "content_type_conformance",
                   "response_headers_conformance", "response_schema_conformance"])
EXCLUDED = ["post_v1_event_subscriptions", "patch_v1_event_subscriptions_sub_id"]


def test_fuzzing_finds_no_server_error_and_no_schema_violation(make_server):
    srv = make_server("fuzz", args=["--dev"])
    with srv.client() as c:  # some data to read, so reads return real events
        c.post("/v1/events/batch", json={"events": [
            {"action": f"fuzz.seed.{i}", "organization": "org_fuzz", "actor": {"id": f"u{i}"},
             "targets": [{"type": "doc", "id": f"d{i}"}], "metadata": {"i": i}} for i in range(20)]})
    cli = Path(sys.executable).with_name("schemathesis")
    command = [str(cli), "run", f"{srv.url}/openapi.json", "--url", srv.url,
               "-H", f"Authorization: Bearer {srv.key}", "--checks", CHECKS,
               "--phases", "examples,fuzzing,stateful", "--max-time", str(FUZZ_SECONDS),
               "-n", str(MAX_EXAMPLES), "--seed", "20261123", "-w", "2", "--request-timeout", "10",
               "--no-color", "--output-truncate", "true"]
    for operation_id in EXCLUDED:
        command += ["--exclude-operation-id", operation_id]
    result = subprocess.run(command, capture_output=True, text=True, timeout=FUZZ_SECONDS + 60,
                            cwd=srv.workdir)
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    assert " passed" in summary and "failure" not in summary.split("SUMMARY")[-1].lower(), summary
    assert "unhandled error" not in srv.log_text()
