"""Release from the quarantine with the real filter, clamd, spamd and a capture server as
the next hop, on SQLite and on a real PostgreSQL: once, to the chosen recipient, with
the released header, after a new scan; refused or tempfailed releases change nothing."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contentfilter import config as config_module
from contentfilter.quarantine import Entry, Query, State, Via, open_store
from tests.support import messages
from tests.support.client import send
from tests.support.daemons import (
    CaptureSink,
    Clamd,
    FilterFactory,
    FilterProcess,
    Spamd,
    filter_command,
)
from tests.support.postgres import PostgresServer

_names = itertools.count()
RELEASED = "X-Quarantine-Released"


@dataclass
class Setup:
    """A filter whose blocked mail goes to a quarantine, and the config file it uses."""

    config_path: Path
    filter: FilterProcess
    clamd: str

    def entry(self, message_id: str = "", mail_id: str = "") -> Entry:
        """The quarantined message with this Message-ID (or mail_id), as stored now."""

        async def find() -> Entry:
            store = open_store(config_module.load(self.config_path).quarantine)
            try:
                query = Query(message_id=message_id) if message_id else Query(mail_id=mail_id)
                found = await store.search(query)
            finally:
                await store.close()
            assert len(found) == 1, f"{message_id or mail_id} is not kept once: {found}"
            return found[0]

        return asyncio.run(find())

    def quarantine(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return run_quarantine(self.config_path, *arguments, "--clamd", self.clamd)


def run_quarantine(config_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [*filter_command(), "quarantine", *arguments[:1], "-c", str(config_path)]
    return subprocess.run(
        [*command, *arguments[1:]], capture_output=True, text=True, timeout=300, check=False
    )


def store_section(kind: str, tmp_path: Path, postgres: PostgresServer | None) -> str:
    if kind == "sqlite":
        return f"  directory: {tmp_path / 'quarantine'}\n"
    assert postgres is not None
    return f"  database: {postgres.create_database(f'release_{os.getpid()}_{next(_names)}')}\n"


def filter_config(store: str, sink: CaptureSink, host: str = "mx-a.test", extra: str = "") -> str:
    return (
        f"next_hop: {{address: '{sink.address}'}}\n"
        "policy: {destiny: {spam: discard}}\n"
        "quarantine:\n"
        f"{store}"
        "  categories: [virus, banned, spam]\n"
        "  spam_cutoff_level: null\n"
        f"  host_name: {host}\n"
        f"{extra}"
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


@pytest.fixture
def setup(
    request: pytest.FixtureRequest,
    store_kind: str,
    tmp_path: Path,
    sink: CaptureSink,
    clamd: Clamd,
    filter_factory: FilterFactory,
) -> Setup:
    postgres = request.getfixturevalue("postgres_server") if store_kind == "postgresql" else None
    text = filter_config(store_section(store_kind, tmp_path, postgres), sink)
    path = tmp_path / "contentfilter.yaml"
    path.write_text(text)
    spamd: Spamd | None = None
    if "gtube" in request.node.name:
        spamd = request.getfixturevalue("spamd")
    process = filter_factory(
        clamd=clamd.address,
        spamd=spamd.address if spamd else "off",
        config_text=text,
    )
    return Setup(path, process, clamd.address)


def blocked(setup: Setup, message: bytes, recipients: list[str]) -> Entry:
    """Send `message` through the filter; it must be blocked (250, not relayed) and kept."""
    replies = send(setup.filter.address, message, messages.SENDER, recipients)
    assert replies.data_code == 250, replies
    message_id = messages.header_value(message, "Message-ID")
    assert message_id is not None
    return setup.entry(message_id)


def banned_name(subject: str = "Setup") -> bytes:
    """Harmless bytes in an attachment named .exe: banned by name, no virus."""
    original = messages.eicar_attachment(subject).replace(b"eicar.com", b"setup.exe")
    encoded = base64.encodebytes(messages.EICAR).replace(b"\n", b"\r\n")
    return original.replace(encoded, base64.encodebytes(b"harmless\r\n").replace(b"\n", b"\r\n"))


def released_copy(received: bytes, original: bytes) -> str:
    """The released header on top of the original, byte-identical otherwise."""
    added = messages.added_headers(received, original)
    assert messages.header_names(added) == [RELEASED.lower()], added
    return added[0].decode()


def test_eicar_is_released_only_with_force_and_arrives_once(
    setup: Setup, sink: CaptureSink
) -> None:
    original = messages.eicar_attachment()
    entry = blocked(setup, original, [messages.RECIPIENT])
    assert entry.category == "virus" and sink.messages == []

    refused = setup.quarantine("release", entry.mail_id)
    assert refused.returncode == 1, refused
    assert "now detected as a virus" in refused.stdout
    assert "Eicar-Test-Signature" in refused.stdout
    assert sink.attempts == []

    forced = setup.quarantine("release", entry.mail_id, "--force")
    assert forced.returncode == 0, forced
    assert f"<{messages.RECIPIENT}>: released (250 " in forced.stdout
    [arrived] = sink.wait_for(1)
    assert arrived.rcpt_tos == [messages.RECIPIENT]
    assert arrived.mail_from == messages.SENDER
    header = released_copy(arrived.data, original)
    assert " via cli at " in header and f"id={entry.mail_id}" in header


def test_gtube_is_released_once_then_only_with_force(setup: Setup, sink: CaptureSink) -> None:
    original = messages.gtube()
    other = "carol@recipient.example"
    entry = blocked(setup, original, [messages.RECIPIENT, other])
    assert entry.category == "spam"

    first = setup.quarantine("release", entry.mail_id, "--rcpt", other)
    assert first.returncode == 0, first
    [arrived] = sink.wait_for(1)
    assert arrived.rcpt_tos == [other]  # only the chosen recipient
    user = released_copy(arrived.data, original).split(" by ", 1)[1].split(" via ")[0]

    again = setup.quarantine("release", entry.mail_id, "--rcpt", other)
    assert again.returncode == 1
    assert f"<{other}>: already released" in again.stdout
    assert len(sink.attempts) == 1

    stranger = setup.quarantine("release", entry.mail_id, "--rcpt", "mallory@evil.example")
    assert stranger.returncode == 1
    assert "<mallory@evil.example>: not a recipient of this message" in stranger.stdout
    assert len(sink.attempts) == 1

    forced = setup.quarantine("release", entry.mail_id, "--rcpt", other, "--force")
    assert forced.returncode == 0, forced
    assert len(sink.wait_for(2)) == 2

    now = setup.entry(mail_id=entry.mail_id)
    held, released = now.recipient(messages.RECIPIENT), now.recipient(other)
    assert held is not None and held.state is State.HELD
    assert released is not None and released.state is State.RELEASED
    changes = [c for c in released.history if c.via is Via.CLI]
    assert [(c.old, c.new) for c in changes] == [
        (State.HELD, State.RELEASING),
        (State.RELEASING, State.RELEASED),
        (State.RELEASED, State.RELEASING),
        (State.RELEASING, State.RELEASED),
    ]
    assert {c.actor for c in changes} == {user}
    assert all(c.source.startswith(socket.gethostname()) for c in changes)
    assert changes[2].note == "forced"


def test_a_message_the_current_clamd_detects_is_not_released(
    setup: Setup, sink: CaptureSink, tmp_path: Path, filter_factory: FilterFactory
) -> None:
    # Kept while the filter had no virus scanner (only the banned-file rules, which
    # block the .exe name); clamd knows EICAR now.
    text = setup.config_path.read_text()
    blind = filter_factory(clamd="off", spamd="off", config_text=text)
    original = messages.eicar_attachment().replace(b"eicar.com", b"invoice.exe")
    replies = send(blind.address, original, messages.SENDER, [messages.RECIPIENT])
    assert replies.data_code == 250, replies
    entry = setup.entry(messages.header_value(original, "Message-ID") or "")
    assert entry.category == "banned"

    refused = setup.quarantine("release", entry.mail_id)
    assert refused.returncode == 1
    assert "now detected as a virus: not released (INFECTED: Eicar-Test-Signature" in refused.stdout
    assert sink.attempts == []
    kept = setup.entry(mail_id=entry.mail_id).recipient(messages.RECIPIENT)
    assert kept is not None and kept.state is State.HELD


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        ("451 4.3.0 Try again later", "not taken by the next hop"),
        ("550 5.1.1 No such user", "refused by the next hop"),
    ],
)
def test_a_release_the_next_hop_does_not_take_changes_nothing(
    setup: Setup, sink: CaptureSink, reply: str, words: str
) -> None:
    original = banned_name()
    entry = blocked(setup, original, [messages.RECIPIENT])
    assert entry.category == "banned"
    sink.misbehave(data_reply=reply)

    failed = setup.quarantine("release", entry.mail_id)
    assert failed.returncode == 1
    assert f"<{messages.RECIPIENT}>: {words} ({reply})" in failed.stdout
    assert sink.messages == [] and len(sink.attempts) == 1
    kept = setup.entry(mail_id=entry.mail_id).recipient(messages.RECIPIENT)
    assert kept is not None and kept.state is State.HELD
    assert reply in kept.history[-1].note

    sink.clear()
    retried = setup.quarantine("release", entry.mail_id)
    assert retried.returncode == 0, retried
    released_copy(sink.wait_for(1)[0].data, original)


def test_two_filters_share_one_postgresql_and_one_releases_what_the_other_kept(
    postgres_server: PostgresServer,
    tmp_path: Path,
    sink: CaptureSink,
    clamd: Clamd,
    filter_factory: FilterFactory,
) -> None:
    database = f"  database: {postgres_server.create_database(f'shared_{os.getpid()}')}\n"
    host_a = filter_factory(
        clamd=clamd.address, config_text=filter_config(database, sink, "mx-a.test")
    )
    config_b = tmp_path / "b.yaml"
    config_b.write_text(filter_config(database, sink, "mx-b.test"))
    filter_factory(clamd=clamd.address, config_text=config_b.read_text())
    b = Setup(config_b, host_a, clamd.address)

    original = banned_name()
    entry = blocked(b, original, [messages.RECIPIENT])
    assert entry.host == "mx-a.test"

    released = b.quarantine("release", entry.mail_id)
    assert released.returncode == 0, released
    released_copy(sink.wait_for(1)[0].data, original)
    copy = b.entry(mail_id=entry.mail_id).recipient(messages.RECIPIENT)
    assert copy is not None and copy.state is State.RELEASED
    last = copy.history[-1]
    assert (last.via, last.new) == (Via.CLI, State.RELEASED)
    assert last.source.startswith(socket.gethostname())
    assert last.actor
