"""How the ClamAV scanner reaches a clamd given as host:port: an address or a name."""

from __future__ import annotations

import asyncio
import socket

import pytest

from scanners.clamd_wire import ClamdServer
from tests.support.net import closed_port


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_a_tcp_clamd_is_reached_by_address_or_name(host: str) -> None:
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    try:
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    listener.listen()
    port = listener.getsockname()[1]
    accepted = asyncio.get_running_loop().run_in_executor(None, listener.accept)
    try:
        sock = await ClamdServer.parse(f"{host}:{port}").connect()
        peer, _ = await accepted
        sock.sendall(b"zPING\0")
        assert peer.recv(16) == b"zPING\0"
        peer.close()
        sock.close()
    finally:
        listener.close()


async def test_an_address_where_nothing_listens_is_an_os_error() -> None:
    with pytest.raises(OSError):
        await ClamdServer.parse(f"127.0.0.1:{closed_port()}").connect()
