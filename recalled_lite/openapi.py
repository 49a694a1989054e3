"""GET /openapi.json (OpenAPI 3.1) and GET /docs (a self-contained page that renders it).

Body and response schemas come from the msgspec types the server actually decodes and encodes
(msgspec.json.schema_components), so the description cannot drift from the wire format. The
table below adds what types cannot say: routes, parameters, scopes, statuses.
tests/test_openapi.py checks that every route of the app is described, and
tests/test_fuzz_openapi.py fuzzes the real server from this document (schemathesis).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import __version__
from .api.common import unauthenticated
from .api.embed import EmbedTokenIn
from .api.reading import EventPage
from .api.retention import HoldIn, RuleIn, RunIn
from .schemas import BatchCreated, EventCreated, EventIn, EventOut, KeyCreateIn, KeyOut
from .webhook_schemas import (
    AttemptOut, ExampleIn, JobOut, RangeIn, RotateIn, SecretOut, SubscriptionCreateIn,
    SubscriptionOut, SubscriptionPatchIn,
)

REF = "#/components/schemas/{name}"


# -- response types that have no Struct in the handlers (they build dicts) -------------------


class ErrorDetail(Struct):
    code: str
    message: str
    details: dict[str, Any]  # always present; {} when there is nothing to add


class Error(Struct):
    error: ErrorDetail


class BatchIn(Struct):
    events: Annotated[list[EventIn], Meta(min_length=1, max_length=1000)]


class Status(Struct):
    status: str
    seq: int | None = None


class StatusOut(Struct):
    data: Status


class ChainHead(Struct):
    seq: int
    hash: str | None


class FirstInvalid(Struct):
    seq: int
    id: str | None
    reason: str


class Verification(Struct, rename="camel"):
    valid: bool
    checked: int
    head: ChainHead
    first_invalid: FirstInvalid | None


class VerificationOut(Struct):
    data: Verification


class EventOne(Struct):
    data: EventOut


class Erasure(Struct):
    actor_id: str
    anonymized_events: int
    erased_at: str


class ErasureOut(Struct):
    data: Erasure


class EmbedToken(Struct, rename="camel"):
    token: str
    expires_at: str
    scopes: list[str]
    organization: str | None


class EmbedTokenOut(Struct):
    data: EmbedToken


class KeyOne(Struct):
    data: KeyOut


class KeyPage(Struct):
    data: list[KeyOut]
    has_more: bool
    next_cursor: str | None


class SubscriptionOne(Struct):
    data: SubscriptionOut


class SubscriptionPage(Struct):
    data: list[SubscriptionOut]
    has_more: bool
    next_cursor: str | None


class SecretOne(Struct):
    data: SecretOut


class AttemptOne(Struct):
    data: AttemptOut


class AttemptPage(Struct):
    data: list[AttemptOut]
    has_more: bool
    next_cursor: str | None


class JobOne(Struct):
    data: JobOut


class JobPage(Struct):
    data: list[JobOut]
    has_more: bool
    next_cursor: str | None


class CheckpointInfo(Struct, rename="camel"):
    tree_size: int
    root_hash: str
    key_name: str
    created_at: str
    checkpoint: str  # the signed note (C2SP signed-note + tlog-checkpoint)


class CheckpointCreated(CheckpointInfo, rename="camel"):
    created: bool  # false: the tree had not grown, the latest checkpoint is returned


class CheckpointOne(Struct):
    data: CheckpointCreated


class CheckpointPage(Struct, rename="camel"):
    data: list[CheckpointInfo]
    next_cursor: str | None


class VerifierKey(Struct, rename="camel"):
    verifier_key: str
    created_at: str
    retired_at: str | None


class VerifierKeys(Struct):
    current: str | None
    keys: list[VerifierKey]


class VerifierKeysOut(Struct):
    data: VerifierKeys


class Consistency(Struct):
    from_: int = msgspec.field(name="from")
    to: int = 0
    proof: list[str] = msgspec.field(default_factory=list)


class ConsistencyOut(Struct):
    data: Consistency


class InclusionProof(Struct, rename="camel"):
    leaf_index: int
    leaf_hash: str
    tree_size: int
    proof: list[str]
    checkpoint: str


class InclusionProofOut(Struct):
    data: InclusionProof


class Receipt(Struct, rename="camel"):
    id: str
    event_id: str
    view_url: str = msgspec.field(name="view_url")  # snake_case: the name recalled.dev clients read
    hash: str = ""
    signature: str = ""
    leaf_index: int = 0
    leaf_hash: str = ""
    tree_size: int = 0
    proof: list[str] = msgspec.field(default_factory=list)
    checkpoint: str = ""
    created_at: str = ""


class ReceiptOut(Struct):
    data: Receipt


class ReceiptRevoked(Struct, rename="camel"):
    event_id: str
    revoked_receipts: int
    revoked_at: str | None


class ReceiptRevokedOut(Struct):
    data: ReceiptRevoked


class RetentionRuleOut(Struct):
    id: str
    organization: str | None
    action_prefix: str | None
    days: int
    created_at: str
    updated_at: str


class RetentionRuleOne(Struct):
    data: RetentionRuleOut


class RetentionRulePage(Struct):
    data: list[RetentionRuleOut]
    default_days: int
    min_days: int
    max_days: int


class LegalHoldOut(Struct):
    id: str
    organization: str
    actor_id: str | None
    action: str | None
    reason: str
    active: bool
    created_at: str
    released_at: str | None


class LegalHoldOne(Struct):
    data: LegalHoldOut


class LegalHoldPage(Struct):
    data: list[LegalHoldOut]
    has_more: bool
    next_cursor: str | None


class RetentionJobOut(Struct):
    id: str
    status: str
    trigger: str
    reason: str
    reference_time: str
    cursor_seq: int
    stop_seq: int
    scanned: int
    purged: int
    held: int
    batches: int
    error: str | None
    created_at: str
    updated_at: str
    finished_at: str | None


class RetentionJobOne(Struct):
    data: RetentionJobOut


class RetentionStatusOut(Struct):
    data: dict[str, Any]


TYPES = [Error, EventIn, BatchIn, EventCreated, BatchCreated, EventOne, EventPage, VerificationOut,
         ErasureOut, EmbedTokenIn, EmbedTokenOut, KeyCreateIn, KeyOne, KeyPage, SubscriptionCreateIn,
         SubscriptionPatchIn, SubscriptionOne, SubscriptionPage, SecretOne, RotateIn, AttemptOne,
         AttemptPage, RangeIn, JobOne, JobPage, ExampleIn, StatusOut, CheckpointOne, CheckpointPage,
         VerifierKeysOut, ConsistencyOut, InclusionProofOut, ReceiptOut, ReceiptRevokedOut,
         RuleIn, HoldIn, RunIn, RetentionRuleOne, RetentionRulePage, LegalHoldOne, LegalHoldPage,
         RetentionJobOne, RetentionStatusOut]


# -- parameters -------------------------------------------------------------------------------


def _q(name: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _p(name: str, description: str, max_length: int = 255) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": max_length}}


STR = {"type": "string"}
LIMIT = _q("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "page size")
CURSOR = _q("cursor", {"type": "string", "maxLength": 4096}, "opaque cursor from the previous page")
DATE = {"type": "string", "maxLength": 64,
        "description": "RFC 3339 with an offset, or a bare date YYYY-MM-DD"}
LIST_FILTERS = [
    _q("organization", {"type": "string", "maxLength": 128}, "exact organization"),
    _q("actor_id", {"type": "string", "maxLength": 255}, "exact actor id"),
    _q("action", {"type": "string", "maxLength": 256}, "exact action, or a prefix ending in *"),
    _q("target_type", {"type": "string", "maxLength": 255}, "target type"),
    _q("target_id", {"type": "string", "maxLength": 255}, "target id"),
    _q("date_from", DATE, "occurredAt >= (inclusive)"),
    _q("date_to", DATE, "occurredAt <= (inclusive; a bare date includes the whole day)"),
]
ATTEMPT_FILTERS = [
    _q("status", {"type": "string", "enum": ["pending", "sending", "success", "failed"]}, "attempt status"),
    _q("begin", DATE, "created at or after"), _q("end", DATE, "created at or before"), LIMIT, CURSOR,
]
SUB = _p("sub_id", "event subscription id (sub_...)")
EVENT = _p("event_id", "event id (evt_...)")
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "description": "same as the idempotency_key field",
               "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"}}

# -- operations -------------------------------------------------------------------------------
# (method, path) -> (tag, scope or None, summary, parameters, request body type or None,
#                    success status, success response: type | (media type, schema))

WEBHOOKS = "webhooks:manage"
RETENTION = "retention:manage"
OPERATIONS: dict[tuple[str, str], tuple] = {
    ("GET", "/healthz"): ("operations", None, "The process is alive", [], None, 200, StatusOut),
    ("GET", "/readyz"): ("operations", None, "The database is writable and every service is ready",
                         [], None, 200, StatusOut),
    ("GET", "/metrics"): ("operations", None, "Prometheus metrics", [], None, 200, ("text/plain", STR)),
    ("GET", "/openapi.json"): ("operations", None, "This document", [], None, 200,
                               ("application/json", {"type": "object"})),
    ("GET", "/docs"): ("operations", None, "A page that renders this document", [], None, 200,
                       ("text/html", STR)),
    ("POST", "/v1/events"): ("events", "events:write", "Ingest one event", [IDEMPOTENCY], EventIn, 200,
                             EventCreated),
    ("POST", "/v1/events/batch"): ("events", "events:write", "Ingest up to 1000 events, all or nothing",
                                   [], BatchIn, 200, BatchCreated),
    ("GET", "/v1/events"): ("events", "events:read", "List events, newest first",
                            [*LIST_FILTERS, LIMIT, CURSOR,
                             _q("after_seq", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                                "tail: events with seq > N, ascending")], None, 200, EventPage),
    ("GET", "/v1/events/search"): ("events", "events:read", "Full-text search with qualifiers",
                                   [_q("q", {"type": "string", "maxLength": 1024}, "the query"), LIMIT, CURSOR],
                                   None, 200, EventPage),
    ("GET", "/v1/events/verify"): ("events", "events:read", "Verify the chain (key not bound to an organization)",
                                   [_q("from_seq", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}, "first seq"),
                                    _q("to_seq", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}, "last seq")],
                                   None, 200, VerificationOut),
    ("GET", "/v1/events/{event_id}"): ("events", "events:read", "One event", [EVENT], None, 200, EventOne),
    ("GET", "/v1/exports"): ("events", "exports:read", "Export (streamed; ends with the chain head)",
                             [_q("format", {"type": "string", "enum": ["csv", "json", "ndjson"]}, "default csv"),
                              *LIST_FILTERS], None, 200,
                             (("text/csv", STR), ("application/json", {"type": "object"}),
                              ("application/x-ndjson", STR))),
    ("DELETE", "/v1/actors/{actor_id}"): ("events", "actors:delete", "Erase an actor's personal fields",
                                          [_p("actor_id", "actor id", 255),
                                           _q("organization", {"type": "string", "maxLength": 128},
                                              "only this organization")], None, 200, ErasureOut),
    ("POST", "/v1/embed/token"): ("embed", "embed:write", "Mint a read-only embed token", [], EmbedTokenIn,
                                  200, EmbedTokenOut),
    ("GET", "/v1/embed/events"): ("embed", "embed token", "The widget's feed (CORS; the token is the credential)",
                                  [_q("token", {"type": "string", "maxLength": 4096}, "embed token", True),
                                   LIMIT, CURSOR, _q("q", {"type": "string", "maxLength": 1024}, "search")],
                                  None, 200, EventPage),
    ("OPTIONS", "/v1/embed/events"): ("embed", None, "CORS preflight", [], None, 204, None),
    ("POST", "/v1/keys"): ("keys", "keys:manage", "Create a key (plaintext shown once)", [], KeyCreateIn, 201,
                           KeyOne),
    ("GET", "/v1/keys"): ("keys", "keys:manage", "List keys", [], None, 200, KeyPage),
    ("DELETE", "/v1/keys/{key_id}"): ("keys", "keys:manage", "Revoke a key", [_p("key_id", "key id")], None,
                                      200, KeyOne),
    ("POST", "/v1/event_subscriptions"): ("webhooks", WEBHOOKS, "Create a subscription (secret shown once)",
                                          [], SubscriptionCreateIn, 201, SubscriptionOne),
    ("GET", "/v1/event_subscriptions"): ("webhooks", WEBHOOKS, "List subscriptions",
                                         [_q("state", {"type": "string",
                                                       "enum": ["new", "valid", "invalid", "deactivated"]},
                                             "only this state (deactivated ones are hidden otherwise)"),
                                          _q("created_after", DATE, "created after"),
                                          _q("created_before", DATE, "created before"), LIMIT, CURSOR],
                                         None, 200, SubscriptionPage),
    ("GET", "/v1/event_subscriptions/{sub_id}"): ("webhooks", WEBHOOKS, "One subscription", [SUB], None, 200,
                                                  SubscriptionOne),
    ("PATCH", "/v1/event_subscriptions/{sub_id}"): ("webhooks", WEBHOOKS, "Change a subscription", [SUB],
                                                    SubscriptionPatchIn, 200, SubscriptionOne),
    ("DELETE", "/v1/event_subscriptions/{sub_id}"): ("webhooks", WEBHOOKS, "Delete a subscription", [SUB],
                                                     None, 200, SubscriptionOne),
    ("POST", "/v1/event_subscriptions/{sub_id}/test"): ("webhooks", WEBHOOKS, "Re-test the destination", [SUB],
                                                        None, 202, SubscriptionOne),
    ("GET", "/v1/event_subscriptions/{sub_id}/secret"): ("webhooks", WEBHOOKS, "The signing secret", [SUB],
                                                         None, 200, SecretOne),
    ("POST", "/v1/event_subscriptions/{sub_id}/secret/rotate"): ("webhooks", WEBHOOKS,
                                                                 "Rotate the secret (old one overlaps)", [SUB],
                                                                 RotateIn, 200, SecretOne),
    ("GET", "/v1/event_subscriptions/{sub_id}/attempts"): ("webhooks", WEBHOOKS, "Attempts to a subscription",
                                                           [SUB, *ATTEMPT_FILTERS], None, 200, AttemptPage),
    ("POST", "/v1/event_subscriptions/{sub_id}/recover"): ("webhooks", WEBHOOKS,
                                                           "Resend every failed message since begin (a job)",
                                                           [SUB], RangeIn, 202, JobOne),
    ("POST", "/v1/event_subscriptions/{sub_id}/replay_missing"): ("webhooks", WEBHOOKS,
                                                                  "Send every event never sent (a job)",
                                                                  [SUB], RangeIn, 202, JobOne),
    ("GET", "/v1/event_subscriptions/{sub_id}/jobs"): ("webhooks", WEBHOOKS, "Recover/replay jobs",
                                                       [SUB, LIMIT, CURSOR], None, 200, JobPage),
    ("GET", "/v1/event_subscriptions/{sub_id}/jobs/{job_id}"): ("webhooks", WEBHOOKS, "One job",
                                                                [SUB, _p("job_id", "job id")], None, 200, JobOne),
    ("GET", "/v1/events/{event_id}/attempts"): ("webhooks", WEBHOOKS, "Attempts for an event",
                                                [EVENT, _q("event_subscription_id", {"type": "string",
                                                                                     "maxLength": 255},
                                                           "only this subscription"), *ATTEMPT_FILTERS],
                                                None, 200, AttemptPage),
    ("POST", "/v1/events/{event_id}/event_subscriptions/{sub_id}/resend"): ("webhooks", WEBHOOKS,
                                                                           "Resend one event to one subscription",
                                                                           [EVENT, SUB], None, 202, AttemptOne),
    ("POST", "/v1/simulate/event_subscriptions/{sub_id}/send_example"): ("webhooks", WEBHOOKS,
                                                                         "Send an example event", [SUB],
                                                                         ExampleIn, 202, AttemptOne),
    # Merkle tree, checkpoints, proofs, receipts (docs/integrity.md §7-§10)
    ("GET", "/v1/checkpoint"): ("proofs", None, "The latest signed checkpoint (a C2SP signed note)", [], None,
                                200, ("text/plain", STR)),
    ("GET", "/checkpoint"): ("proofs", None, "The same, where C2SP tlog-tiles clients look for it", [], None,
                             200, ("text/plain", STR)),
    ("POST", "/v1/checkpoint"): ("proofs", "events:write", "Sign a checkpoint of the current tree now", [], None,
                                 200, CheckpointOne),
    ("GET", "/v1/checkpoint/key"): ("proofs", None, "The verifier keys: current and previous", [], None, 200,
                                    VerifierKeysOut),
    ("GET", "/v1/checkpoint/consistency"): ("proofs", None, "Consistency proof between two tree sizes (RFC 9162)",
                                            [_q("from", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                                                "the older tree size", True),
                                             _q("to", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                                                "the newer tree size (default: the latest checkpoint's)")],
                                            None, 200, ConsistencyOut),
    ("GET", "/v1/checkpoints"): ("proofs", None, "Every checkpoint signed, oldest first",
                                 [_q("after", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                                     "only checkpoints with treeSize > after"), LIMIT, CURSOR],
                                 None, 200, CheckpointPage),
    ("GET", "/v1/events/{event_id}/proof"): ("proofs", "events:read", "Inclusion proof of one event (RFC 9162)",
                                             [EVENT, _q("tree_size", {"type": "integer", "minimum": 1,
                                                                      "maximum": 2**63 - 1},
                                                        "to the checkpoint of this size (default: the latest)")],
                                             None, 200, InclusionProofOut),
    ("GET", "/tile/{tile_path}"): ("proofs", None, "C2SP tlog-tiles: tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>]",
                                   [_p("tile_path", "e.g. 0/x001/234.p/17 or entries/000", 200)], None, 200,
                                   ("application/octet-stream", {"type": "string", "format": "binary"})),
    ("GET", "/v1/events/{event_id}/receipt"): ("proofs", "events:read",
                                               "A public receipt page for one event (created on first call)",
                                               [EVENT], None, 200, ReceiptOut),
    ("DELETE", "/v1/events/{event_id}/receipt"): ("proofs", "events:read", "Revoke the event's receipts",
                                                  [EVENT], None, 200, ReceiptRevokedOut),
    # Retention (docs/retention.md)
    ("GET", "/v1/retention/rules"): ("retention", RETENTION, "Retention rules (a bound key: its organization's)",
                                     [], None, 200, RetentionRulePage),
    ("PUT", "/v1/retention/rules"): ("retention", RETENTION, "Set the rule of one scope (organization, prefix)",
                                     [], RuleIn, 200, RetentionRuleOne),
    ("DELETE", "/v1/retention/rules/{rule_id}"): ("retention", RETENTION, "Delete a rule",
                                                  [_p("rule_id", "rule id")], None, 200, RetentionRuleOne),
    ("POST", "/v1/retention/run"): ("retention", RETENTION, "Start a purge job now (key not bound)", [], RunIn,
                                    202, RetentionJobOne),
    ("GET", "/v1/retention/jobs/{job_id}"): ("retention", RETENTION, "One purge job (key not bound)",
                                             [_p("job_id", "job id")], None, 200, RetentionJobOne),
    ("GET", "/v1/retention/status"): ("retention", RETENTION, "Next and last run, purged per rule, oldest event",
                                      [], None, 200, RetentionStatusOut),
    ("POST", "/v1/legal_holds"): ("retention", RETENTION, "Place a legal hold", [], HoldIn, 201, LegalHoldOne),
    ("GET", "/v1/legal_holds"): ("retention", RETENTION, "Legal holds",
                                 [_q("include_released", {"type": "boolean"}, "released ones too")], None, 200,
                                 LegalHoldPage),
    ("DELETE", "/v1/legal_holds/{hold_id}"): ("retention", RETENTION, "Release a legal hold",
                                              [_p("hold_id", "hold id")], None, 200, LegalHoldOne),
    ("GET", "/r/{reference}"): ("proofs", None, "The receipt page (verifies in the browser)",
                                [_p("reference", "<receipt id>.<token>", 128)], None, 200, ("text/html", STR)),
    ("GET", "/r/static/{name}"): ("proofs", None, "The receipt page's script and style",
                                  [_p("name", "receipt.js or receipt.css", 64)], None, 200, ("text/plain", STR)),
}

ERRORS = {
    "400": "VALIDATION_ERROR: body or parameters invalid",
    "401": "UNAUTHORIZED, INVALID_API_KEY or REVOKED_API_KEY",
    "403": "FORBIDDEN: the key lacks the scope, or is bound to another organization",
    "404": "NOT_FOUND: unknown route or id, or an id of an organization the key may not see",
    "405": "METHOD_NOT_ALLOWED: the route exists, not with this method; the Allow header lists its methods",
    "408": "REQUEST_TIMEOUT: the request head did not arrive within server.header_timeout_seconds",
    "409": "IDEMPOTENCY_CONFLICT, or LEGAL_HOLD (an erasure a legal hold forbids; details.hold_id)",
    "413": "EVENT_TOO_LARGE or REQUEST_TOO_LARGE",
    "415": "UNSUPPORTED_MEDIA_TYPE: a body declared as something other than JSON (send application/json)",
    "414": "URI_TOO_LONG: the URL is longer than server.max_url_bytes",
    "431": "HEADERS_TOO_LARGE: the headers are larger than server.max_header_bytes",
    "429": "RATE_LIMITED (the key's rate limit; or, details.policy: addr = this client address's budget of "
           "requests without a valid key, lockout = repeated failures, embed / embed-pages = the embed token's) "
           "or PLAN_LIMIT_REACHED (monthly quota; details.limit)",
    "500": "INTERNAL_ERROR or DATABASE_ERROR (never with a stack trace)",
    "503": "UNAVAILABLE: shutting down, disk full, database locked",
}
_HEADER = {"schema": {"type": "string"}}
_REQUEST_ID = {"x-request-id": {"description": "yours, echoed, or a fresh req_...", "required": True,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 128}}}
_RATE_HEADERS = {
    "Retry-After": {"description": "seconds to wait", **_HEADER},
    "RateLimit-Reset": {"description": "seconds until a request is allowed (RATE_LIMITED)", **_HEADER},
    "RateLimit-Policy": {"description": '"<policy>";q=<burst>;w=<seconds> (key, addr, embed, embed-pages)', **_HEADER},
    "RateLimit": {"description": '"<policy>";r=0;t=<seconds>', **_HEADER},
}
# On every response of a rate-limited request (200s too): where its buckets stand.
_LIMIT_HEADERS = {
    "RateLimit-Policy": {"description": '"<policy>";q=<burst>;w=<seconds>, comma-separated (key, addr, embed, '
                                        'embed-pages), when a rate limit applies', **_HEADER},
    "RateLimit": {"description": '"<policy>";r=<left>;t=<seconds until full>, in the same order', **_HEADER},
}


def _error_response(status: str) -> dict:
    response: dict[str, Any] = {"description": ERRORS[status],
                                "content": {"application/json": {"schema": {"$ref": REF.format(name="Error")}}}}
    response["headers"] = {**_REQUEST_ID, **_LIMIT_HEADERS}
    if status == "429":
        response["headers"].update(_RATE_HEADERS)
    if status == "405":
        response["headers"]["Allow"] = {"description": "the route's methods", "required": True, **_HEADER}
    if status == "503":
        response["headers"]["Retry-After"] = {"description": "seconds to wait", "required": True, **_HEADER}
    return response


def _content(response: Any) -> dict | None:
    if response is None:
        return None
    if isinstance(response, tuple) and isinstance(response[0], tuple):
        return {media: {"schema": schema} for media, schema in response}
    if isinstance(response, tuple):
        return {response[0]: {"schema": response[1]}}
    return {"application/json": {"schema": {"$ref": REF.format(name=response.__name__)}}}


def build_document() -> dict[str, Any]:
    (_, components) = msgspec.json.schema_components(TYPES, ref_template=REF)
    # What the types cannot say: an event needs `action` or its alias `event_type`.
    components["EventIn"]["anyOf"] = [{"required": ["action"]}, {"required": ["event_type"]},
                                      {"required": ["eventType"]}]
    for name in ("idempotency_key", "idempotencyKey"):
        components["EventIn"]["properties"][name] = {
            "anyOf": [{"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"}, {"type": "null"}]}
    paths: dict[str, dict] = {}
    for (method, path), (tag, scope, summary, params, body, status, response) in OPERATIONS.items():
        operation: dict[str, Any] = {
            "operationId": f"{method.lower()}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}"
                           .replace(".", "_") or "root",
            "summary": summary,
            "tags": [tag],
            "parameters": params,
            "responses": {str(status): {"description": "success", "headers": {**_REQUEST_ID, **_LIMIT_HEADERS}}},
        }
        content = _content(response)
        if content is not None:
            operation["responses"][str(status)]["content"] = content
        if scope is None or scope == "embed token":
            operation["security"] = []
        else:
            operation["description"] = f"Scope: `{scope}` (or `admin`)."
        if scope == "embed token":
            operation["description"] = "No API key: the `token` query parameter is the credential."
        if body is not None:
            operation["requestBody"] = {"required": method != "POST" or body not in (RotateIn, ExampleIn, EmbedTokenIn),
                                        "content": {"application/json": {"schema": {"$ref": REF.format(name=body.__name__)}}}}
        for code in ERRORS:
            operation["responses"].setdefault(code, _error_response(code))
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "recalled-lite", "version": __version__,
                 "description": "Self-hosted audit log server. Every error is "
                                "`{\"error\": {\"code\", \"message\", \"details\"}}`; every response "
                                "carries `x-request-id`. See docs/api.md."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [{"name": t} for t in ("events", "embed", "webhooks", "keys", "proofs", "retention", "operations")],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "rec_live_<8 alnum>_<32+ alnum>"}},
        },
    }


_document: bytes | None = None
_DOCS_HTML = Path(__file__).with_name("docs.html")


async def openapi_json(request: Request) -> Response:
    global _document
    if _document is None:
        _document = msgspec.json.encode(build_document())
    return Response(_document, media_type="application/json", headers={"Cache-Control": "no-cache"})


async def docs_page(request: Request) -> Response:
    return Response(_DOCS_HTML.read_bytes(), media_type="text/html", headers={
        "Cache-Control": "no-cache",
        # Everything is inline and same-origin: no CDN, works offline.
        "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                                   "style-src 'unsafe-inline'; connect-src 'self'",
    })


routes = [
    Route("/openapi.json", unauthenticated(openapi_json), methods=["GET"]),
    Route("/docs", unauthenticated(docs_page), methods=["GET"]),
]
