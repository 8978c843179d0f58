"""Blocked mail kept by the real filter (real clamd and spamd), found and removed with
`contentfilter quarantine ...`, on SQLite and on a shared PostgreSQL store."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from contentfilter import config
from contentfilter.quarantine import Via, actions, open_store
from tests.support import messages
from tests.support.client import send
from tests.support.daemons import Clamd, FilterFactory, FilterProcess, Spamd, filter_command
from tests.support.net import free_port
from tests.support.postgres import PostgresServer, start_postgres
from tests.support.quarantine import kept_id
from tests.support.sink import CaptureSink

TWO = ("bob@example.com", "carol@example.com")
KEEP_ALL = """
policy:
  destiny: {spam: discard}
quarantine:
  spam_cutoff_level: null
"""


def quarantine(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`contentfilter quarantine ARGUMENTS -c CONFIG`, as an admin runs it."""
    return subprocess.run(
        [*filter_command(), "quarantine", *arguments, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("message", "category", "reason", "finding"),
    [
        (messages.eicar_attachment, "virus", "INFECTED: Eicar-Test-Signature", "clamav: INFECTED"),
        (messages.banned_exe, "banned", "BANNED: ", "banned: BANNED: "),
        (messages.gtube, "spam", "spam", "spamassassin: score 100"),
    ],
    ids=["eicar", "banned", "gtube"],
)
def test_blocked_mail_is_kept_with_a_row_per_recipient(
    filter_factory: FilterFactory,
    sink: CaptureSink,
    clamd: Clamd,
    spamd: Spamd,
    message: object,
    category: str,
    reason: str,
    finding: str,
) -> None:
    process = filter_factory(clamd=clamd.address, spamd=spamd.address, config_text=KEEP_ALL)
    raw = message()  # type: ignore[operator]
    replies = send(process.address, raw, messages.SENDER, TWO)
    assert replies.data.startswith("250 2.7.0 Ok, discarded, id="), replies.data
    mail_id = kept_id(replies.data)
    assert sink.attempts == []
    listed = quarantine(process.config, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["mail_id"] == mail_id and entry["category"] == category
    assert entry["reason"].startswith(reason)
    assert any(f.startswith(finding) for f in entry["findings"]), entry["findings"]
    assert entry["sender"] == messages.SENDER and entry["size"] == len(raw)
    assert [(r["address"], r["state"]) for r in entry["recipients"]] == [
        (TWO[0], "held"),
        (TWO[1], "held"),
    ]
    assert entry["host"] and entry["log_id"]
    # the log line names it as amavisd-new does
    log = process.log_text()
    line = next(x for x in log.splitlines() if "Blocked" in x and mail_id in x)
    assert "{DiscardedInbound,Quarantined}" in line and f"quarantine: {mail_id}," in line


def test_list_show_delete_expire_through_the_cli(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    process = filter_factory(clamd=clamd.address)
    config = process.config
    first = kept_id(send(process.address, messages.eicar_attachment(), "a@x.example", TWO).data)
    second = kept_id(
        send(process.address, messages.eicar_inline(), "eve@y.example", ["dan@example.com"]).data
    )
    listing = quarantine(config, "list")
    assert listing.returncode == 0, listing.stderr
    assert first in listing.stdout and second in listing.stdout
    assert listing.stdout.index(second) < listing.stdout.index(first)  # newest first
    by_rcpt = quarantine(config, "list", "--rcpt", "DAN@example.com").stdout
    assert second in by_rcpt and first not in by_rcpt
    by_sender = quarantine(config, "list", "--sender", "a@x.example").stdout
    assert first in by_sender and second not in by_sender

    shown = quarantine(config, "show", first)
    assert shown.returncode == 0, shown.stderr
    assert "reason: INFECTED: Eicar-Test-Signature" in shown.stdout
    assert "Subject: Invoice" in shown.stdout and "  Subject: Invoice" in shown.stdout
    assert re.search(r"^\s+.*eicar\.com", shown.stdout, re.MULTILINE), shown.stdout  # part tree
    assert "bob@example.com: held" in shown.stdout

    deleted = quarantine(config, "delete", first, "--rcpt", "carol@example.com")
    assert deleted.returncode == 0 and "carol@example.com: deleted" in deleted.stdout
    again = quarantine(config, "delete", first, "--rcpt", "carol@example.com")
    assert "already deleted" in again.stdout
    stranger = quarantine(config, "delete", first, "--rcpt", "mallory@evil.example")
    assert stranger.returncode == 1 and "not a recipient" in stranger.stderr
    assert "carol@example.com: deleted since" in quarantine(config, "show", first).stdout
    state = quarantine(config, "list", "--state", "deleted", "--json").stdout
    assert [json.loads(x)["mail_id"] for x in state.splitlines()] == [first]
    rest = quarantine(config, "delete", first)
    assert "bob@example.com: deleted" in rest.stdout and "body is removed" in rest.stdout
    assert "body: removed" in quarantine(config, "show", first).stdout

    stats = json.loads(quarantine(config, "stats", "--json").stdout)
    assert stats["messages"] == 2 and stats["by_state"] == {"deleted": 2, "held": 1}
    assert quarantine(config, "expire").stdout.strip() == "expired 0 messages"
    config.write_text(config.read_text() + "  retention: {virus: 0.00001}\n")
    assert quarantine(config, "expire").stdout.strip() == "expired 1 message"
    expired = json.loads(quarantine(config, "show", second, "--json").stdout)
    assert expired["body_removed"] and expired["recipients"][0]["state"] == "expired"
    assert expired["recipients"][0]["history"][-1]["via"] == "retention"
    assert quarantine(config, "show", "nosuch00000x").returncode == 1


def test_a_store_that_fails_tempfails_the_message(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = f"quarantine: {{directory: {blocker}/quarantine}}\n"
    metrics = f"127.0.0.1:{free_port()}"
    process = filter_factory(
        clamd=clamd.address, config_text=config, extra_args=["--metrics", metrics]
    )
    replies = send(process.address, messages.eicar_attachment(), messages.SENDER, TWO)
    assert re.fullmatch(r"451 4\.3\.0 Error in processing, id=\S+, quarantine: .*", replies.data)
    assert "Not a directory" in replies.data, replies.data
    clean = send(process.address, messages.clean(), messages.SENDER, TWO)
    assert clean.data.startswith("250 2.0.0 Ok"), clean.data  # only mail to keep waits
    assert "TempFailed" in process.log_text()
    assert "store not available" in process.log_text()  # said at start-up already
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=30) as answer:
        exported = answer.read().decode()
    assert "contentfilter_quarantine_store_failures_total 1.0" in exported
    assert 'contentfilter_tempfails_total{reason="quarantine"} 1.0' in exported


def test_discard_unkept_goes_on_without_the_store(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = f"quarantine: {{directory: {blocker}/quarantine, on_failure: discard-unkept}}\n"
    process = filter_factory(clamd=clamd.address, config_text=config)
    replies = send(process.address, messages.eicar_attachment(), messages.SENDER, TWO)
    assert replies.data.startswith("250 2.7.0 Ok, discarded, id="), replies.data
    assert "quarantine:" not in replies.data
    assert "going on without it" in process.log_text()


def test_a_lovers_passed_copy_is_kept_and_says_so(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    config = """
policy:
  recipients:
    lover@example.com: {virus_lover: true}
quarantine:
  keep_passed: true
"""
    process = filter_factory(clamd=clamd.address, config_text=config)
    recipients = ["lover@example.com", "bob@example.com"]
    replies = send(process.address, messages.eicar_inline(), messages.SENDER, recipients)
    assert replies.data.startswith("250 2.0.0 Ok, id="), replies.data
    (copy,) = sink.wait_for(1)
    assert copy.rcpt_tos == ["lover@example.com"]
    header = messages.header_value(copy.data, "X-Quarantine-ID")
    assert header is not None and re.fullmatch(r"<[\w-]{12}>", header), header
    shown = json.loads(quarantine(process.config, "show", header[1:-1], "--json").stdout)
    assert sorted(r["address"] for r in shown["recipients"]) == sorted(recipients)


# --- two filter hosts, one PostgreSQL store ---------------------------------------------


@pytest.fixture
def shared_database(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    name = re.sub(r"\W", "_", request.node.name)[:40].lower()
    return postgres_server.create_database(f"filter_{name}")


def test_two_filter_hosts_share_one_postgresql_store(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd, shared_database: str
) -> None:
    def host(name: str) -> FilterProcess:
        config = f"quarantine: {{database: '{shared_database}', host_name: {name}}}\n"
        return filter_factory(clamd=clamd.address, config_text=config)

    host_a, host_b = host("mx-a.example"), host("mx-b.example")
    mail_id = kept_id(send(host_a.address, messages.eicar_attachment(), messages.SENDER, TWO).data)
    on_b = host_b.config
    listed = [json.loads(x) for x in quarantine(on_b, "list", "--json").stdout.splitlines()]
    assert [(e["mail_id"], e["host"]) for e in listed] == [(mail_id, "mx-a.example")]
    shown = quarantine(on_b, "show", mail_id)
    assert shown.returncode == 0 and "  Subject: Invoice" in shown.stdout, shown.stderr
    assert "eicar.com" in shown.stdout  # the body came out of the database on host B
    deleted = quarantine(on_b, "delete", mail_id)
    assert deleted.returncode == 0 and "bob@example.com: deleted" in deleted.stdout
    on_a = json.loads(quarantine(host_a.config, "show", mail_id, "--json").stdout)
    assert {r["state"] for r in on_a["recipients"]} == {"deleted"} and on_a["body_removed"]
    migrated = quarantine(on_b, "migrate")
    assert migrated.returncode == 0 and "version 2" in migrated.stdout


@pytest.fixture
def doomed_postgres() -> Iterator[PostgresServer]:
    """A server of its own, for a test that stops it."""
    with start_postgres() as server:
        yield server


def test_postgresql_down_tempfails_the_message(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd, doomed_postgres: PostgresServer
) -> None:
    config = f"quarantine: {{database: '{doomed_postgres.create_database('q')}', timeout: 5}}\n"
    process = filter_factory(clamd=clamd.address, config_text=config)
    kept_id(send(process.address, messages.eicar_attachment(), messages.SENDER, TWO).data)
    doomed_postgres.stop()
    replies = send(process.address, messages.eicar_attachment(), messages.SENDER, TWO)
    assert re.fullmatch(
        r"451 4\.3\.0 Error in processing, id=\S+, quarantine: PostgreSQL store: .*", replies.data
    ), replies.data
    assert sink.attempts == []


def test_spam_from_a_sender_the_recipient_allowed_passes_to_that_recipient(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd, spamd: Spamd
) -> None:
    process = filter_factory(clamd=clamd.address, spamd=spamd.address, config_text=KEEP_ALL)
    first = send(process.address, messages.gtube(), messages.SENDER, TWO)
    assert first.data.startswith("250 2.7.0 Ok, discarded, id="), first.data

    bob = actions.Actor("bob@example.com", Via.LINK)

    async def allow() -> None:  # what "release and allow the sender" records for bob
        store = open_store(config.load(process.config).quarantine)
        try:
            await actions.allow_sender(store, "bob@example.com", messages.SENDER, actor=bob)
        finally:
            await store.close()

    asyncio.run(allow())
    again = send(process.address, messages.gtube(), messages.SENDER, TWO)
    assert again.data.startswith("250 "), again.data
    (copy,) = sink.wait_for(1)
    assert copy.rcpt_tos == ["bob@example.com"]  # carol did not allow the sender
    assert "X-Spam-Flag: YES" not in copy.data.decode("latin-1")
    listed = quarantine(process.config, "list", "--json", "--rcpt", "carol@example.com")
    assert len(listed.stdout.splitlines()) == 2  # carol's copy is kept, both times
