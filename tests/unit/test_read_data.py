"""DATA as the server reads it: end-of-data, dot-unstuffing, size limit (RFC 5321 4.5.2)."""

from __future__ import annotations

import asyncio

import pytest

from contentfilter.server import read_data


async def feed(wire: bytes, limit: int | None = 1000, chunk: int = 7) -> tuple[bytes | None, bytes]:
    reader = asyncio.StreamReader(limit=(limit or 1000) + 65536)
    for i in range(0, len(wire), chunk):
        reader.feed_data(wire[i : i + chunk])
    reader.feed_eof()
    content = await read_data(reader, limit)
    return content, await reader.read()


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b".\r\n", b""),
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"\r\n.\r\n", b"\r\n"),
        (b"..dot\r\n.\r\n", b".dot\r\n"),
        (b"x\r\n..\r\n...\r\ny\r\n.\r\n", b"x\r\n.\r\n..\r\ny\r\n"),
        (b"line ends with a dot.\r\nnext\r\n.\r\n", b"line ends with a dot.\r\nnext\r\n"),
        (b"smuggled\n.\r\nMAIL FROM:<x>\r\n.\r\n", b"smuggled\n.\r\nMAIL FROM:<x>\r\n"),
        (b"..\r\n.a\r\n.\r\n", b".\r\na\r\n"),
    ],
)
@pytest.mark.parametrize("chunk", [1, 3, 7, 4096])
async def test_end_of_data_and_unstuffing(wire: bytes, content: bytes, chunk: int) -> None:
    got, rest = await feed(wire + b"QUIT\r\n", chunk=chunk)
    assert got == content
    assert rest == b"QUIT\r\n"  # a pipelined command after the end stays unread


async def test_over_the_limit_is_drained_and_refused() -> None:
    wire = b"x" * 3000 + b"\r\n.\r\nQUIT\r\n"
    got, rest = await feed(wire, limit=1000)
    assert got is None
    assert rest == b"QUIT\r\n"


async def test_closed_connection_during_data() -> None:
    with pytest.raises(ConnectionResetError):
        await feed(b"no end in sight\r\n", limit=1000)


@pytest.mark.parametrize("chunk", [4096, 100_000])
async def test_a_message_longer_than_the_buffer(chunk: int) -> None:
    body = b"".join(b"..%06d stuffed\r\n%06d plain\r\n" % (n, n) for n in range(20_000))
    got, rest = await feed(b"." + body + b".\r\nQUIT\r\n", limit=None, chunk=chunk)
    assert got == body.replace(b"\r\n..", b"\r\n.")
    assert rest == b"QUIT\r\n"
