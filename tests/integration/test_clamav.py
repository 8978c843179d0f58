"""The ClamAV scanner against the suite's real clamd, and against clamds that misbehave.

The suite's clamd loads the local test signatures of REFERENCE.md, so it names
its detections with the `.UNOFFICIAL` suffix; the scanner reports names exactly
as clamd says them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contentfilter import config
from contentfilter.errors import ScannerProtocolError, ScannerTimeout, ScannerUnavailable
from contentfilter.model import ContentsCategory, Envelope, Message, Recipient, Scanner
from contentfilter.rfc5322 import read_message
from scanners import build_scanners
from scanners.clamav import PIPELINE_GRACE, ClamAVScanner, ClamAVSettings
from tests.support.daemons import Clamd
from tests.support.messages import EICAR, clean, eicar_attachment, eicar_inline, message
from tests.support.net import GarbageServer, HangingServer, closed_port

EICAR_NAME = "Eicar-Test-Signature.UNOFFICIAL"
CLAM_EXE = Path("/usr/share/clamav-testfiles/clam.exe")


def mail(raw: bytes) -> Message:
    envelope = Envelope("alice@sender.example", (Recipient("bob@recipient.example"),))
    return read_message("1234-01", "mailid", envelope, raw)


def scanner(*servers: str, **settings: float) -> ClamAVScanner:
    return ClamAVScanner("clamav", ClamAVSettings(servers=servers, **settings))  # type: ignore[arg-type]


def viruses(result_findings: tuple[object, ...]) -> list[str]:
    return [f.detail for f in result_findings if f.category is ContentsCategory.VIRUS]  # type: ignore[attr-defined]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- the real clamd ------------------------------------------------------------------


async def test_eicar_over_the_unix_socket(clamd: Clamd) -> None:
    result = await scanner(str(clamd.socket_path)).scan(mail(eicar_inline()))
    assert viruses(result.findings) == [EICAR_NAME]
    assert result.findings[0].scanner == "clamav"


async def test_eicar_attachment_over_tcp(clamd: Clamd) -> None:
    result = await scanner(clamd.address).scan(mail(eicar_attachment()))
    assert viruses(result.findings) == [EICAR_NAME]


async def test_clamav_test_file_attachment(clamd: Clamd) -> None:
    encoded = base64.encodebytes(CLAM_EXE.read_bytes()).replace(b"\n", b"\r\n")
    raw = message(
        "clam.exe",
        b"--b\r\nContent-Type: application/octet-stream; name=clam.exe\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--b--\r\n",
        content_type='multipart/mixed; boundary="b"',
    )
    result = await scanner(clamd.address).scan(mail(raw))
    assert viruses(result.findings) == ["ClamAV-Test-File.UNOFFICIAL"]


async def test_clean_mail_has_no_findings(clamd: Clamd) -> None:
    result = await scanner(str(clamd.socket_path)).scan(mail(clean()))
    assert result.findings == ()
    assert result.skipped is None


async def test_small_chunks_reassemble(clamd: Clamd) -> None:
    result = await scanner(clamd.address, chunk_size=7).scan(mail(eicar_attachment()))
    assert viruses(result.findings) == [EICAR_NAME]


async def test_many_scans_at_once(clamd: Clamd) -> None:
    clamav = scanner(str(clamd.socket_path))
    results = await asyncio.gather(*(clamav.scan(mail(eicar_inline())) for _ in range(30)))
    assert all(viruses(result.findings) == [EICAR_NAME] for result in results)


async def test_clamd_refusing_a_long_stream_makes_it_unchecked(clamd: Clamd) -> None:
    """The suite's clamd has StreamMaxLength 60M; our max_size is set above it."""
    raw = b"Subject: big\r\n\r\n" + b"A" * (61 * 1024 * 1024)
    result = await scanner(clamd.address, max_size=100 * 1024 * 1024).scan(mail(raw))
    assert [f.category for f in result.findings] == [ContentsCategory.UNCHECKED]
    assert "StreamMaxLength" in result.findings[0].detail


async def test_the_registry_builds_it_from_the_config(clamd: Clamd) -> None:
    loaded = config.from_mapping(
        {"scanners": {"virus": {"type": "clamav", "servers": [clamd.address], "timeout": 10}}}
    )
    [built] = build_scanners(loaded.scanners)
    assert isinstance(built, Scanner)
    assert (built.name, built.needs_parts) == ("virus", False)
    assert built.timeout == 10.0 + PIPELINE_GRACE  # the pipeline's is only a backstop
    result = await built.scan(mail(eicar_inline()))
    assert viruses(result.findings) == [EICAR_NAME]
    await built.close()


# --- several servers -----------------------------------------------------------------


async def test_a_dead_primary_fails_over_and_waits_out_its_cooldown(clamd: Clamd) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    clock = Clock()
    settings = ClamAVSettings(servers=(dead, clamd.address), cooldown=60)
    clamav = ClamAVScanner("clamav", settings, clock=clock)
    result = await clamav.scan(mail(eicar_inline()))
    assert viruses(result.findings) == [EICAR_NAME]
    assert [str(s) for s in clamav.servers_in_order()] == [clamd.address, dead]
    clock.now += 61
    assert [str(s) for s in clamav.servers_in_order()] == [dead, clamd.address]


async def test_all_servers_down_is_unavailable(tmp_path: Path) -> None:
    dead_tcp = f"127.0.0.1:{closed_port()}"
    dead_unix = str(tmp_path / "no-clamd.sock")
    started = time.monotonic()
    with pytest.raises(ScannerUnavailable) as caught:
        await scanner(dead_tcp, dead_unix).scan(mail(clean()))
    assert time.monotonic() - started < 1
    assert dead_tcp in caught.value.reason and dead_unix in caught.value.reason
    assert "Connection refused" in caught.value.reason


async def test_servers_that_failed_are_still_tried_last(clamd: Clamd) -> None:
    """Cooling servers are demoted, not dropped: one clamd that restarts is retried."""
    clock = Clock()
    clamav = ClamAVScanner("clamav", ClamAVSettings(servers=(clamd.address,)), clock=clock)
    clamav._failed_at[clamav.servers[0]] = clock.now  # as if it had just failed
    result = await clamav.scan(mail(eicar_inline()))
    assert viruses(result.findings) == [EICAR_NAME]
    assert clamav._failed_at == {}


@pytest.mark.parametrize("size", [100, 8 * 1024 * 1024])
async def test_a_hanging_server_times_out(size: int) -> None:
    raw = b"Subject: x\r\n\r\n" + b"x" * size
    with HangingServer() as hanging:
        started = time.monotonic()
        with pytest.raises(ScannerTimeout) as caught:
            await scanner(hanging.address, timeout=1.0).scan(mail(raw))
        assert 0.9 < time.monotonic() - started < 2.0
    assert "no reply within 1.0 s" in caught.value.reason


async def test_after_a_hang_the_next_message_goes_to_the_secondary(clamd: Clamd) -> None:
    with HangingServer() as hanging:
        clamav = scanner(hanging.address, clamd.address, timeout=0.5)
        with pytest.raises(ScannerTimeout):
            await clamav.scan(mail(eicar_inline()))
        result = await clamav.scan(mail(eicar_inline()))
    assert viruses(result.findings) == [EICAR_NAME]


async def test_a_hang_under_the_pipelines_timeout_still_cools_the_server(clamd: Clamd) -> None:
    """The pipeline wraps scan() in asyncio.timeout(scanner.timeout): ours fires first."""
    with HangingServer() as hanging:
        clamav = scanner(hanging.address, clamd.address, timeout=0.5)
        with pytest.raises(ScannerTimeout):
            async with asyncio.timeout(clamav.timeout):
                await clamav.scan(mail(eicar_inline()))
    assert [str(s) for s in clamav.servers_in_order()] == [clamd.address, hanging.address]


async def test_a_connect_that_never_completes_times_out() -> None:
    """192.0.2.1 (TEST-NET-1) is not routed: the SYN goes unanswered or is refused."""
    started = time.monotonic()
    with pytest.raises((ScannerTimeout, ScannerUnavailable)):
        await scanner("192.0.2.1:3310", connect_timeout=0.3, timeout=5).scan(mail(clean()))
    assert time.monotonic() - started < 1.5


async def test_garbage_is_a_protocol_error() -> None:
    with GarbageServer() as garbage, pytest.raises(ScannerProtocolError) as caught:
        await scanner(garbage.address).scan(mail(eicar_inline()))
    assert "unexpected reply" in caught.value.reason


async def test_oversized_messages_are_not_sent() -> None:
    with HangingServer() as hanging:
        result = await scanner(hanging.address, max_size=1000).scan(mail(b"x" * 1001))
    assert hanging.connections == 0
    assert [(f.category, f.detail) for f in result.findings] == [
        (ContentsCategory.UNCHECKED, "size 1001 > max_size 1000: not scanned")
    ]


# --- what clamd may say --------------------------------------------------------------


@contextlib.asynccontextmanager
async def fake_clamd(reply: bytes) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A TCP 'clamd' that reads one INSTREAM, records it and answers `reply`."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = await reader.readexactly(len(b"zINSTREAM\0"))
        data = b""
        while length := struct.unpack("!L", await reader.readexactly(4))[0]:
            data += await reader.readexactly(length)
        received.append(command + data)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"127.0.0.1:{port}", received


@pytest.mark.parametrize(
    ("reply", "found"),
    [
        (b"stream: OK\0", []),
        (b"stream: OK\n", []),  # newline-terminated, as after nINSTREAM
        (b"stream: Win.Test.EICAR_HDB-1 FOUND\0", ["Win.Test.EICAR_HDB-1"]),
        (b"stream: A FOUND\0stream: B FOUND\0stream: A FOUND\0", ["A", "B"]),
        (
            b"stream: Heuristics.Phishing.Email.SpoofedDomain FOUND\n",
            ["Heuristics.Phishing.Email.SpoofedDomain"],
        ),
    ],
)
async def test_verdicts(reply: bytes, found: list[str]) -> None:
    async with fake_clamd(reply) as (address, received):
        result = await scanner(address, chunk_size=5).scan(mail(b"Subject: x\r\n\r\nhello"))
    assert viruses(result.findings) == found
    assert received == [b"zINSTREAM\0Subject: x\r\n\r\nhello"]


async def test_a_size_limit_reply_makes_it_unchecked() -> None:
    async with fake_clamd(b"INSTREAM size limit exceeded. ERROR\0") as (address, _):
        result = await scanner(address).scan(mail(b"Subject: x\r\n\r\nhello"))
    assert [f.category for f in result.findings] == [ContentsCategory.UNCHECKED]


@pytest.mark.parametrize(
    ("reply", "kind", "reason"),
    [
        (b"stream: Can't allocate memory ERROR\0", ScannerProtocolError, "allocate memory ERROR"),
        (b"stream: \0", ScannerProtocolError, "unexpected reply"),
        (b"stream: FOUND\0", ScannerProtocolError, "unexpected reply"),
        (b"stream: OKAY\0", ScannerProtocolError, "unexpected reply"),
        (b"UNKNOWN COMMAND\0", ScannerProtocolError, "unexpected reply"),
        (b"\0\0\n", ScannerProtocolError, "empty reply"),
        (b"stream: OK" * 7000, ScannerProtocolError, "longer than 64 KiB"),
        (b"", ScannerUnavailable, "closed the connection without a reply"),
    ],
)
async def test_anything_else_is_never_taken_for_clean(
    reply: bytes, kind: type[Exception], reason: str
) -> None:
    async with fake_clamd(reply) as (address, _):
        with pytest.raises(kind) as caught:
            await scanner(address).scan(mail(EICAR))
    assert reason in str(caught.value)
