"""Prometheus metrics, counted from the same per-message event the log line comes from.

One registry per process (`Metrics.registry`), served with `/healthz` by
`MetricsServer` on `metrics.listen` (loopback by default). Durations are histograms
per stage, never averages. No custom collectors: every value is a plain counter,
gauge or histogram declared in `Metrics.__init__` and updated where it happens, so
prometheus-client's multiprocess mode can take them as they are (each gauge says how
the values of several processes combine: `multiprocess_mode`).

Parts of the product that have no metrics object of their own call the small
functions here: `observe` (a message), `probed` (the periodic clamd/spamd checks),
`next_hop_reply` and `next_hop_connection` (the relay), `decoded` (the decoder's
problems), `reloaded` (a configuration reload), `quarantined`,
`quarantine_failed`, `quarantine_held`, `released` and `notified` (the quarantine).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    make_wsgi_app,
    multiprocess,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from contentfilter.events import MessageEvent
from contentfilter.model import Action, Outcome, ScanResult

if TYPE_CHECKING:
    from contentfilter.quarantine import Stats
    from contentfilter.status import Check

NAMESPACE = "contentfilter"
SIZE_BUCKETS = (1e3, 4e3, 16e3, 64e3, 256e3, 1e6, 4e6, 16e6, 64e6)
TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# The decoder's problem texts (contentfilter.decode) that mean a limit was reached,
# by the setting (decoder.*) that set it.
DECODER_LIMITS = (
    ("Maximum decoding depth", "max_depth"),
    ("Maximum MIME nesting depth", "max_mime_depth"),
    ("Maximum number of files", "max_files"),
    ("Exceeded storage quota", "max_total_bytes"),
    ("Member larger than max_member_size", "max_member_size"),
    ("Decoder killed after", "timeout"),
)


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
            "Time per stage of a message: receive, decode, scanner_<name>, scan, policy, reinject,"
            " total",
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

        def gauge(name: str, text: str, labels: Iterable[str] = (), mode: str = "all") -> Gauge:
            return Gauge(
                name,
                text,
                list(labels),
                namespace=NAMESPACE,
                registry=registry,
                multiprocess_mode=mode,  # type: ignore[arg-type]
            )

        self.scanner_up = gauge(
            "scanner_up",
            "1 when the scanner's last request or probe was answered, 0 when it failed",
            ["scanner"],
            "mostrecent",
        )
        self.clamd_signatures_age = gauge(
            "clamd_signatures_age_seconds",
            "Age of clamd's signature database (VERSION), at the last probe",
            ["server"],
            "mostrecent",
        )
        self.clamd_version = gauge(
            "clamd_version_info",
            "clamd's engine and signature database version (VERSION), value 1",
            ["server", "engine", "signatures"],
            "mostrecent",
        )
        self._clamd_versions: dict[str, tuple[str, str]] = {}
        self.decoder_limits = counter(
            "decoder_limit_hits",
            "Messages whose decoding reached a limit, by the decoder setting",
            ["limit"],
        )
        self.decoder_failures = counter(
            "decoder_failures",
            "Messages whose decoder process crashed or failed (UNCHECKED)",
        )
        self.next_hop_replies = counter(
            "next_hop_replies",
            "Next hop's answers per recipient by class: 2xx, 4xx, 5xx, none (no answer)",
            ["class"],
        )
        self.next_hop_connections = counter(
            "next_hop_connections",
            "Transactions to the next hop by connection: new or reused",
            ["connection"],
        )
        self.reloads = counter("config_reloads", "Configuration reloads by result", ["result"])
        self.last_reload = gauge(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (start or reload)",
            mode="max",
        )
        self.quarantine_stored = counter(
            "quarantine_stored",
            "Messages kept in the quarantine, by contents category",
            ["category"],
        )
        self.quarantine_stored_bytes = counter(
            "quarantine_stored_bytes", "Bytes of the messages kept in the quarantine"
        )
        self.quarantine_failures = counter(
            "quarantine_store_failures", "Messages the quarantine store failed to keep (451)"
        )
        self.quarantine_up = gauge(
            "quarantine_up",
            "1 when the quarantine store answered the last probe, 0 when not",
            mode="mostrecent",
        )
        self.quarantine_copies = gauge(
            "quarantine_copies",
            "Recipient copies in the quarantine by state (held, released...), at the last probe",
            ["state"],
            "mostrecent",
        )
        self.quarantine_bytes = gauge(
            "quarantine_bytes",
            "Bytes of the message bodies the quarantine keeps, at the last probe",
            mode="mostrecent",
        )
        self.quarantine_items = gauge(
            "quarantine_items",
            "Messages in the quarantine's index by contents category, at the last probe",
            ["category"],
            "mostrecent",
        )
        self.quarantine_oldest = gauge(
            "quarantine_oldest_item_age_seconds",
            "Age of the oldest message held in the quarantine, at the last look",
            mode="mostrecent",
        )
        self.quarantine_releases = counter(
            "quarantine_releases",
            "Releases from the quarantine by result and channel (cli, link, web, api)",
            ["result", "channel"],
        )
        self.notifications = counter(
            "quarantine_notifications",
            "Quarantine notices and digests sent, by kind and result",
            ["kind", "result"],
        )
        self.cache = counter("cache_lookups", "Result cache lookups by result", ["result"])
        self.tempfails = counter(
            "tempfails",
            "Messages answered 4xx, by reason: scanner, next_hop, policy, disk_full, quarantine,"
            " internal",
            ["reason"],
        )
        self.sessions_active = gauge("smtp_sessions_active", "SMTP sessions open", mode="livesum")
        self.sessions_refused = counter(
            "smtp_sessions_refused",
            "SMTP connections refused, by reason: max_sessions, not_allowed",
            ["reason"],
        )
        self.build = Info(
            "build", "Version and loaded config", namespace=NAMESPACE, registry=registry
        )
        self.build.info({"version": version, "config_hash": config_hash})
        self.version = version
        self.last_reload.set(time.time())

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

    def decoded(self, problems: Iterable[str]) -> None:
        """Count the limits one decoding reached (its `DecodedMessage.problems`)."""
        limits = {decoder_limit(problem) for problem in problems}
        for limit in limits - {None, "failure"}:
            self.decoder_limits.labels(limit).inc()
        if "failure" in limits:
            self.decoder_failures.inc()

    def next_hop_reply(self, code: int | None) -> None:
        """One recipient's answer from the next hop; None: no answer (connection lost...)."""
        self.next_hop_replies.labels(f"{code // 100}xx" if code else "none").inc()

    def next_hop_connection(self, reused: bool) -> None:
        self.next_hop_connections.labels("reused" if reused else "new").inc()

    def probed(self, checks: Iterable[Check], now: float | None = None) -> None:
        """The periodic checks: `scanner_up` (up when one of a scanner's servers
        answers), clamd's signature age and version, the quarantine store's counts."""
        from contentfilter.status import ClamdVersion

        up: dict[str, bool] = {}
        for check in checks:
            if check.key.startswith("quarantine."):
                self.quarantine_up.set(check.up)
                if check.stats is not None:
                    moment = datetime.now(UTC) if now is None else datetime_utc(now)
                    self.quarantine_held(check.stats, check.stats.oldest_age(moment) or 0.0)
            if not check.scanner:
                continue
            up[check.scanner] = up.get(check.scanner, False) or check.up
            if not check.version:
                continue
            parsed = ClamdVersion.parse(check.version)
            self._clamd_version(check.target, parsed.engine[:80], parsed.signatures[:40])
            age = parsed.age(None if now is None else datetime_utc(now))
            if age is not None:
                self.clamd_signatures_age.labels(check.target).set(age)
        for scanner, answered in up.items():
            self.scanner_up.labels(scanner).set(answered)

    def _clamd_version(self, server: str, engine: str, signatures: str) -> None:
        old = self._clamd_versions.get(server)
        if old is not None and old != (engine, signatures):
            # only the version running now is 1; set to 0, not removed: in multiprocess
            # mode a removed series stays in the files of the process that wrote it
            self.clamd_version.labels(server, *old).set(0)
        self._clamd_versions[server] = (engine, signatures)
        self.clamd_version.labels(server, engine, signatures).set(1)

    def reloaded(self, ok: bool, config_hash: str | None = None) -> None:
        """A configuration reload: counted by result; on success the loaded config's hash
        goes into `build_info` and the time into the last-success gauge."""
        self.reloads.labels("success" if ok else "failure").inc()
        if ok:
            self.last_reload.set(time.time())
            if config_hash is not None:
                self.build.info({"version": self.version, "config_hash": config_hash})

    def quarantined(self, category: str, size: int) -> None:
        """A message kept in the quarantine (`category`: its config name, e.g. virus)."""
        self.quarantine_stored.labels(category).inc()
        self.quarantine_stored_bytes.inc(size)

    def quarantine_failed(self) -> None:
        self.quarantine_failures.inc()

    def quarantine_held(self, stats: Stats, oldest_age: float | None = None) -> None:
        """What the store holds now (`QuarantineStore.stats`), and the oldest item's age."""
        for category, count in stats.by_category.items():
            self.quarantine_items.labels(category).set(count)
        for state, count in stats.by_state.items():
            self.quarantine_copies.labels(state).set(count)
        self.quarantine_bytes.set(stats.bytes_stored)
        if oldest_age is not None:
            self.quarantine_oldest.set(oldest_age)

    def released(self, result: str, channel: str) -> None:
        """A release: `result` released, refused, failed...; `channel` cli, link, web, api."""
        self.quarantine_releases.labels(result, channel).inc()

    def notified(self, kind: str, result: str) -> None:
        """A notice or digest sent (`kind`: notice, digest; `result`: sent, failed)."""
        self.notifications.labels(kind, result).inc()


class CollectedMetrics:
    """`/metrics` of a supervisor and its workers.

    The workers count into files in `directory` (prometheus-client's multiprocess
    mode); the supervisor adds what only it knows, from `own` (its in-process
    Metrics): the reloads and the loaded configuration, and, once its /healthz has
    run the checks (`probed`), the scanners' and the quarantine's state as found
    there (replacing the workers' samples of the same name and labels).
    """

    OWN = ("contentfilter_config_reloads", "contentfilter_build")
    PROBED = (
        "contentfilter_scanner_up",
        "contentfilter_clamd_signatures_age_seconds",
        "contentfilter_clamd_version_info",
    )
    PROBED_GAUGES = "contentfilter_quarantine_"  # the store's state: every such gauge

    def __init__(self, directory: str, own: Metrics) -> None:
        self.registry = CollectorRegistry()
        self.probed = False
        self.registry.register(_Merged(directory, own.registry, self._mine))

    def _mine(self, family: Metric) -> bool:
        if family.name in self.OWN:
            return True
        if not self.probed:
            return False
        gauge = family.type == "gauge" and family.name.startswith(self.PROBED_GAUGES)
        return gauge or family.name in self.PROBED


class _Merged(Collector):
    """The workers' families, with some of another registry's merged in: a sample of
    the other registry replaces the workers' with the same name and labels."""

    def __init__(
        self, directory: str, own: CollectorRegistry, mine: Callable[[Metric], bool]
    ) -> None:
        self.workers = multiprocess.MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]
        self.own = own
        self.mine = mine

    def collect(self) -> Iterable[Metric]:
        every = {f.name: f for f in self.own.collect()}
        own = {name: f for name, f in every.items() if self.mine(f) and f.samples}
        families = []
        for family in self.workers.collect():  # type: ignore[no-untyped-call]
            every.pop(family.name, None)
            mine = own.pop(family.name, None)
            if mine is not None:
                replaced = {(s.name, tuple(sorted(s.labels.items()))) for s in mine.samples}
                family.samples = mine.samples + [
                    s
                    for s in family.samples
                    if (s.name, tuple(sorted(s.labels.items()))) not in replaced
                ]
            families.append(family)
        for name, family in every.items():  # no worker has a sample yet: name it all
            if name not in own:
                family.samples = []
            families.append(family)
        return families


def decoder_limit(problem: str) -> str | None:
    """The decoder setting a problem text says was reached; "failure" for a crashed or
    failed decoder process; None for damage in the message itself."""
    for start, limit in DECODER_LIMITS:
        if problem.startswith(start):
            return limit
    if problem.startswith(("Decoder crashed", "Decoder error", "Decoder ")):
        return "failure"
    return None


def datetime_utc(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


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


Health = Callable[[], tuple[bool, dict[str, object]]]


def _always_healthy() -> tuple[bool, dict[str, object]]:
    return True, {"status": "ok", "broken": [], "checks": []}


class MetricsServer:
    """`/metrics` (Prometheus text format) and `/healthz` on one address, in a thread.

    `/healthz` answers 200 or 503 with the JSON body `health` returns; a fault in
    `health` itself is a 503 naming it.
    """

    def __init__(
        self,
        metrics: Metrics | CollectedMetrics,
        host: str,
        port: int,
        health: Health = _always_healthy,
    ) -> None:
        exporter = make_wsgi_app(metrics.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("PATH_INFO") != "/healthz":
                return exporter(environ, start_response)
            try:
                ok, body = health()
            except Exception as error:
                reason = f"healthz: internal error ({type(error).__name__})"
                ok, body = False, {"status": "down", "broken": [reason], "checks": []}
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
            )
            return [json.dumps(body).encode() + b"\n"]

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
