"""The Prometheus endpoint after a known mix of messages through the real server,
clamd and spamd: the exact counts; /healthz and the probe behind scanner_up against
running and stopped daemons."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import RawSession, send
from tests.support.daemons import Clamd, FilterFactory, Spamd
from tests.support.messages import EICAR, clean, gtube, message
from tests.support.mimegen import nested_multiparts
from tests.support.net import free_port, wait_until
from tests.support.sink import CaptureSink

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
        config_text="server:\n  max_sessions: 1\ndecoder:\n  max_mime_depth: 3\n",
        extra_args=["--metrics", address],
    )
    repeated = clean()
    for data, recipients in [
        (repeated, [BOB, CAROL]),
        (message("EICAR", EICAR + b"\r\n"), [BOB]),
        (gtube(), [BOB]),
        (repeated, [BOB, CAROL]),  # the same bytes again: the scanners' cache answers
        (nested_multiparts(5), [BOB]),  # deeper than max_mime_depth: UNCHECKED, passed
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
    assert value(samples, "messages_total", category="UNCHECKED") == 1
    assert value(samples, "message_size_bytes_count") == 5
    assert value(samples, "stage_duration_seconds_count", stage="total") == 5
    assert value(samples, "stage_duration_seconds_count", stage="receive") == 5
    assert value(samples, "stage_duration_seconds_count", stage="scanner_clamav") == 5
    assert value(samples, "decoder_limit_hits_total", limit="max_mime_depth") == 1
    # relayed: clean to two, GTUBE, clean to two again, the nested one (EICAR discarded)
    assert value(samples, "next_hop_replies_total", **{"class": "2xx"}) == 6
    new = value(samples, "next_hop_connections_total", connection="new")
    reused = value(samples, "next_hop_connections_total", connection="reused")
    assert (new + reused, new) == (4, 1)  # one session to the sink, kept between messages
    assert value(samples, "scanner_requests_total", scanner="clamav", result="ok") == 4
    assert value(samples, "scanner_requests_total", scanner="clamav", result="cached") == 1
    assert value(samples, "scanner_up", scanner="clamav") == 1
    assert value(samples, "scanner_up", scanner="spamassassin") == 1
    assert value(samples, "cache_lookups_total", result="hit") >= 2  # clamd and spamd
    assert value(samples, "smtp_sessions_active") == 1
    assert value(samples, "smtp_sessions_refused_total", reason="max_sessions") == 1
    assert value(samples, "tempfails_total", reason="scanner") == 0
    assert value(samples, "config_last_reload_success_timestamp_seconds") > 0


def healthz(address: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_healthz_asks_clamd_spamd_the_quarantine_and_the_next_hop_and_says_ok(
    filter_factory: FilterFactory, clamd: Clamd, spamd: Spamd, sink: CaptureSink
) -> None:
    address = f"127.0.0.1:{free_port()}"
    process = filter_factory(
        clamd=clamd.address,
        spamd=spamd.address,
        config_text="metrics:\n  probe_interval: 0\n",  # only /healthz asks
        extra_args=["--metrics", address],
    )
    assert ("contentfilter_scanner_up", (("scanner", "clamav"),)) not in scrape(address)
    eicar = message("EICAR", EICAR + b"\r\n")
    assert send(process.address, eicar, ALICE, [BOB, CAROL]).data.startswith("250 ")
    status, body = healthz(address)
    assert (status, body["status"], body["broken"]) == (200, "ok", []), body
    assert [(c["name"], c["up"]) for c in body["checks"]] == [
        (f"clamd {clamd.address}", True),
        (f"spamd {spamd.address}", True),
        (f"quarantine {process.quarantine_directory}", True),
        (f"next hop {sink.address}", True),
    ]
    assert body["checks"][2]["detail"].startswith("1 messages (virus 1), 2 copies held, ")
    samples = scrape(address)
    assert value(samples, "quarantine_stored_total", category="virus") == 1
    assert value(samples, "quarantine_up") == 1
    assert value(samples, "quarantine_items", category="virus") == 1
    assert value(samples, "quarantine_copies", state="held") == 2
    assert value(samples, "quarantine_bytes") > 0
    assert 0 < value(samples, "quarantine_oldest_item_age_seconds") < 600  # kept just now
    assert value(samples, "scanner_up", scanner="clamav") == 1
    assert value(samples, "scanner_up", scanner="spamassassin") == 1
    versions = [
        dict(labels)
        for (name, labels), _ in samples.items()
        if name == "contentfilter_clamd_version_info"
    ]
    assert [v["server"] for v in versions] == [clamd.address]
    assert versions[0]["engine"].startswith("ClamAV ")
    # the suite's local signature files carry no date (a .cvd does): no age is made up
    age = ("contentfilter_clamd_signatures_age_seconds", (("server", clamd.address),))
    assert age not in samples


def test_a_stopped_clamd_makes_healthz_503_naming_it_and_the_probe_sets_scanner_up_0(
    filter_factory: FilterFactory, spamd: Spamd
) -> None:
    address = f"127.0.0.1:{free_port()}"
    stopped = f"127.0.0.1:{free_port()}"
    filter_factory(
        clamd=stopped,
        spamd=spamd.address,
        config_text="metrics:\n  probe_interval: 1\n",
        extra_args=["--metrics", address],
    )
    probed = ("contentfilter_scanner_up", (("scanner", "clamav"),))
    wait_until(lambda: probed in scrape(address), "the first probe", 60)
    samples = scrape(address)  # no message was sent: the probe alone
    assert value(samples, "scanner_up", scanner="clamav") == 0
    assert value(samples, "scanner_up", scanner="spamassassin") == 1
    status, body = healthz(address)
    assert (status, body["status"]) == (503, "down")
    assert body["broken"] == [f"clamd {stopped}: connection refused"]


def test_a_stopped_spamd_that_lets_mail_pass_is_degraded_but_healthy(
    filter_factory: FilterFactory, clamd: Clamd
) -> None:
    address = f"127.0.0.1:{free_port()}"
    stopped = f"127.0.0.1:{free_port()}"
    filter_factory(clamd=clamd.address, spamd=stopped, extra_args=["--metrics", address])
    status, body = healthz(address)
    assert (status, body["status"]) == (200, "degraded")
    assert body["broken"] == [f"spamd {stopped}: connection refused"]
