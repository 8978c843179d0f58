"""Prometheus metrics, counted from the same per-message event the log line comes from.

One registry per process (`Metrics.registry`), served with `/healthz` by
`MetricsServer` on `metrics.listen` (loopback by default). Durations are histograms
per stage, never averages. No custom collectors: every value is a plain counter,
gauge or histogram updated where it happens.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from contentfilter.events import MessageEvent
from contentfilter.model import Action, Outcome, ScanResult

NAMESPACE = "contentfilter"
SIZE_BUCKETS = (1e3, 4e3, 16e3, 64e3, 256e3, 1e6, 4e6, 16e6, 64e6)
TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The filter's metrics; `observe` counts one handled message."""

    def __init__(self, version: str = "", config_hash: str = "") -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)

        def counter(name: str, text: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, text, list(labels), namespace=NAMESPACE, registry=registry)

        self.messages = counter(
            "messages", "Messages handled, by main contents category", ["category"]
        )
        self.recipients = counter(
            "recipients",
            "Recipients handled, by the category and destiny of their verdict and the action",
            ["category", "destiny", "action"],
        )
        self.message_size = Histogram(
            "message_size_bytes",
            "Size of the messages handled",
            namespace=NAMESPACE,
            registry=registry,
            buckets=SIZE_BUCKETS,
        )
        self.stage_duration = Histogram(
            "stage_duration_seconds",
            "Time per stage of a message: decode, scanner_<name>, scan, policy, reinject, total",
            ["stage"],
            namespace=NAMESPACE,
            registry=registry,
            buckets=TIME_BUCKETS,
        )
        self.scanner_requests = counter(
            "scanner_requests",
            "Scanner answers by result: ok, cached, failed, skipped",
            ["scanner", "result"],
        )
        self.scanner_up = Gauge(
            "scanner_up",
            "1 when the scanner's last request was answered, 0 when it failed",
            ["scanner"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.cache = counter("cache_lookups", "Result cache lookups by result", ["result"])
        self.tempfails = counter(
            "tempfails",
            "Messages answered 4xx, by reason: scanner, next_hop, policy, disk_full, internal",
            ["reason"],
        )
        self.sessions_active = Gauge(
            "smtp_sessions_active", "SMTP sessions open", namespace=NAMESPACE, registry=registry
        )
        self.sessions_refused = counter(
            "smtp_sessions_refused",
            "SMTP connections refused, by reason: max_sessions, not_allowed",
            ["reason"],
        )
        self.build = Info(
            "build", "Version and loaded config", namespace=NAMESPACE, registry=registry
        )
        self.build.info({"version": version, "config_hash": config_hash})

    def observe(
        self,
        event: MessageEvent,
        outcome: Outcome,
        cache_enabled: bool,
        failure: str | None = None,
    ) -> None:
        """Count one message; `failure` says why no decision was reached (scanner,
        disk_full, internal), if so."""
        self.messages.labels(event.category.log_name).inc()
        for recipient in event.recipients:
            self.recipients.labels(
                recipient.ccat_main, recipient.destiny or "none", recipient.action
            ).inc()
        self.message_size.observe(event.size)
        for stage, seconds in event.elapsed:
            self.stage_duration.labels(stage).observe(seconds)
        for result in outcome.results:
            state = scanner_state(result)
            self.scanner_requests.labels(result.scanner, state).inc()
            if state in ("ok", "failed"):
                self.scanner_up.labels(result.scanner).set(state == "ok")
            if cache_enabled and state in ("ok", "cached"):
                self.cache.labels("hit" if result.cached else "miss").inc()
        reason = tempfail_reason(outcome, failure)
        if reason is not None:
            self.tempfails.labels(reason).inc()

    def session_refused(self, reason: str) -> None:
        self.sessions_refused.labels(reason).inc()


def scanner_state(result: ScanResult) -> str:
    """ok, cached, failed (down, timeout: `on_failure` applied) or skipped (too big...)."""
    if result.cached:
        return "cached"
    unavailable = f"{result.scanner} unavailable"
    if result.skipped is not None and (
        result.skipped.startswith("unavailable")
        or any(f.detail == unavailable for f in result.findings)
    ):
        return "failed"
    return "skipped" if result.skipped is not None else "ok"


def tempfail_reason(outcome: Outcome, failure: str | None = None) -> str | None:
    """Why the message was answered 4xx: `failure` when no decision was reached, else
    the first tempfailed recipient's reason (next_hop, policy)."""
    for disposition in outcome.dispositions:
        if disposition.action is not Action.TEMPFAILED:
            continue
        if disposition.by_next_hop:
            return "next_hop"
        if disposition.verdict is not None:
            return "policy"
        return failure or "internal"
    return None


def config_hash(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()[:16]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """`/metrics` (Prometheus text format) and `/healthz` on one address, in a thread."""

    def __init__(
        self, metrics: Metrics, host: str, port: int, healthy: Callable[[], bool] = lambda: True
    ) -> None:
        exporter = make_wsgi_app(metrics.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("PATH_INFO") == "/healthz":
                ok = healthy()
                start_response(
                    "200 OK" if ok else "503 Service Unavailable",
                    [("Content-Type", "text/plain; charset=utf-8")],
                )
                return [b"ok\n" if ok else b"unhealthy\n"]
            return exporter(environ, start_response)

        self.server = make_server(
            host, port, app, server_class=ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
