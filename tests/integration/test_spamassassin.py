"""The SpamAssassin scanner against the suite's real spamd, and against spamds that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contentfilter import config
from contentfilter.errors import ScannerProtocolError, ScannerTimeout, ScannerUnavailable
from contentfilter.model import Envelope, Message, Recipient, Scanner
from contentfilter.rfc5322 import read_message
from scanners import build_scanners
from scanners.spamassassin import SpamAssassinScanner, SpamAssassinSettings
from tests.support.daemons import Spamd
from tests.support.messages import clean, gtube
from tests.support.net import GarbageServer, HangingServer, closed_port

CAPTURED_GTUBE = Path(__file__).parents[1] / "unit" / "spamd_replies" / "gtube.report"


def mail(raw: bytes, sender: str = "alice@sender.example") -> Message:
    envelope = Envelope(sender, (Recipient("bob@recipient.example"),))
    return read_message("1234-01", "mailid", envelope, raw)


def scanner(server: str, **settings: object) -> SpamAssassinScanner:
    return SpamAssassinScanner("spamassassin", SpamAssassinSettings(server=server, **settings))  # type: ignore[arg-type]


# --- the real spamd ------------------------------------------------------------------


async def test_gtube_scores_about_1000(spamd: Spamd) -> None:
    result = await scanner(spamd.address).scan(mail(gtube()))
    assert result.spam is not None
    assert 1000 <= result.spam.score < 1100
    assert result.spam.required == 5.0
    assert ("GTUBE", 1000.0) in result.spam.tests
    assert result.spam.autolearn is None  # REPORT does not carry it
    assert result.findings == () and result.skipped is None


async def test_without_rule_scores_spamd_gives_the_names(spamd: Spamd) -> None:
    result = await scanner(spamd.address, rule_scores=False).scan(mail(gtube()))
    assert result.spam is not None
    assert 1000 <= result.spam.score < 1100
    assert ("GTUBE", None) in result.spam.tests
    assert all(points is None for _, points in result.spam.tests)


async def test_clean_mail_scores_low(spamd: Spamd) -> None:
    result = await scanner(spamd.address).scan(mail(clean()))
    assert result.spam is not None
    assert result.spam.score < result.spam.required
    assert "GTUBE" not in dict(result.spam.tests)


async def test_several_messages_at_once(spamd: Spamd) -> None:
    spamassassin = scanner(spamd.address)
    results = await asyncio.gather(*(spamassassin.scan(mail(gtube())) for _ in range(6)))
    assert all(r.spam is not None and r.spam.score >= 1000 for r in results)


async def test_the_registry_builds_it_from_the_config(spamd: Spamd) -> None:
    loaded = config.from_mapping({"scanners": {"spamassassin": {"server": spamd.address}}})
    [built] = build_scanners(loaded.scanners)
    assert isinstance(built, Scanner)
    assert (built.needs_parts, built.on_failure.value) == (False, "pass")
    result = await built.scan(mail(gtube()))
    assert result.spam is not None and result.spam.score >= 1000


async def test_spamd_down_is_unavailable_and_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    """aiospamc logs through loguru to stderr; none of that may reach our stderr."""
    with pytest.raises(ScannerUnavailable) as caught:
        await scanner(f"127.0.0.1:{closed_port()}").scan(mail(clean()))
    assert "Connection refused" in caught.value.reason
    with pytest.raises(ScannerUnavailable):
        await scanner("/nonexistent/spamd.sock").scan(mail(clean()))
    assert capfd.readouterr().err == ""


# --- fakes ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fake_spamd(reply: bytes) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A TCP 'spamd' that records each request (aiospamc ends it with EOF) and answers."""
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.read())
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", requests


async def test_the_request_carries_the_sender_and_user() -> None:
    raw = gtube()
    async with fake_spamd(CAPTURED_GTUBE.read_bytes()) as (address, requests):
        result = await scanner(address, user="amavis").scan(mail(raw, "bounce@list.example"))
    assert result.spam is not None and ("GTUBE", 1000.0) in result.spam.tests
    [request] = requests
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"REPORT SPAMC/1.5\r\n")
    assert b"\r\nUser: amavis" in head
    assert body == b"Return-Path: <bounce@list.example>\r\n" + raw


async def test_without_rule_scores_the_request_is_symbols() -> None:
    reply = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 1001.3 / 5.0\r\n\r\nGTUBE"
    async with fake_spamd(reply) as (address, requests):
        result = await scanner(address, rule_scores=False).scan(mail(gtube()))
    assert result.spam is not None and result.spam.tests == (("GTUBE", None),)
    [request] = requests
    assert request.startswith(b"SYMBOLS SPAMC/1.5\r\n")


async def test_a_hanging_spamd_times_out() -> None:
    with HangingServer() as hanging:
        started = time.monotonic()
        with pytest.raises(ScannerTimeout):
            await scanner(hanging.address, timeout=1.0).scan(mail(clean()))
        assert 0.9 < time.monotonic() - started < 2.0


async def test_garbage_is_a_protocol_error() -> None:
    with GarbageServer() as garbage, pytest.raises(ScannerProtocolError) as caught:
        await scanner(garbage.address).scan(mail(clean()))
    assert "unparseable reply" in caught.value.reason


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (b"SPAMD/1.1 69 EX_UNAVAILABLE\r\n\r\n", ScannerUnavailable),
        (b"SPAMD/1.1 79 EX_TIMEOUT\r\n\r\n", ScannerTimeout),
        (b"SPAMD/1.1 76 Bad header line: x\r\n\r\n", ScannerProtocolError),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", ScannerProtocolError),
        (b"", ScannerUnavailable),
    ],
)
async def test_spamd_errors_are_ours(reply: bytes, kind: type[Exception]) -> None:
    async with fake_spamd(reply) as (address, _):
        with pytest.raises(kind):
            await scanner(address).scan(mail(clean()))


async def test_oversized_messages_are_not_sent() -> None:
    with HangingServer() as hanging:
        result = await scanner(hanging.address, max_size=1000).scan(mail(b"x" * 1001))
    assert hanging.connections == 0
    assert result.skipped == "size 1001 > limit 1000"
    assert result.spam is None
