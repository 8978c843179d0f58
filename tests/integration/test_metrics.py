"""The Prometheus endpoint after a known mix of messages through the real server,
clamd and spamd: the exact counts, and /healthz."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import RawSession, send
from tests.support.daemons import Clamd, FilterFactory, Spamd
from tests.support.messages import EICAR, clean, gtube, message
from tests.support.net import free_port

ALICE = "alice@sender.example"
BOB = "bob@recipient.example"
CAROL = "carol@recipient.example"


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((f"contentfilter_{name}", tuple(sorted(labels.items()))), 0.0)


def test_a_scrape_after_clean_eicar_and_gtube_shows_the_exact_counts(
    filter_factory: FilterFactory, clamd: Clamd, spamd: Spamd
) -> None:
    address = f"127.0.0.1:{free_port()}"
    process = filter_factory(
        clamd=clamd.address,
        spamd=spamd.address,
        config_text="server:\n  max_sessions: 1\n",
        extra_args=["--metrics", address],
    )
    repeated = clean()
    for data, recipients in [
        (repeated, [BOB, CAROL]),
        (message("EICAR", EICAR + b"\r\n"), [BOB]),
        (gtube(), [BOB]),
        (repeated, [BOB, CAROL]),  # the same bytes again: the scanners' cache answers
    ]:
        assert send(process.address, data, ALICE, recipients).data.startswith("250 ")
    with RawSession(process.address) as held:  # the one session allowed
        assert held.command("EHLO client.test").startswith("250")
        with RawSession(process.address) as refused:
            assert refused.greeting.startswith("421")
        samples = scrape(address)
    assert value(samples, "messages_total", category="CLEAN") == 2
    assert value(samples, "messages_total", category="INFECTED") == 1
    assert value(samples, "messages_total", category="SPAM") == 1
    clean_relayed = {"category": "CLEAN", "destiny": "pass", "action": "Relayed"}
    assert value(samples, "recipients_total", **clean_relayed) == 4
    virus = {"category": "INFECTED", "destiny": "discard", "action": "Discarded"}
    assert value(samples, "recipients_total", **virus) == 1
    assert (
        value(samples, "recipients_total", category="SPAM", destiny="pass", action="Relayed") == 1
    )
    assert value(samples, "message_size_bytes_count") == 4
    assert value(samples, "stage_duration_seconds_count", stage="total") == 4
    assert value(samples, "stage_duration_seconds_count", stage="scanner_clamav") == 4
    assert value(samples, "scanner_requests_total", scanner="clamav", result="ok") == 3
    assert value(samples, "scanner_requests_total", scanner="clamav", result="cached") == 1
    assert value(samples, "scanner_up", scanner="clamav") == 1
    assert value(samples, "scanner_up", scanner="spamassassin") == 1
    assert value(samples, "cache_lookups_total", result="hit") >= 2  # clamd and spamd
    assert value(samples, "smtp_sessions_active") == 1
    assert value(samples, "smtp_sessions_refused_total", reason="max_sessions") == 1
    assert value(samples, "tempfails_total", reason="scanner") == 0
    with urllib.request.urlopen(f"http://{address}/healthz", timeout=10) as response:
        assert (response.status, response.read()) == (200, b"ok\n")
