"""GET /metrics: one Prometheus registry per app, histograms for dashboards, gauges for alerts.

A registry of its own per app (never prometheus_client's global one), so that several apps
in one process (tests) do not clash. Every metric is listed in docs/operations.md.

Cost on the hot paths: a request does one dict lookup and one histogram observe; the writer
one observe per committed *group* (never per event); a webhook attempt one observe. What
needs the database (backlog, subscriptions, file sizes) is read at scrape time, on a reader
thread, by `Store.storage_gauges` (through the partial indexes of the open and failed
deliveries, never a scan of every message).
"""

from __future__ import annotations

import logging
import platform
from collections import Counter
from typing import Any, Callable, Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families

from . import __version__

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
log = logging.getLogger("recalled_lite")

# Every *_created series doubles the output and no dashboard here reads them. This is
# process-wide in prometheus_client, and this process has no other registry.
prometheus_client.disable_created_metrics()

# One label value for every request no route matched: a scanner trying a million paths must
# not make a million series.
UNMATCHED_ROUTE = "unmatched"

# Requests: intake answers in ~1 ms, exports stream for seconds.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Ops per group: 1 when idle, up to the writer's 512 cap under load.
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# COMMIT with synchronous=FULL is one or two fsyncs: sub-millisecond on NVMe, tens of ms on
# spinning or networked disks.
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A webhook attempt is bounded by webhooks.timeout_seconds (15 s by default).
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 300.0)

DELIVERY_STATUSES = ("pending", "sending", "failed")
SUBSCRIPTION_STATES = ("new", "valid", "invalid", "deactivated")


def route_template(scope: dict[str, Any]) -> str:
    """The matched route's path template ("/v1/events/{event_id}"), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return UNMATCHED_ROUTE
    # Inside a Mount the route's path is relative; root_path has grown by the mount's prefix.
    base = scope.get("app_root_path", "")
    root = scope.get("root_path", "")
    prefix = root[len(base):] if root.startswith(base) else root
    if not hasattr(route, "endpoint"):
        # A Mount whose app is not a router (static files): the mount is the template.
        return (prefix or path) + "/{path}"
    return prefix + path


def status_class(status: int) -> str:
    # 0: the response never started (the client left first).
    return f"{status // 100}xx" if status else "none"


class AppMetrics:
    def __init__(self, store: Any, providers: list[Callable[[], Any]] | None = None) -> None:
        self.store = store
        # Legacy providers (services) return Prometheus text lines or metric families.
        self.providers: list[Callable[[], Any]] = providers if providers is not None else []
        self.registry = CollectorRegistry(auto_describe=False)
        # Responses by status code: a plain Counter on the event loop thread (no lock).
        self.responses: Counter = Counter()
        self.request_seconds = Histogram(
            "recalled_http_request_duration_seconds",
            "HTTP request duration, from the first byte read to the last byte sent, by route "
            "template and status class.",
            ["route", "status_class"], buckets=REQUEST_BUCKETS, registry=self.registry)
        self.writer_group_ops = Histogram(
            "recalled_writer_group_ops",
            "Write operations per committed group (group commit: more under load).",
            buckets=GROUP_BUCKETS, registry=self.registry)
        self.writer_commit_seconds = Histogram(
            "recalled_writer_commit_duration_seconds",
            "Duration of each group's COMMIT (the fsyncs of synchronous=FULL).",
            buckets=COMMIT_BUCKETS, registry=self.registry)
        self.webhook_attempt_seconds = Histogram(
            "recalled_webhook_attempt_duration_seconds",
            "Webhook attempt duration (connect, send, response), by outcome.",
            ["outcome"], buckets=ATTEMPT_BUCKETS, registry=self.registry)
        self._request_children: dict[tuple[str, int], Any] = {}
        self._gauges: Any = None
        ProcessCollector(registry=self.registry)
        self.registry.register(_StateCollector(self))

    # -- hot paths ---------------------------------------------------------------------

    def observe_request(self, scope: dict[str, Any], status: int, seconds: float) -> None:
        self.responses[status] += 1
        template = route_template(scope)
        key = (template, status // 100)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.request_seconds.labels(template, status_class(status))
        child.observe(seconds)

    def observe_write_group(self, ops: int, commit_seconds: float) -> None:
        """Called on the writer thread after each COMMIT (histograms are thread-safe)."""
        self.writer_group_ops.observe(ops)
        self.writer_commit_seconds.observe(commit_seconds)

    def observe_attempt(self, seconds: float, delivered: bool) -> None:
        self.webhook_attempt_seconds.labels("success" if delivered else "failure").observe(seconds)

    # -- scrape ------------------------------------------------------------------------

    async def render(self) -> bytes:
        # Read first (async, on a reader thread), then render without an await in between:
        # two concurrent scrapes cannot mix their snapshots.
        try:
            self._gauges = await self.store.storage_gauges()
        except Exception as exc:  # a locked or failing database must not hide the other metrics
            log.warning("metrics: storage gauges unavailable: %s", exc)
            self._gauges = None
        try:
            return generate_latest(self.registry)
        finally:
            self._gauges = None


class _StateCollector:
    """What is read at scrape time: the store's counters and gauges, build info, services."""

    def __init__(self, metrics: AppMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        metrics = self.metrics
        store = metrics.store
        gauges = metrics._gauges
        if gauges is not None:
            yield GaugeMetricFamily("recalled_events_stored", "Events in the log (chain head seq).",
                                    value=gauges.events)
            yield CounterMetricFamily("recalled_writer_groups", "Write transactions committed by the single writer.",
                                      value=gauges.write_groups)
            yield CounterMetricFamily("recalled_writer_ops", "Write operations committed (several per group).",
                                      value=gauges.write_ops)
            backlog = GaugeMetricFamily(
                "recalled_webhook_backlog_messages",
                "Webhook deliveries not finished (pending: waiting for an attempt; sending: an attempt "
                "in flight or interrupted) and given up (failed), by status.", labels=["status"])
            for status in sorted(set(DELIVERY_STATUSES) | set(gauges.deliveries)):
                backlog.add_metric([status], gauges.deliveries.get(status, 0))
            yield backlog
            subscriptions = GaugeMetricFamily("recalled_webhook_subscriptions",
                                              "Event subscriptions by state.", labels=["state"])
            for state in sorted(set(SUBSCRIPTION_STATES) | set(gauges.subscriptions)):
                subscriptions.add_metric([state], gauges.subscriptions.get(state, 0))
            yield subscriptions
            files = GaugeMetricFamily("recalled_database_size_bytes",
                                      "Size of the database files on disk (database, wal).", labels=["file"])
            for name, size in sorted(gauges.files.items()):
                files.add_metric([name], size)
            yield files
        if store is not None:
            durability = sorted(store.durability.items())
            info = GaugeMetricFamily("recalled_storage_info",
                                     "What the write connection runs with, read back from the database.",
                                     labels=[k for k, _ in durability])
            info.add_metric([v for _, v in durability], 1)
            yield info
        engines = sorted(getattr(store, "engine_versions", {}).items())
        build = GaugeMetricFamily("recalled_build_info", "The running build: version, Python, database engine.",
                                  labels=["version", "python", *(k for k, _ in engines)])
        build.add_metric([__version__, platform.python_version(), *(v for _, v in engines)], 1)
        yield build
        responses = CounterMetricFamily("recalled_http_requests", "HTTP responses by status code.",
                                        labels=["status"])
        for status, count in sorted(metrics.responses.items()):
            responses.add_metric([str(status)], count)
        yield responses
        for provider in metrics.providers:
            yield from _families(provider())


def _families(provided: Any) -> Iterable[Metric]:
    """Services' metrics: metric families, or Prometheus text lines (parsed back)."""
    items = list(provided)
    text = [item for item in items if isinstance(item, str)]
    yield from (item for item in items if isinstance(item, Metric))
    if text:
        yield from text_string_to_metric_families("\n".join(text) + "\n")
