"""clamd scans what the decoder extracted, as well as the raw message (the suite's real clamd).

The extracted files here are made by hand (`ExtractedFile` in a temporary
directory), as the decoder writes them into a message's spool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from contentfilter.errors import ScannerError, ScannerProtocolError, ScannerUnavailable
from contentfilter.model import (
    ContentsCategory,
    DecodedMessage,
    Envelope,
    ExtractedFile,
    Message,
    Part,
    ScanResult,
)
from contentfilter.model import Recipient as Rcpt
from contentfilter.rfc5322 import read_message
from scanners.clamav import ClamAVScanner, ClamAVSettings
from tests.integration.test_lifecycle import counting_proxy
from tests.support.daemons import Clamd
from tests.support.messages import EICAR, clean, eicar_inline

EICAR_NAME = "Eicar-Test-Signature.UNOFFICIAL"
MiB = 1024 * 1024
C = ContentsCategory


def mail(raw: bytes, parts: DecodedMessage | None = None) -> Message:
    envelope = Envelope("alice@sender.example", (Rcpt("bob@recipient.example"),))
    return replace(read_message("1234-01", "mailid", envelope, raw), parts=parts)


def scanner(*servers: str, **settings: object) -> ClamAVScanner:
    return ClamAVScanner("clamav", ClamAVSettings(servers=servers, **settings))  # type: ignore[arg-type]


def extracted(directory: Path, *contents: bytes, reason: str = "leaf") -> DecodedMessage:
    """A decoded message whose extracted files hold `contents` (p002, p003, ...)."""
    files = []
    for number, data in enumerate(contents, 2):
        path = directory / f"{number:04d}"
        path.write_bytes(data)
        files.append(ExtractedFile(f"p{number:03d}", str(path), len(data), reason))
    return DecodedMessage(Part("p001", (1,)), extracted=tuple(files))


def found(result: ScanResult) -> list[tuple[C, str]]:
    return [(f.category, f.detail) for f in result.findings]


@pytest.fixture(params=["unix", "tcp"])
def server(request: pytest.FixtureRequest, clamd: Clamd) -> str:
    """clamd over its unix socket (FILDES) and over TCP (INSTREAM)."""
    return str(clamd.socket_path) if request.param == "unix" else clamd.address


async def test_eicar_only_in_an_extracted_file_makes_it_infected(
    server: str, tmp_path: Path
) -> None:
    parts = extracted(tmp_path, b"hello", b"prefix " + EICAR, b"world")
    result = await scanner(server).scan(mail(clean(), parts))
    assert found(result) == [(C.VIRUS, EICAR_NAME)]


async def test_the_same_virus_in_the_message_and_a_part_is_one_finding(
    server: str, tmp_path: Path
) -> None:
    result = await scanner(server).scan(mail(eicar_inline(), extracted(tmp_path, EICAR)))
    assert found(result) == [(C.VIRUS, EICAR_NAME)]


async def test_many_parts_go_in_one_session(clamd: Clamd, tmp_path: Path) -> None:
    contents = [b"file %d\n" % n for n in range(60)]
    contents[37] = EICAR
    with counting_proxy(clamd.address) as proxy:
        result = await scanner(proxy.address).scan(mail(clean(), extracted(tmp_path, *contents)))
        assert proxy.connections == 2  # the raw message, then every part in one session
    assert found(result) == [(C.VIRUS, EICAR_NAME)]


async def test_clean_parts_leave_the_message_clean(server: str, tmp_path: Path) -> None:
    parts = extracted(tmp_path, b"a", b"b" * 100_000, reason="undecoded")
    assert found(await scanner(server).scan(mail(clean(), parts))) == []


async def test_parts_are_not_scanned_when_switched_off(server: str, tmp_path: Path) -> None:
    parts = extracted(tmp_path, EICAR)
    assert found(await scanner(server, scan_parts=False).scan(mail(clean(), parts))) == []


# --- messages over clamd's StreamMaxLength ------------------------------------------------


def big_message(total: int = 27 * MiB) -> bytes:
    header = b"From: a@example.org\r\nSubject: big\r\n\r\n"
    return header + b"A" * (total - len(header))


async def test_a_27_mb_message_is_scanned_whole_over_the_unix_socket(clamd: Clamd) -> None:
    """FILDES: no stream, no StreamMaxLength; max_size only bounds what is streamed."""
    result = await scanner(str(clamd.socket_path), max_size=25 * MiB).scan(mail(big_message()))
    assert found(result) == []
    raw = big_message()[: -len(EICAR) - 2] + EICAR + b"\r\n"
    result = await scanner(str(clamd.socket_path), max_size=25 * MiB).scan(mail(raw))
    assert found(result) == [(C.VIRUS, EICAR_NAME)]


async def test_over_tcp_its_parts_stand_in_for_a_message_too_long_to_stream(
    clamd: Clamd, tmp_path: Path
) -> None:
    clamav = scanner(clamd.address, max_size=25 * MiB)
    (tmp_path / "benign").mkdir()
    benign = extracted(tmp_path / "benign", b"B" * (20 * MiB))
    assert found(await clamav.scan(mail(big_message(), benign))) == []
    (tmp_path / "bad").mkdir()
    bad = extracted(tmp_path / "bad", b"B" * (20 * MiB), EICAR)
    assert found(await clamav.scan(mail(big_message(), bad))) == [(C.VIRUS, EICAR_NAME)]


async def test_over_tcp_a_long_message_without_parts_is_unchecked(clamd: Clamd) -> None:
    result = await scanner(clamd.address, max_size=25 * MiB).scan(mail(big_message()))
    assert found(result) == [(C.UNCHECKED, f"size {27 * MiB} > max_size {25 * MiB}: not scanned")]


async def test_over_tcp_a_part_too_long_to_stream_is_unchecked(
    clamd: Clamd, tmp_path: Path
) -> None:
    parts = extracted(tmp_path, b"small", b"x" * 2000)
    result = await scanner(clamd.address, max_size=1000).scan(mail(clean(), parts))
    assert found(result) == [
        (C.UNCHECKED, "p003 (2000 bytes > max_size 1000): not scanned by clamd")
    ]


# --- order and failures -------------------------------------------------------------------


async def test_the_raw_scan_starts_before_the_parts_are_decoded(
    clamd: Clamd, tmp_path: Path
) -> None:
    parts = extracted(tmp_path, EICAR)
    with counting_proxy(clamd.address) as proxy:

        async def decoded_after_the_raw_scan_started() -> DecodedMessage | None:
            for _ in range(1000):
                if proxy.connections:
                    return parts
                await asyncio.sleep(0.01)
            raise AssertionError("the raw message was not sent before the parts were ready")

        clamav = scanner(proxy.address)
        result = await clamav.scan_with_parts(mail(clean()), decoded_after_the_raw_scan_started())
    assert found(result) == [(C.VIRUS, EICAR_NAME)]


async def test_a_failed_decode_leaves_the_raw_verdict(server: str) -> None:
    async def failed() -> DecodedMessage | None:
        return None

    result = await scanner(server).scan_with_parts(mail(eicar_inline()), failed())
    assert found(result) == [(C.VIRUS, EICAR_NAME)]


async def test_an_unreadable_extracted_file_fails_the_scan_not_the_server(
    server: str, tmp_path: Path
) -> None:
    gone = ExtractedFile("p002", str(tmp_path / "missing"), 10)
    clamav = scanner(server)
    with pytest.raises(ScannerError) as caught:
        await clamav.scan(mail(clean(), DecodedMessage(Part("p001", (1,)), extracted=(gone,))))
    assert "extracted file unreadable" in caught.value.reason
    assert not isinstance(caught.value, ScannerUnavailable | ScannerProtocolError)
    assert clamav._failed_at == {}


@contextlib.asynccontextmanager
async def fake_session_clamd(answers: bytes) -> AsyncIterator[str]:
    """A TCP 'clamd' that answers the raw message OK and any session with `answers`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = await reader.readuntil(b"\0")
        if command == b"zIDSESSION\0":
            await reader.readuntil(b"zINSTREAM\0")
            writer.write(answers)
        else:
            writer.write(b"stream: OK\0")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize(
    ("answers", "error", "reason"),
    [
        (b"1: stream: OK\0", ScannerUnavailable, "session ended before every file"),
        (
            b"1: stream: OK\x002: stream: Can't allocate memory ERROR\0",
            ScannerProtocolError,
            "ERROR",
        ),
        (b"1: stream: OK\0UNKNOWN COMMAND\0", ScannerProtocolError, "unexpected reply"),
        (b"1: stream: OK\x002: stream: maybe\0", ScannerProtocolError, "unexpected reply"),
    ],
)
async def test_a_session_that_does_not_answer_every_file_is_a_failure(
    tmp_path: Path, answers: bytes, error: type[Exception], reason: str
) -> None:
    async with fake_session_clamd(answers) as address:
        with pytest.raises(error) as caught:
            await scanner(address).scan(mail(clean(), extracted(tmp_path, b"a", b"b")))
    assert reason in str(caught.value)


async def test_a_size_limit_inside_a_session_leaves_the_rest_unchecked(tmp_path: Path) -> None:
    answers = b"1: stream: OK\x002: INSTREAM size limit exceeded. ERROR\0"
    async with fake_session_clamd(answers) as address:
        result = await scanner(address).scan(mail(clean(), extracted(tmp_path, b"a", b"b", b"c")))
    reason = "refused by clamd as over its StreamMaxLength"
    assert found(result) == [
        (C.UNCHECKED, f"p003 ({reason}): not scanned by clamd"),
        (C.UNCHECKED, f"p004 ({reason}): not scanned by clamd"),
    ]
