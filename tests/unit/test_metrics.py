"""contentfilter.metrics: what one message adds, tempfails by reason, decoder limits,
next-hop replies, probes, reloads, quarantine, /healthz's verdict (no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contentfilter import config
from contentfilter.errors import NextHopRefused, NextHopUnavailable, ScannerUnavailable
from contentfilter.metrics import Metrics, decoder_limit
from contentfilter.model import FailureAction
from contentfilter.pipeline import Pipeline
from contentfilter.quarantine import Stats
from contentfilter.status import Check, health
from tests.unit.test_pipeline import FakeNextHop, FakeScanner, message


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(f"contentfilter_{name}", labels)
    return 0.0 if found is None else found


def counting(*scanners: FakeScanner, hop: FakeNextHop | None = None) -> tuple[Pipeline, Metrics]:
    metrics = Metrics()
    cfg = config.from_mapping({"scanners": {}})
    pipeline = Pipeline(cfg, list(scanners), hop or FakeNextHop(), metrics=metrics)
    return pipeline, metrics


async def test_a_scanner_that_must_tempfail_counts_as_a_scanner_tempfail() -> None:
    down = FakeScanner("clamav", error=ScannerUnavailable("clamav", "connection refused"))
    pipeline, metrics = counting(down)
    await pipeline.handle(message())
    assert sample(metrics, "tempfails_total", reason="scanner") == 1
    assert sample(metrics, "messages_total", category="UNCHECKED") == 1
    assert (
        sample(
            metrics, "recipients_total", category="UNCHECKED", destiny="none", action="TempFailed"
        )
        == 1
    )


async def test_a_failed_scanner_that_passes_mail_is_down_and_counted_failed() -> None:
    down = FakeScanner(
        "spamassassin",
        error=ScannerUnavailable("spamassassin", "refused"),
        on_failure=FailureAction.PASS,
    )
    pipeline, metrics = counting(down, FakeScanner("clamav"))
    await pipeline.handle(message())
    assert sample(metrics, "scanner_requests_total", scanner="spamassassin", result="failed") == 1
    assert sample(metrics, "scanner_up", scanner="spamassassin") == 0
    assert sample(metrics, "scanner_up", scanner="clamav") == 1
    assert sample(metrics, "tempfails_total", reason="scanner") == 0


async def test_the_next_hop_down_is_a_next_hop_tempfail() -> None:
    pipeline, metrics = counting(hop=FakeNextHop(error=NextHopUnavailable("refused")))
    await pipeline.handle(message())
    assert sample(metrics, "tempfails_total", reason="next_hop") == 1
    assert sample(metrics, "stage_duration_seconds_count", stage="reinject") == 1


@pytest.mark.parametrize(
    ("problem", "limit"),
    [
        ("Maximum decoding depth (14) exceeded: p003 (a.zip)", "max_depth"),
        ("Maximum MIME nesting depth (40) exceeded: p041", "max_mime_depth"),
        ("Maximum number of files (3000) exceeded: p002 (b.zip)", "max_files"),
        ("Exceeded storage quota (10485760 bytes): p002 (bomb.gz)", "max_total_bytes"),
        ("Member larger than max_member_size (1024 bytes): p004", "max_member_size"),
        ("Decoder killed after 60s without a result", "timeout"),
        ("Decoder crashed (signal 11)", "failure"),
        ("Decoder error (MemoryError)", "failure"),
        ("Damaged base64 (bad padding): p002", None),
        ("Encrypted MIME part: p002", None),
    ],
)
def test_each_decoder_problem_names_the_limit_that_was_reached(
    problem: str, limit: str | None
) -> None:
    assert decoder_limit(problem) == limit


def test_decoding_problems_count_each_limit_once_per_message() -> None:
    metrics = Metrics()
    metrics.decoded(
        [
            "Maximum number of files (5) exceeded: p002",
            "Maximum number of files (5) exceeded: p009",
            "Damaged base64 (bad padding): p003",
        ]
    )
    metrics.decoded(["Decoder crashed (signal 9)"])
    assert sample(metrics, "decoder_limit_hits_total", limit="max_files") == 1
    assert sample(metrics, "decoder_failures_total") == 1


async def test_the_next_hops_answers_are_counted_per_recipient_by_class() -> None:
    hop = FakeNextHop(refuse={"c@example.com"})
    pipeline, metrics = counting(hop=hop)
    await pipeline.handle(message("b@example.com", "c@example.com"))
    # b's copy, and our DSN to the sender for the refused c
    assert sample(metrics, "next_hop_replies_total", **{"class": "2xx"}) == 2
    assert len(hop.sent) == 2
    assert sample(metrics, "next_hop_replies_total", **{"class": "5xx"}) == 1
    down, metrics = counting(hop=FakeNextHop(error=NextHopUnavailable("refused")))
    await down.handle(message("b@example.com", "c@example.com"))
    assert sample(metrics, "next_hop_replies_total", **{"class": "none"}) == 2
    refused, metrics = counting(hop=FakeNextHop(error=NextHopRefused("refused", 421, "busy")))
    await refused.handle(message())
    assert sample(metrics, "next_hop_replies_total", **{"class": "4xx"}) == 1


async def test_the_time_data_took_to_arrive_is_the_receive_stage() -> None:
    pipeline, metrics = counting(FakeScanner("clamav"))
    await pipeline.handle(message(), received=0.3)
    await pipeline.handle(message())  # not through the SMTP server: no receive stage
    assert sample(metrics, "stage_duration_seconds_count", stage="receive") == 1
    assert sample(metrics, "stage_duration_seconds_bucket", stage="receive", le="0.25") == 0
    assert sample(metrics, "stage_duration_seconds_bucket", stage="receive", le="0.5") == 1


def check(scanner: str, up: bool, target: str = "", version: str = "") -> Check:
    return Check(f"clamd {target}", up, "", True, "", target, scanner, version)


def test_a_probe_sets_scanner_up_when_one_of_its_servers_answers_and_the_signature_age() -> None:
    metrics = Metrics()
    now = datetime(2026, 11, 30, 21, 0, tzinfo=UTC).timestamp()
    first = "ClamAV 1.0.7/27470/Sun Nov 29 21:00:00 2026"
    metrics.probed(
        [
            check("clamav", False, "/run/clamav/clamd.ctl"),
            check("clamav", True, "10.0.0.2:3310", first),
            check("spamassassin", False, "127.0.0.1:783"),
        ],
        now,
    )
    assert sample(metrics, "scanner_up", scanner="clamav") == 1
    assert sample(metrics, "scanner_up", scanner="spamassassin") == 0
    assert sample(metrics, "clamd_signatures_age_seconds", server="10.0.0.2:3310") == 86400
    version = {"server": "10.0.0.2:3310", "engine": "ClamAV 1.0.7"}
    assert sample(metrics, "clamd_version_info", **version, signatures="27470") == 1
    metrics.probed([check("clamav", True, "10.0.0.2:3310", "ClamAV 1.0.7/27471/x")], now)
    assert sample(metrics, "clamd_version_info", **version, signatures="27471") == 1
    assert sample(metrics, "clamd_version_info", **version, signatures="27470") == 0  # gone
    assert sample(metrics, "clamd_signatures_age_seconds", server="10.0.0.2:3310") == 86400


def test_reloads_are_counted_and_a_success_changes_the_config_hash() -> None:
    metrics = Metrics("1.0", "aaaa")
    started = sample(metrics, "config_last_reload_success_timestamp_seconds")
    assert started > 0
    metrics.reloaded(False)
    metrics.reloaded(True, "bbbb")
    assert sample(metrics, "config_reloads_total", result="failure") == 1
    assert sample(metrics, "config_reloads_total", result="success") == 1
    assert sample(metrics, "build_info", version="1.0", config_hash="bbbb") == 1
    assert sample(metrics, "build_info", version="1.0", config_hash="aaaa") == 0
    assert sample(metrics, "config_last_reload_success_timestamp_seconds") >= started


def test_the_quarantine_functions_count_what_they_are_told() -> None:
    metrics = Metrics()
    metrics.quarantined("virus", 1000)
    metrics.quarantined("virus", 500)
    metrics.quarantined("spam", 10)
    metrics.quarantine_failed()
    metrics.released("released", "link")
    metrics.notified("digest", "sent")
    metrics.quarantine_held(Stats(3, {"virus": 2, "spam": 1}), oldest_age=7200)
    assert sample(metrics, "quarantine_stored_total", category="virus") == 2
    assert sample(metrics, "quarantine_stored_bytes_total") == 1510
    assert sample(metrics, "quarantine_store_failures_total") == 1
    assert sample(metrics, "quarantine_releases_total", result="released", channel="link") == 1
    assert sample(metrics, "quarantine_notifications_total", kind="digest", result="sent") == 1
    assert sample(metrics, "quarantine_items", category="virus") == 2
    assert sample(metrics, "quarantine_oldest_item_age_seconds") == 7200


@pytest.mark.parametrize(
    ("states", "healthy", "status"),
    [
        ([(True, True), (True, False)], True, "ok"),
        ([(True, True), (False, False)], True, "degraded"),
        ([(False, True), (True, False)], False, "down"),
    ],
)
def test_healthz_is_unhealthy_only_when_a_critical_check_is_down(
    states: list[tuple[bool, bool]], healthy: bool, status: str
) -> None:
    checks = [
        Check(f"clamd 127.0.0.1:{i}", up, "connection refused", critical)
        for i, (up, critical) in enumerate(states)
    ]
    ok, body = health(checks)
    assert (ok, body["status"]) == (healthy, status)
    assert body["broken"] == [f"{c.name}: connection refused" for c in checks if not c.up]
