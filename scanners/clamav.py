"""ClamAV through clamd: the raw message is streamed to clamd with INSTREAM.

Protocol (clamd(8), "INSTREAM"): the command `zINSTREAM\\0`, then chunks each
prefixed with their length as a 4-byte unsigned integer in network byte order,
then a zero-length chunk. clamd answers `stream: OK`, `stream: NAME FOUND` or
`... ERROR`, NUL-terminated, and closes the connection. When the stream exceeds
its `StreamMaxLength`, clamd says `INSTREAM size limit exceeded. ERROR` and
hangs up while we are still sending.

The client is ours, on plain asyncio sockets (`loop.sock_*`): the PyPI `clamd`
package is synchronous and unmaintained, and `aioclamd` 1.1.0 speaks TCP only
(Debian's clamd listens on a unix socket), ships no type information, parses a
single reply line and sends 1 KiB chunks. asyncio *streams* are not used either:
once a write fails they drop what the peer already sent, and that is exactly
clamd's "size limit exceeded" reply.

Several servers are tried in the configured order (primary, secondary...). A
server that fails is moved to the back of the line for `cooldown` seconds; it is
still tried when every other server has failed too, so a clamd restart costs at
most one failed message per scan rather than `cooldown` seconds of tempfails.
Nothing but a well-formed `stream: OK` is ever taken for clean.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contentfilter import cache
from contentfilter.addresses import HostPort
from contentfilter.errors import (
    ScannerError,
    ScannerProtocolError,
    ScannerTimeout,
    ScannerUnavailable,
)
from contentfilter.model import ContentsCategory, FailureAction, Finding, Message, ScanResult
from contentfilter.schema import require_positive
from scanners import ScannerSettings, register

if TYPE_CHECKING:
    from contentfilter.config import Config

log = logging.getLogger("contentfilter.scanners.clamav")

DEBIAN_SOCKET = "/var/run/clamav/clamd.ctl"
# StreamMaxLength in Debian's generated /etc/clamav/clamd.conf (clamd's own default is 100M).
DEBIAN_STREAM_MAX_LENGTH = 25 * 1024 * 1024
PIPELINE_GRACE = 1.0  # seconds the pipeline's backstop timeout adds to ours
MAX_REPLY_SIZE = 64 * 1024  # clamd's replies are one short line per detection
_SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded."


@dataclass(frozen=True)
class ClamAVSettings(ScannerSettings):
    """The `scanners.clamav` section.

    `servers`: clamd sockets in order of preference; an entry starting with "/" is
    a unix socket, anything else is `host:port`.
    `max_size`: messages larger than this (bytes) are not sent to clamd and come
    out as an UNCHECKED finding. Keep it at or below clamd's `StreamMaxLength`;
    if clamd refuses a stream as too long, the result is the same UNCHECKED finding.
    """

    on_failure: FailureAction = FailureAction.TEMPFAIL
    servers: tuple[str, ...] = (DEBIAN_SOCKET,)
    connect_timeout: float = 5.0  # seconds to connect to one server
    cooldown: float = 60.0  # seconds a failed server goes to the back of the line
    max_size: int = DEBIAN_STREAM_MAX_LENGTH
    chunk_size: int = 64 * 1024  # bytes per INSTREAM chunk

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.servers:
            raise ValueError("servers: at least one clamd socket is needed")
        for index, server in enumerate(self.servers):
            try:
                ClamdServer.parse(server)
            except ValueError as error:
                raise ValueError(f"servers[{index}]: {error}") from None
        require_positive(self, "connect_timeout", "max_size")
        if self.cooldown < 0:
            raise ValueError(f"cooldown must not be negative (got {self.cooldown})")
        if not 1 <= self.chunk_size <= 2**31 - 1:
            raise ValueError(f"chunk_size must be between 1 and 2147483647 (got {self.chunk_size})")


@dataclass(frozen=True, slots=True)
class ClamdServer:
    """One clamd socket: a unix socket path or a TCP `host:port`."""

    path: str | None = None
    endpoint: HostPort | None = None

    @classmethod
    def parse(cls, text: str) -> ClamdServer:
        if text.startswith("/"):
            return cls(path=text)
        try:
            return cls(endpoint=HostPort.parse(text))
        except ValueError:
            raise ValueError(f"expected a unix socket path or host:port, got {text!r}") from None

    def __str__(self) -> str:
        return self.path if self.path is not None else str(self.endpoint)

    async def connect(self) -> socket.socket:
        """A connected non-blocking socket; OSError if the server cannot be reached."""
        loop = asyncio.get_running_loop()
        if self.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            return await _connect(loop, sock, self.path)
        assert self.endpoint is not None
        infos = await loop.getaddrinfo(
            self.endpoint.host, self.endpoint.port, type=socket.SOCK_STREAM
        )
        last_error: OSError = OSError(f"{self} resolves to no address")
        for family, kind, protocol, _, address in infos:
            try:
                return await _connect(loop, socket.socket(family, kind, protocol), address)
            except OSError as error:
                last_error = error
        raise last_error


async def _connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, address: str | tuple[object, ...]
) -> socket.socket:
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


# --- the reply ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClamdReply:
    """clamd's answer to one INSTREAM, parsed. Clean only if `clean` is True."""

    viruses: tuple[str, ...] = ()
    clean: bool = False
    error: str | None = None  # clamd said ERROR, or said something we do not understand
    size_limit: bool = False  # clamd refused the stream as longer than StreamMaxLength


def parse_reply(raw: bytes) -> ClamdReply:
    """Read clamd's reply lines (NUL- or newline-terminated; one per detection)."""
    text = raw.decode("utf-8", errors="replace").replace("\0", "\n")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ClamdReply(error="empty reply")
    viruses: list[str] = []
    errors: list[str] = []
    clean = False
    for line in lines:
        path, _, status = line.partition(": ")
        if path == "stream" and status == "OK":
            clean = True
        elif path == "stream" and status.endswith(" FOUND") and len(status) > len(" FOUND"):
            viruses.append(status.removesuffix(" FOUND"))
        elif line.endswith("ERROR"):
            errors.append(line)
        else:
            errors.append(f"unexpected reply {line[:200]!r}")
    if viruses:  # a detection stands even beside an error: it is not a guess
        return ClamdReply(viruses=tuple(dict.fromkeys(viruses)))
    if errors:
        size_limit = any(error.startswith(_SIZE_LIMIT_REPLY) for error in errors)
        return ClamdReply(error="; ".join(errors), size_limit=size_limit)
    return ClamdReply(clean=clean)


# --- one conversation -----------------------------------------------------------------


def _frames(data: bytes, chunk_size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        chunk = view[start : start + chunk_size]
        yield struct.pack("!L", len(chunk)) + chunk
    yield struct.pack("!L", 0)


async def _instream(sock: socket.socket, data: bytes, chunk_size: int) -> bytes:
    """Send `data` with INSTREAM on a connected socket and return the raw reply."""
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, b"zINSTREAM\0")
        for frame in _frames(data, chunk_size):
            await loop.sock_sendall(sock, frame)
    except OSError:
        # clamd hangs up mid-stream when the stream is too long, after saying so;
        # the reply decides. A reply that never comes is an error below.
        pass
    reply = bytearray()
    while len(reply) <= MAX_REPLY_SIZE:
        try:
            received = await loop.sock_recv(sock, 4096)
        except OSError:
            if reply:
                break
            raise
        if not received:
            break
        reply += received
    return bytes(reply)


# --- the scanner ----------------------------------------------------------------------


class ClamAVScanner:
    """Streams each message to the first clamd that answers."""

    needs_parts = False

    def __init__(
        self,
        name: str,
        settings: ClamAVSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        # The scanner keeps `settings.timeout` itself, so that a server that hangs is
        # named and sent to the back of the line; the pipeline's timeout, a little
        # longer, is only a backstop. (Cancellation is no verdict on a server: the
        # pipeline also cancels a scan when another scanner has failed.)
        self.timeout = settings.timeout + PIPELINE_GRACE
        self.on_failure = settings.on_failure
        self.settings = settings
        self.servers = tuple(ClamdServer.parse(server) for server in settings.servers)
        self._clock = clock
        self._failed_at: dict[ClamdServer, float] = {}
        self._fingerprint = cache.fingerprint(settings)

    def cache_key(self, message: Message) -> str:
        """clamd reads the whole message: its own MIME parser follows the top-level header."""
        return cache.key(self._fingerprint, message.raw)

    async def scan(self, message: Message) -> ScanResult:
        started = time.perf_counter()
        if message.size > self.settings.max_size:
            detail = f"size {message.size} > max_size {self.settings.max_size}: not scanned"
            log.info("%s: %s", message.log_id, detail)
            finding = Finding(ContentsCategory.UNCHECKED, detail, self.name)
            return ScanResult(self.name, (finding,), elapsed=time.perf_counter() - started)
        reply = await self._ask_servers(message)
        return ScanResult(self.name, self._findings(reply), elapsed=time.perf_counter() - started)

    async def close(self) -> None:
        """Nothing to release: every scan uses its own connection (clamd closes it)."""

    def servers_in_order(self) -> list[ClamdServer]:
        """Healthy servers in configured order, then cooling ones, longest-failed first."""
        now = self._clock()
        cooling = {
            server: failed
            for server, failed in self._failed_at.items()
            if now - failed < self.settings.cooldown
        }
        healthy = [server for server in self.servers if server not in cooling]
        return healthy + sorted(cooling, key=cooling.__getitem__)

    async def _ask_servers(self, message: Message) -> ClamdReply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout
        failures: list[ScannerError] = []
        for server in self.servers_in_order():
            if loop.time() >= deadline:
                break
            try:
                reply = await self._ask(server, message, deadline)
            except ScannerTimeout as error:
                self._failed(server, error)
                raise  # the time for this message is used up: no point in the next server
            except (ScannerUnavailable, ScannerProtocolError) as error:
                self._failed(server, error)
                failures.append(error)
                continue
            if self._failed_at.pop(server, None) is not None:
                log.info("clamd %s answers again", server)
            return reply
        reasons = "; ".join(failure.reason for failure in failures)
        if loop.time() >= deadline:
            raise ScannerTimeout(
                self.name, f"no clamd answered within {self.settings.timeout:g} s: {reasons}"
            )
        if any(isinstance(failure, ScannerProtocolError) for failure in failures):
            raise ScannerProtocolError(self.name, reasons)
        raise ScannerUnavailable(self.name, reasons)

    async def _ask(self, server: ClamdServer, message: Message, deadline: float) -> ClamdReply:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sock = await self._connect(server, deadline)
        connected = loop.time()
        try:
            async with asyncio.timeout_at(deadline):
                raw = await _instream(sock, message.raw, self.settings.chunk_size)
        except TimeoutError:
            raise ScannerTimeout(
                self.name, f"clamd {server}: no reply within {deadline - started:.1f} s"
            ) from None
        except OSError as error:
            raise ScannerUnavailable(self.name, f"clamd {server}: {_describe(error)}") from None
        finally:
            sock.close()
        log.debug(
            "%s: clamd %s connect %.3f s, scan %.3f s, %d bytes: %r",
            message.log_id,
            server,
            connected - started,
            loop.time() - connected,
            message.size,
            raw[:200],
        )
        return self._checked(server, raw)

    async def _connect(self, server: ClamdServer, deadline: float) -> socket.socket:
        loop = asyncio.get_running_loop()
        started = loop.time()
        connect_by = min(deadline, started + self.settings.connect_timeout)
        try:
            async with asyncio.timeout_at(connect_by):
                return await server.connect()
        except TimeoutError:
            reason = f"clamd {server}: no connection within {connect_by - started:.1f} s"
            if connect_by >= deadline:
                raise ScannerTimeout(self.name, reason) from None
            raise ScannerUnavailable(self.name, reason) from None
        except OSError as error:
            raise ScannerUnavailable(self.name, f"clamd {server}: {_describe(error)}") from None

    def _checked(self, server: ClamdServer, raw: bytes) -> ClamdReply:
        if not raw:
            raise ScannerUnavailable(
                self.name, f"clamd {server}: closed the connection without a reply"
            )
        if len(raw) > MAX_REPLY_SIZE:
            raise ScannerProtocolError(self.name, f"clamd {server}: reply longer than 64 KiB")
        reply = parse_reply(raw)
        if reply.size_limit:
            log.warning(
                "clamd %s refused a stream as too long: lower clamav max_size (%d) to clamd's "
                "StreamMaxLength",
                server,
                self.settings.max_size,
            )
        elif reply.error is not None:
            raise ScannerProtocolError(self.name, f"clamd {server}: {reply.error}")
        elif not (reply.clean or reply.viruses):  # never guess "clean"
            raise ScannerProtocolError(self.name, f"clamd {server}: no verdict in {raw[:200]!r}")
        return reply

    def _findings(self, reply: ClamdReply) -> tuple[Finding, ...]:
        if reply.size_limit:
            detail = "clamd refused the message as longer than its StreamMaxLength: not scanned"
            return (Finding(ContentsCategory.UNCHECKED, detail, self.name),)
        return tuple(Finding(ContentsCategory.VIRUS, name, self.name) for name in reply.viruses)

    def _failed(self, server: ClamdServer, error: ScannerError) -> None:
        now = self._clock()
        previous = self._failed_at.get(server)
        self._failed_at[server] = now
        if previous is None or now - previous >= self.settings.cooldown:  # once per cooldown
            log.warning("%s; trying other servers first for %.0f s", error, self.settings.cooldown)


def _describe(error: OSError) -> str:
    if error.errno:
        return os.strerror(error.errno)
    return str(error) or type(error).__name__


def create(name: str, settings: ClamAVSettings, config: Config) -> ClamAVScanner:
    """The factory the registry calls for a `type: clamav` section."""
    return ClamAVScanner(name, settings)


register("clamav", ClamAVSettings, create)
