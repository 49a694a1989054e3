"""Configuration: defaults < TOML file < RECALLED_* environment < command-line flags.

Every key is a field below and appears in config.example.toml with its default.
A wrong value stops the start with a message that names the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from .errors import ConfigError

Port = Annotated[int, Meta(ge=0, le=65535)]


def _is_database_url(value: str) -> bool:
    from .storage.backend import is_database_url

    return is_database_url(value)

Positive = Annotated[int, Meta(ge=1)]


class ServerConfig(Struct, forbid_unknown_fields=True, omit_defaults=False):
    host: str = "127.0.0.1"
    port: Port = 8080
    # Allows private/loopback webhook destinations and short retry delays.
    dev: bool = False
    # Where the server secret lives. Empty = "<database path>.secret", or "./recalled.secret"
    # in the working directory with database.url (never in the database).
    secret_file: str = ""
    # Whole request bodies over this are refused with 413 before being read.
    max_request_bytes: Positive = 5 * 1024 * 1024
    # JSON nested deeper than this is refused before it is decoded.
    max_json_depth: Positive = 32
    # SIGTERM: how long in-flight requests get to finish.
    graceful_shutdown_seconds: Annotated[float, Meta(ge=0)] = 30.0
    # Cut keep-alive connections idle for longer than this.
    keepalive_seconds: Annotated[float, Meta(gt=0)] = 5.0
    # A request head (request line + headers) must arrive within this long of its first byte (or
    # of the connection opening), else 408 and the connection is closed: slow clients cannot
    # hold connections (recalled_lite/edge/; uvicorn has no such setting).
    header_timeout_seconds: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    # Longer request URLs (path + query) get 414; larger headers (all names + values) get 431.
    max_url_bytes: Annotated[int, Meta(ge=256)] = 16 * 1024
    max_header_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024
    # A whole request body must arrive within this long of the end of its head, else 408 and
    # close: a client trickling a body cannot hold a connection and a task for ever.
    body_timeout_seconds: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    # Open connections at most. At the cap, the connection idle the longest (>= 1 s) is closed to
    # make room, else the newcomer gets 503. 1024 keeps the worst case (every connection holding a
    # 64 KiB head and a 64 KiB body buffer) near 128 MB on a small 2-vCPU box, while being far
    # more than the 32-64 keep-alive clients one event loop serves at full speed.
    max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] = 1024
    # After a response that closes the connection while the client may still be sending (413,
    # 408, 400, shutdown), input is read and dropped for up to this long / this many bytes, so the
    # client reads the answer instead of a reset (a "lingering close").
    linger_seconds: Annotated[float, Meta(ge=0, le=60)] = 2.0
    linger_bytes: Annotated[int, Meta(ge=0)] = 16 * 1024 * 1024
    # Serve HTTPS directly with this certificate chain and private key (PEM paths; both or
    # neither). "" = plain HTTP, e.g. behind a reverse proxy that terminates TLS.
    tls_cert: str = ""
    tls_key: str = ""
    access_log: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Proxies (IPs or CIDRs) whose X-Forwarded-For is believed: behind a reverse proxy the TCP
    # peer is the proxy, and the client address in logs and audit events should be the real
    # client. Empty = the header is ignored (anyone can write it). recalled_lite/client_address.py
    trusted_proxies: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        from .client_address import parse_networks

        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {exc}") from None


class DatabaseConfig(Struct, forbid_unknown_fields=True, omit_defaults=False):
    path: str = "./recalled.db"
    # A postgresql:// URL selects PostgreSQL (several instances may share it; docs/scaling.md)
    # and `path` is then unused. Empty = SQLite at `path`. --db and RECALLED_DB accept either.
    url: str = ""
    # FULL fsyncs at every commit: an acknowledged event survives power loss.
    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    busy_timeout_ms: Annotated[int, Meta(ge=0)] = 5000
    readers: Annotated[int, Meta(ge=1, le=64)] = 4
    # 16: on the 5M-event bench database, 16 against 32 changed neither the list and search
    # p50s nor intake (the OS page cache holds the file either way) and cut peak RSS from
    # 209 to 138 MB (BENCHMARKS.md).
    cache_mb: Annotated[int, Meta(ge=1)] = 16
    # Cap on the database file in pages (PRAGMA max_page_count; 0 = no cap). Past it, writes get
    # 503 UNAVAILABLE as on a full disk. A guard against one file eating the disk; raise it and
    # restart to resume.
    max_page_count: Annotated[int, Meta(ge=0)] = 0

    def __post_init__(self) -> None:
        if self.url and not _is_database_url(self.url):
            raise ValueError("url: expected a postgresql:// URL (or empty for SQLite at database.path)")


class EventsConfig(Struct, forbid_unknown_fields=True, omit_defaults=False):
    max_metadata_bytes: Positive = 32 * 1024
    max_metadata_depth: Positive = 16
    # occurred_at further in the future than this is refused.
    max_future_seconds: Annotated[int, Meta(ge=0)] = 3600
    max_batch: Annotated[int, Meta(ge=1, le=10000)] = 1000


Delay = Annotated[float, Meta(ge=0, le=7 * 24 * 3600)]


class WebhooksConfig(Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Webhook delivery (SPEC §5; docs/webhooks.md). `server.dev` implies
    allow_private_destinations = true and dev_retry_schedule."""

    # Allow destinations on loopback/private/link-local/CGNAT addresses (SSRF guard off).
    allow_private_destinations: bool = False
    # Whole attempt (connect + send + response) must finish within this; else it failed.
    timeout_seconds: Annotated[float, Meta(gt=0, le=300)] = 15.0
    # Delays between attempts, after the first try; when exhausted the message is failed.
    retry_schedule: Annotated[list[Delay], Meta(max_length=50)] = msgspec.field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 36000])
    # The schedule used with --dev (server.dev = true).
    dev_retry_schedule: Annotated[list[Delay], Meta(max_length=50)] = msgspec.field(
        default_factory=lambda: [1, 2, 4, 8, 16])
    # Each scheduled delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    jitter: Annotated[float, Meta(ge=0, lt=1)] = 0.2
    # Deliveries in flight at once, over all subscriptions / per subscription.
    max_in_flight: Annotated[int, Meta(ge=1, le=4096)] = 64
    max_in_flight_per_subscription: Annotated[int, Meta(ge=1, le=1024)] = 4
    # A subscription whose attempts keep failing with no success for this long becomes invalid.
    disable_after_seconds: Annotated[float, Meta(gt=0)] = 432000.0
    # After POST .../secret/rotate the old secret keeps signing (a second signature) this long.
    secret_rotation_overlap_seconds: Annotated[float, Meta(ge=0)] = 86400.0
    # Receiver response bodies: stored up to max_response_body_bytes, never read past
    # max_response_read_bytes.
    max_response_body_bytes: Annotated[int, Meta(ge=0, le=1024 * 1024)] = 20480
    max_response_read_bytes: Annotated[int, Meta(ge=0, le=16 * 1024 * 1024)] = 65536
    # A delivery taken by the sender is leased to it for this long, renewed while it is held;
    # one whose lease ran out (lost in memory) is sent again with the same webhook-id. After a
    # crash or restart every unfinished delivery is sent again at once.
    lease_seconds: Annotated[float, Meta(gt=0)] = 120.0
    # Deliveries handed from intake to the sender in memory (beyond: read back from the table).
    handoff_limit: Annotated[int, Meta(ge=0, le=1_000_000)] = 4096
    # recover / replay_missing jobs process this many rows per write transaction.
    job_chunk_size: Annotated[int, Meta(ge=1, le=100_000)] = 500
    # A job pauses while its subscription has this many deliveries waiting.
    job_max_backlog: Annotated[int, Meta(ge=1)] = 10000
    # SIGTERM: in-flight deliveries get this long to finish; the rest are sent again on start.
    shutdown_grace_seconds: Annotated[float, Meta(ge=0, le=300)] = 5.0
    # Re-test `invalid` subscriptions on their own (never one made invalid by a 410 Gone): first
    # retest_initial_seconds after it became invalid, then doubling up to retest_max_seconds,
    # so a receiver that was down when the subscription was made heals without anyone noticing.
    retest_enabled: bool = True
    retest_initial_seconds: Annotated[float, Meta(gt=0)] = 60.0
    retest_max_seconds: Annotated[float, Meta(gt=0)] = 3600.0
    # The same with --dev (server.dev = true), so a developer sees a re-test within seconds.
    dev_retest_initial_seconds: Annotated[float, Meta(gt=0)] = 1.0
    dev_retest_max_seconds: Annotated[float, Meta(gt=0)] = 30.0
    # When an invalid subscription passes a test, queue what it missed since invalid_since as
    # a replay_missing job, so healing loses no events.
    replay_after_retest: bool = True
    # Recording an attempt's result, or a recover/replay job step, that keeps failing: retried
    # after failure_backoff_initial_seconds, doubling up to failure_backoff_max_seconds, and
    # quarantined (the delivery or job marked failed, with the error) after
    # quarantine_after_failures, so one poison item never blocks the work behind it.
    failure_backoff_initial_seconds: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    failure_backoff_max_seconds: Annotated[float, Meta(gt=0, le=86400)] = 60.0
    quarantine_after_failures: Annotated[int, Meta(ge=1, le=1000)] = 8


class KeyRateLimit(Struct, forbid_unknown_fields=True, omit_defaults=False):
    per_second: Annotated[float, Meta(ge=0)]
    # 0 = per_second rounded up (at least 1).
    burst: Annotated[int, Meta(ge=0)] = 0


class LimitsConfig(Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Rate limits per API key and monthly quotas per organization (docs/api.md#limits)."""

    # Requests per second per API key (token bucket); 0 = no rate limit.
    rate_limit_per_second: Annotated[float, Meta(ge=0)] = 0.0
    # Bucket size: requests a key may send at once after being idle; 0 = per_second rounded up.
    rate_limit_burst: Annotated[int, Meta(ge=0)] = 0
    # Per-key overrides, by key id ("key_...") or key prefix (the 8 characters after rec_live_).
    keys: dict[str, KeyRateLimit] = msgspec.field(default_factory=dict)
    # Events an organization may store per calendar month (UTC); 0 = unlimited.
    monthly_events_default: Annotated[int, Meta(ge=0)] = 0
    # Per-organization monthly quotas; "" is the quota of events without an organization.
    monthly_events: dict[str, Annotated[int, Meta(ge=0)]] = msgspec.field(default_factory=dict)


class AbuseConfig(Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Abuse limits on the public edge (recalled_lite/abuse.py; docs/security.md#abuse-limits).

    On by default with limits no honest client reaches: they bound what requests WITHOUT a
    valid key (no key, a malformed, unknown or revoked one, console sign-ins, the embed feed,
    receipt pages and the other public routes but /healthz) cost, per client address (behind a
    proxy, set server.trusted_proxies or every client shares the proxy's address)."""

    # Requests without a valid API key per client address (token bucket); 0 = no such limit.
    per_second: Annotated[float, Meta(ge=0)] = 20.0
    # Bucket size: such requests an address may send at once; 0 = per_second rounded up.
    burst: Annotated[int, Meta(ge=0)] = 100
    # Addresses (and embed tokens) remembered at most; past it the least recently seen is dropped
    # (it comes back with a full bucket). ~200 bytes each.
    max_tracked_addresses: Annotated[int, Meta(ge=16, le=10_000_000)] = 100_000
    # This many failed console sign-ins or INVALID_API_KEY answers from one address within
    # lockout_window_seconds lock it out for lockout_first_seconds; each further failure doubles
    # the lockout, up to lockout_max_seconds; a success resets. 0 = no lockouts.
    lockout_after_failures: Annotated[int, Meta(ge=0, le=1000)] = 5
    lockout_window_seconds: Annotated[float, Meta(gt=0, le=86400)] = 60.0
    lockout_first_seconds: Annotated[float, Meta(gt=0, le=86400)] = 1.0
    lockout_max_seconds: Annotated[float, Meta(gt=0, le=86400)] = 900.0
    # The embed feed (GET /v1/embed/events), per token, on top of the per-address limit.
    embed_token_per_second: Annotated[float, Meta(ge=0)] = 5.0
    embed_token_burst: Annotated[int, Meta(ge=0)] = 30
    # Largest `limit` the embed feed accepts (larger is a 400).
    embed_max_limit: Annotated[int, Meta(ge=1, le=200)] = 100
    # Pages fetched with a cursor (deeper than the first) per token per minute; 0 = no cap.
    embed_pages_per_minute: Annotated[int, Meta(ge=0)] = 30


class ConsoleConfig(Struct, forbid_unknown_fields=True, omit_defaults=False):
    """The web console at /console/ (docs/console.md)."""

    # Serve the console (and the / redirect to it). Off: those paths are 404 like any other.
    enabled: bool = True
    # Mark the session cookie Secure even on plain http: set this behind a TLS-terminating
    # proxy that does not send X-Forwarded-Proto (over https the cookie is always Secure).
    secure_cookies: bool = False
    # A session unused for this long ends; signing in again starts a new one.
    session_idle_hours: Annotated[float, Meta(gt=0, le=24 * 365)] = 12.0


class CheckpointsConfig(Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Signed checkpoints of the Merkle tree (docs/integrity.md §8)."""

    # The checkpoint's origin line (C2SP tlog-checkpoint), and the name of a signing key the
    # server creates. Witnesses pin it. "" = "recalled-lite/<projectId>".
    origin: str = ""
    # While events arrive, a new checkpoint is signed at most this often (plus on demand).
    interval_seconds: Annotated[float, Meta(gt=0, le=86400)] = 5.0
    # Where the Ed25519 signing key lives (0600, never in the database; RECALLED_SIGNING_KEY
    # overrides it). "" = "<database path>.signing-key", or "./recalled.signing-key" with
    # database.url.
    signing_key_file: str = ""


class ReceiptsConfig(Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Public receipt pages (docs/integrity.md §10)."""

    # Scheme and host that receipt `view_url`s start with, e.g. "https://audit.example.com",
    # for a server behind a proxy. "" = the scheme and Host of the request that made the receipt.
    base_url: str = ""


class RetentionConfig(Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Retention: rules, legal holds and the purge job (docs/retention.md)."""

    # Days an event is kept (counted from its occurredAt) when no rule is more specific.
    # 0 = for ever: nothing is purged unless a rule says so.
    default_days: Annotated[int, Meta(ge=0, le=36500)] = 0
    # No rule (PUT /v1/retention/rules) may keep events fewer days than this (0 = no floor).
    min_days: Annotated[int, Meta(ge=0, le=36500)] = 0
    # No rule may keep events longer than this (0 = no ceiling; with a ceiling, days = 0,
    # "for ever", is refused too).
    max_days: Annotated[int, Meta(ge=0, le=36500)] = 0
    # How often the purge job starts on its own (it also runs on POST /v1/retention/run).
    interval_minutes: Annotated[float, Meta(gt=0, le=7 * 24 * 60)] = 60.0
    # Events deleted per write transaction: intake waits behind at most one batch. 500: with
    # 1000, intake's p99 during a purge was 2.2-2.6x its p99 without in 3 of 4 runs once that
    # p99 had fallen to ~40 ms; with 500, 1.5-1.8x (BENCHMARKS.md).
    batch_size: Annotated[int, Meta(ge=1, le=10_000)] = 500

    def __post_init__(self) -> None:
        if self.max_days and self.min_days > self.max_days:
            raise ValueError("min_days is above max_days")
        if self.default_days and (self.default_days < self.min_days
                                  or (self.max_days and self.default_days > self.max_days)):
            raise ValueError("default_days is outside min_days..max_days")


class Config(Struct, forbid_unknown_fields=True, omit_defaults=False):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    events: EventsConfig = msgspec.field(default_factory=EventsConfig)
    webhooks: WebhooksConfig = msgspec.field(default_factory=WebhooksConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    abuse: AbuseConfig = msgspec.field(default_factory=AbuseConfig)
    console: ConsoleConfig = msgspec.field(default_factory=ConsoleConfig)
    checkpoints: CheckpointsConfig = msgspec.field(default_factory=CheckpointsConfig)
    receipts: ReceiptsConfig = msgspec.field(default_factory=ReceiptsConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    # Not in the file on purpose: secrets come from the environment.
    bootstrap_key: str | None = None
    secret: str | None = None
    signing_key: str | None = None  # RECALLED_SIGNING_KEY: the PRIVATE+KEY+... text

    def redacted(self) -> dict[str, Any]:
        """The effective configuration for the start-up log line, secrets replaced."""
        data = msgspec.to_builtins(self)
        for name in SECRET_FIELDS:
            if data.get(name) is not None:
                data[name] = "[redacted]"
        if self.database.url:
            data["database"]["url"] = self.db_description
        return data

    @property
    def db_path(self) -> Path:
        return Path(self.database.path)

    @property
    def db_location(self) -> Path | str:
        """What storage/backend.py opens: the PostgreSQL URL, or the SQLite path."""
        return self.database.url or self.db_path

    @property
    def db_description(self) -> str:
        """The location for logs and messages (a URL's password redacted)."""
        from .storage.backend import describe_location

        return describe_location(self.db_location)

    @property
    def secret_path(self) -> Path:
        if self.server.secret_file:
            return Path(self.server.secret_file)
        if self.database.url:
            # Never in the database: a file beside where the instance runs (or RECALLED_SECRET).
            return Path("recalled.secret")
        return Path(str(self.db_path) + ".secret")

    @property
    def signing_key_path(self) -> Path:
        if self.checkpoints.signing_key_file:
            return Path(self.checkpoints.signing_key_file)
        if self.database.url:
            return Path("recalled.signing-key")
        return Path(str(self.db_path) + ".signing-key")


# Config fields that hold secrets: never logged (Config.redacted).
SECRET_FIELDS = ("bootstrap_key", "secret")

_PATH_IN_ERROR = re.compile(r" - at `\$\.?([^`]*)`$")


def _key_from_error(message: str) -> tuple[str, str]:
    match = _PATH_IN_ERROR.search(message)
    if not match:
        return "", message
    return match.group(1).replace("[", ".").replace("]", ""), message[: match.start()]


def _decode(data: dict[str, Any], source: str) -> Config:
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        key, reason = _key_from_error(str(exc))
        unknown = re.match(r"Object contains unknown field `([^`]+)`", reason)
        if unknown:
            key = f"{key}.{unknown.group(1)}" if key else unknown.group(1)
            reason = "unknown key"
        raise ConfigError(f"{source}: {key or 'config'}: {reason}") from None
    if bool(config.server.tls_cert) != bool(config.server.tls_key):
        raise ConfigError(f"{source}: server.tls_cert and server.tls_key: set both (HTTPS) or neither (HTTP)")
    return config


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"environment: {name}: expected true/false, got {value!r}")


def load_config(
    config_file: str | None = None,
    *,
    environ: dict[str, str] | None = None,
    host: str | None = None,
    port: int | None = None,
    db: str | None = None,
    dev: bool | None = None,
    secret_file: str | None = None,
) -> Config:
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path = config_file or env.get("RECALLED_CONFIG")
    if path:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            data = msgspec.toml.decode(raw)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        _decode(data, path)  # name the bad key against the file itself
    source = path or "defaults"

    def put(section: str, key: str, value: Any) -> None:
        data.setdefault(section, {})[key] = value

    def put_location(value: str) -> None:
        # A URL or a path, whichever it is, replaces what the file said about both.
        if _is_database_url(value):
            put("database", "url", value)
        else:
            put("database", "path", value)
            put("database", "url", "")

    if "RECALLED_DB" in env:
        put_location(env["RECALLED_DB"])
    if "RECALLED_HOST" in env:
        put("server", "host", env["RECALLED_HOST"])
    if "RECALLED_PORT" in env:
        try:
            put("server", "port", int(env["RECALLED_PORT"]))
        except ValueError:
            raise ConfigError(f"environment: RECALLED_PORT: expected a port number, got {env['RECALLED_PORT']!r}") from None
    if "RECALLED_DEV" in env:
        put("server", "dev", _env_bool("RECALLED_DEV", env["RECALLED_DEV"]))
    if env.get("RECALLED_BOOTSTRAP_KEY"):
        data["bootstrap_key"] = env["RECALLED_BOOTSTRAP_KEY"]
    if env.get("RECALLED_SECRET"):
        data["secret"] = env["RECALLED_SECRET"]
    if env.get("RECALLED_SIGNING_KEY"):
        data["signing_key"] = env["RECALLED_SIGNING_KEY"]

    if host is not None:
        put("server", "host", host)
    if port is not None:
        put("server", "port", port)
    if db is not None:
        put_location(db)
    if dev:
        put("server", "dev", True)
    if secret_file is not None:
        put("server", "secret_file", secret_file)
    return _decode(data, f"{source} + environment + flags" if path else "environment/flags")
