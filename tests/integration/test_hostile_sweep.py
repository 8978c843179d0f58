"""Property: no header or envelope value makes the filter answer "internal error".

A real filter (the in-process Server, its decoder workers, the relay) on loopback,
relaying to a recording sink, is fed sessions whose header fields, addresses,
DSN parameters and XFORWARD values are drawn by hypothesis: printable and
control characters, bytes that are not UTF-8, RFC 2047 words with broken
charsets, folds where none belong. Whatever comes in gets a defined answer
(refused at the command where it arrives, or a verdict); an internal error would
come back on every retry of the same message, so none may happen at all.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contentfilter import cli, config
from contentfilter.pipeline import Pipeline
from contentfilter.relay import NextHop
from contentfilter.server import Server
from tests.support.client import RawSession
from tests.support.net import free_port
from tests.support.sink import CaptureSink


class InProcessFilter:
    """contentfilter's Server on its own event loop in a thread, as `serve` wires it."""

    def __init__(self, next_hop: str) -> None:
        self.port = free_port()
        self.quarantine = tempfile.mkdtemp(prefix="contentfilter-sweep-")
        self.config = config.from_mapping(
            {
                "server": {"listen": [f"127.0.0.1:{self.port}"], "hostname": "filter.test"},
                "next_hop": {"address": next_hop},
                "scanners": {
                    "banned": {},
                    "bad_header": {},
                    "rules": {
                        "type": "regex",
                        "rules": [
                            {"header": "Subject", "pattern": "spam", "category": "spam"},
                            {"body": "BOUNCE-ME", "category": "banned"},
                            {"header": "X-Check", "pattern": ".", "category": "unchecked"},
                        ],
                    },
                },
                "policy": {
                    "destiny": {"banned": "bounce", "spam": "pass"},
                    "subject_tags": {"bad_header": "***BAD HEADER*** "},
                },
                "quarantine": {"directory": self.quarantine},  # hostile headers stored too
            }
        )
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.pipeline: Pipeline | None = None
        self.next_hop: NextHop | None = None
        self.server: Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> InProcessFilter:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(120)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)

    async def _start(self) -> None:
        self.next_hop = NextHop(self.config.next_hop, self.config.server.hostname)
        self.pipeline = cli.build_pipeline(self.config, self.next_hop)
        if self.pipeline.decoder is not None:
            await self.pipeline.decoder.start()
        self.server = Server(self.config, self.pipeline)
        await self.server.start()

    async def _stop(self) -> None:
        assert self.server is not None and self.pipeline is not None and self.next_hop
        await self.server.drain(30)
        await cli.close_pipeline(self.pipeline)
        await self.next_hop.close()
        shutil.rmtree(self.quarantine, ignore_errors=True)

    @property
    def faults(self) -> int:
        assert self.pipeline is not None
        return self.pipeline.faults.total


@pytest.fixture(scope="module")
def sweep_sink() -> Iterator[CaptureSink]:
    with CaptureSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def in_process_filter(sweep_sink: CaptureSink) -> Iterator[InProcessFilter]:
    with InProcessFilter(sweep_sink.address) as running:
        yield running


# --- what hypothesis draws ------------------------------------------------------------

NASTY_TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    [
        "=?iso-8859-\xe9?q?x?=",
        "=?utf-8?b?not base64?=",
        "=?x-unknown?q?caf=E9?=",
        "=?utf-8?q?=C3?= =?utf-8?q?=A9?=",
        "=?\udcff?q?x?=",
        "spam =?utf-8?B?w6k=?=",
        "Subject: again",
    ]
)
HEADER_BYTES = st.binary(max_size=40) | NASTY_TEXT.map(
    lambda text: text.encode("utf-8", "surrogateescape")
)
FIELD_NAMES = st.sampled_from(
    [b"Subject", b"From", b"To", b"Cc", b"Message-ID", b"Date", b"X-Check", b"Content-Type"]
)
GOOD_ADDRESSES = st.sampled_from(
    [b"a@example.org", b"j\xc3\xb6ran@example.org", b'"x y"@example.org', b"a@[127.0.0.1]", b""]
)
NASTY_ADDRESSES = st.builds(
    lambda local, domain: local + b"@" + domain,
    st.binary(min_size=1, max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b),
    st.sampled_from([b"example.org", b"\xc3\xa9xample.org", b"ex\x00ample.org"]),
) | st.sampled_from([b"<>", b"a b@example.org", b"a(c)@example.org", b"@x:a@example.org"])
# mostly addresses that pass, so that most sessions reach DATA
ADDRESS_BYTES = st.one_of(*[GOOD_ADDRESSES] * 5, NASTY_ADDRESSES)
PARAMETER_BYTES = st.binary(max_size=16).filter(
    lambda b: b"\r" not in b and b"\n" not in b and b" " not in b
)
GOOD_PARAMETER = st.text("abcxyz+2B0123456789.-", max_size=12).map(str.encode)
PARAMETER_VALUES = st.one_of(*[GOOD_PARAMETER] * 4, PARAMETER_BYTES)


@dataclass
class Session:
    """One hostile session: its command lines and message, and what it was told."""

    xforward: list[tuple[bytes, bytes]] = field(default_factory=list)
    sender: bytes = b"a@example.org"
    mail_parameters: list[bytes] = field(default_factory=list)
    recipients: list[tuple[bytes, bytes]] = field(default_factory=list)
    header: list[tuple[bytes, bytes]] = field(default_factory=list)
    leading_whitespace: bool = False
    body: bytes = b"hello\r\n"


SESSIONS = st.builds(
    Session,
    xforward=st.lists(
        st.tuples(
            st.sampled_from([b"NAME", b"ADDR", b"PORT", b"HELO", b"IDENT"]), PARAMETER_VALUES
        ),
        max_size=3,
    ),
    sender=ADDRESS_BYTES,
    mail_parameters=st.lists(
        st.one_of(
            st.sampled_from([b"SMTPUTF8", b"BODY=8BITMIME", b"RET=HDRS", b"SIZE=100"]),
            PARAMETER_VALUES.map(lambda value: b"ENVID=" + value),
        ),
        max_size=3,
    ),
    recipients=st.lists(
        st.tuples(
            ADDRESS_BYTES,
            st.sampled_from([b"", b" NOTIFY=SUCCESS,FAILURE", b" NOTIFY=NEVER"])
            | PARAMETER_VALUES.map(lambda value: b" ORCPT=rfc822;" + value),
        ),
        min_size=1,
        max_size=3,
    ),
    header=st.lists(st.tuples(FIELD_NAMES, HEADER_BYTES), max_size=6),
    leading_whitespace=st.booleans(),
    body=st.sampled_from([b"hello\r\n", b"BOUNCE-ME\r\n", b".\r\n..\r\n", b"\xff\xfe\x00\r\n"]),
)


def _message(session: Session) -> bytes:
    lines = [b" folded first line"] if session.leading_whitespace else []
    for name, value in session.header:
        clean = value.replace(b"\r", b" ").replace(b"\n", b" ")
        lines.append(name + b": " + clean)
    return b"\r\n".join([*lines, b"", session.body.removesuffix(b"\r\n")]) + b"\r\n"


def _stuffed(message: bytes) -> bytes:
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    return (b"." + stuffed if stuffed.startswith(b".") else stuffed) + b".\r\n"


def _talk(address: str, session: Session) -> list[str]:
    """Run the session; every reply the filter gave."""
    answers = []
    with RawSession(address, timeout=60) as smtp:
        answers.append(smtp.command("EHLO client.test"))
        for name, value in session.xforward:
            smtp.send(b"XFORWARD " + name + b"=" + value + b"\r\n")
            answers.append(smtp.reply())
        options = b"".join(b" " + option for option in session.mail_parameters)
        smtp.send(b"MAIL FROM:<" + session.sender + b">" + options + b"\r\n")
        answers.append(smtp.reply())
        accepted = 0
        for address_bytes, parameters in session.recipients:
            smtp.send(b"RCPT TO:<" + address_bytes + b">" + parameters + b"\r\n")
            answers.append(smtp.reply())
            accepted += answers[-1].startswith("250")
        if accepted:
            answers.append(smtp.command("DATA"))
            if answers[-1].startswith("354"):
                smtp.send(_stuffed(_message(session)))
                answers.append(smtp.reply())
        answers.append(smtp.command("QUIT"))
    return answers


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(session=SESSIONS)
def test_no_session_ends_in_an_internal_error(
    in_process_filter: InProcessFilter, session: Session
) -> None:
    answers = _talk(in_process_filter.address, session)
    event(f"last reply {answers[-2][:3]}")  # before QUIT: what the transaction came to
    for answer in answers:
        assert answer[:1] in ("2", "3", "4", "5"), answers
        assert "internal error" not in answer, answers
        assert not answer.startswith("451 4.5.0"), answers
    assert in_process_filter.faults == 0, answers
