"""ClamAV through clamd: the raw message, and every file the decoder took out of it.

clamd reads the raw message with its own MIME parser, which is strict where mail
clients are lenient: a trick that hides an attachment from it (a folded
Content-Transfer-Encoding, a reused boundary, base64 with junk) may still show
the attachment in Outlook or Thunderbird. So clamd also scans each file our
decoder extracted (`DecodedMessage.extracted`: every leaf part and archive
member, and every container the decoder could not open further, which clamd then
opens with its own full recursion budget). A detection in any of them makes the
message INFECTED; the finding names the virus as clamd does (the log line says
which part).

Two conversations per message at most: the raw message on one connection as
soon as it arrives, and, once the decoder is done, all extracted files in one
IDSESSION on a second connection (clamd scans them concurrently). On a unix
socket clamd is handed open file descriptors (FILDES): nothing is copied and
clamd's StreamMaxLength does not apply, so a 27 MB message is scanned whole.
Over TCP files are streamed (INSTREAM) up to `max_size`; a raw message over it
is not sent, and is covered by its extracted parts instead (the message is
UNCHECKED only when there are none, or a part is over it too).

Several servers are tried in the configured order (primary, secondary...). A
server that fails is moved to the back of the line for `cooldown` seconds; it is
still tried when every other server has failed too, so a clamd restart costs at
most one failed message per scan rather than `cooldown` seconds of tempfails.
Nothing but a well-formed `OK` is ever taken for clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from contentfilter import cache
from contentfilter.decoder_settings import DecoderLimits
from contentfilter.errors import (
    ScannerError,
    ScannerProtocolError,
    ScannerTimeout,
    ScannerUnavailable,
)
from contentfilter.model import (
    ContentsCategory,
    DecodedMessage,
    ExtractedFile,
    FailureAction,
    Finding,
    Message,
    ScanResult,
)
from contentfilter.schema import require_positive
from scanners.base import ScannerSettings
from scanners.clamd_wire import (
    MAX_REPLY_SIZE,
    ClamdReply,
    ClamdServer,
    SessionJob,
    UnreadableFile,
    fildes,
    instream,
    parse_reply,
    session,
)

__all__ = ["ClamAVScanner", "ClamAVSettings", "ClamdReply", "ClamdServer", "parse_reply"]

log = logging.getLogger("contentfilter.scanners.clamav")
T = TypeVar("T")

DEBIAN_SOCKET = "/var/run/clamav/clamd.ctl"
# StreamMaxLength in Debian's generated /etc/clamav/clamd.conf (clamd's own default is 100M).
DEBIAN_STREAM_MAX_LENGTH = 25 * 1024 * 1024
PIPELINE_GRACE = 1.0  # seconds the pipeline's backstop timeout adds to ours


@dataclass(frozen=True)
class ClamAVSettings(ScannerSettings):
    """The `scanners.clamav` section.

    `servers`: clamd sockets in order of preference; an entry starting with "/" is
    a unix socket, anything else is `host:port`.
    `fildes`: on unix sockets, hand clamd open file descriptors instead of streaming
    the bytes (no copy, no StreamMaxLength). Off only for a unix socket that is not
    clamd's own (a forwarder to another host).
    `scan_parts`: also scan every file the decoder extracted.
    `max_size`: what is streamed (INSTREAM, over TCP) is at most this long; keep it
    at or below clamd's `StreamMaxLength`. A longer raw message is covered by its
    extracted parts; a longer part, or a long message without parts, is UNCHECKED.
    `timeout`: for the raw message, and again for the parts once they are decoded.
    """

    on_failure: FailureAction = FailureAction.TEMPFAIL
    servers: tuple[str, ...] = (DEBIAN_SOCKET,)
    connect_timeout: float = 5.0  # seconds to connect to one server
    cooldown: float = 60.0  # seconds a failed server goes to the back of the line
    max_size: int = DEBIAN_STREAM_MAX_LENGTH
    chunk_size: int = 64 * 1024  # bytes per INSTREAM chunk
    fildes: bool = True
    scan_parts: bool = True

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


@dataclass
class _PartsReport:
    """What clamd said of the extracted files."""

    viruses: list[tuple[ExtractedFile, str]] = field(default_factory=list)
    unscanned: list[tuple[ExtractedFile, str]] = field(default_factory=list)


# --- the scanner ----------------------------------------------------------------------


class ClamAVScanner:
    """Scans each message, and the files the decoder took out of it, with the first clamd
    that answers."""

    needs_parts = False  # the raw message is scanned at once: see `scan_with_parts`

    def __init__(
        self,
        name: str,
        settings: ClamAVSettings,
        limits: DecoderLimits | None = None,
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
        # the decoder's limits decide which files are extracted, and so what clamd sees
        self._fingerprint = cache.fingerprint(settings, limits or DecoderLimits())

    def cache_key(self, message: Message) -> str:
        """clamd reads the whole message (its MIME parser follows the top-level header),
        and the files the decoder extracts from it under the current limits."""
        return cache.key(self._fingerprint, message.digest)

    async def scan(self, message: Message) -> ScanResult:
        """The raw message, and its extracted files if the decoder filled in `parts`."""
        return await self.scan_with_parts(message, _ready(message.parts))

    async def scan_with_parts(
        self, message: Message, parts: Awaitable[DecodedMessage | None]
    ) -> ScanResult:
        """Scan the raw message at once and the extracted files once `parts` is ready
        (None: the decoder failed, which the pipeline reports itself)."""
        started = time.perf_counter()
        raw = asyncio.ensure_future(self._scan_raw(message))
        try:
            decoded = await parts
            if raw.done():
                raw.result()  # a failed raw scan fails the message: no parts scan needed
            files = decoded.extracted if decoded is not None and self.settings.scan_parts else ()
            report = await self._scan_files(message, files) if files else _PartsReport()
            reply = await raw
        finally:
            _discard(raw)
        findings = self._findings(message, reply, files, report)
        return ScanResult(self.name, findings, elapsed=time.perf_counter() - started)

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

    # --- the two conversations ------------------------------------------------------------

    def _passes_descriptors(self, server: ClamdServer) -> bool:
        return server.is_local and self.settings.fildes

    async def _scan_raw(self, message: Message) -> ClamdReply:
        """clamd's reply for the raw message; `size_limit` set if it was not scanned."""
        if message.size > self.settings.max_size and not any(
            self._passes_descriptors(server) for server in self.servers
        ):
            return ClamdReply(size_limit=True)  # not sent: the parts stand in for it

        async def talk(server: ClamdServer, sock: socket.socket) -> ClamdReply:
            if self._passes_descriptors(server):
                with _memory_file(message.raw) as descriptor:
                    answer = await fildes(sock, descriptor)
            elif message.size > self.settings.max_size:
                return ClamdReply(size_limit=True)
            else:
                answer = await instream(sock, message.raw, self.settings.chunk_size)
            return self._checked(server, answer)

        return await self._ask_servers(message, f"{message.size} bytes", talk)

    async def _scan_files(self, message: Message, files: Sequence[ExtractedFile]) -> _PartsReport:
        async def talk(server: ClamdServer, sock: socket.socket) -> _PartsReport:
            passes = self._passes_descriptors(server)
            report = _PartsReport()
            sent = [f for f in files if passes or f.size <= self.settings.max_size]
            report.unscanned += [
                (f, f"{f.size} bytes > max_size {self.settings.max_size}")
                for f in files
                if f not in sent
            ]
            jobs = [SessionJob(f.path, passes) for f in sent]
            answers = await session(sock, jobs, self.settings.chunk_size)
            self._read_session(server, sent, answers, report)
            return report

        return await self._ask_servers(message, f"{len(files)} extracted files", talk)

    def _read_session(
        self,
        server: ClamdServer,
        sent: Sequence[ExtractedFile],
        answers: dict[int, bytes],
        report: _PartsReport,
    ) -> None:
        if 0 in answers:
            raise ScannerProtocolError(
                self.name, f"clamd {server}: unexpected reply {answers[0][:200]!r}"
            )
        replies = {n: self._checked(server, answers[n]) for n in answers}
        cut_short = any(reply.size_limit for reply in replies.values())
        for number, file in enumerate(sent, 1):
            reply = replies.get(number)
            if reply is None and not cut_short:
                raise ScannerUnavailable(
                    self.name, f"clamd {server}: session ended before every file was scanned"
                )
            if reply is None or reply.size_limit:
                report.unscanned.append((file, "refused by clamd as over its StreamMaxLength"))
            report.viruses += [(file, name) for name in reply.viruses] if reply else []

    def _findings(
        self,
        message: Message,
        reply: ClamdReply,
        files: Sequence[ExtractedFile],
        report: _PartsReport,
    ) -> tuple[Finding, ...]:
        for file, name in report.viruses:
            log.info(
                "%s: clamd found %s in %s (%s)", message.log_id, name, file.part_id, file.reason
            )
        viruses = [*reply.viruses, *(name for _, name in report.viruses)]
        findings = [
            Finding(ContentsCategory.VIRUS, name, self.name) for name in dict.fromkeys(viruses)
        ]
        unscanned = [
            f"{file.part_id} ({reason}): not scanned by clamd" for file, reason in report.unscanned
        ]
        if reply.size_limit and files:
            log.info(
                "%s: raw message (%d bytes) too long for clamd's stream; its %d extracted "
                "files were scanned instead",
                message.log_id,
                message.size,
                len(files),
            )
        elif reply.size_limit:
            unscanned.insert(0, self._unscanned_raw(message))
        findings += [Finding(ContentsCategory.UNCHECKED, text, self.name) for text in unscanned]
        return tuple(findings)

    def _unscanned_raw(self, message: Message) -> str:
        if message.size > self.settings.max_size:
            return f"size {message.size} > max_size {self.settings.max_size}: not scanned"
        return "clamd refused the message as longer than its StreamMaxLength: not scanned"

    # --- servers --------------------------------------------------------------------------

    async def _ask_servers(
        self,
        message: Message,
        what: str,
        talk: Callable[[ClamdServer, socket.socket], Awaitable[T]],
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout
        failures: list[ScannerError] = []
        for server in self.servers_in_order():
            if loop.time() >= deadline:
                break
            try:
                answer = await self._ask(server, message, what, talk, deadline)
            except ScannerTimeout as error:
                self._failed(server, error)
                raise  # the time for this message is used up: no point in the next server
            except (ScannerUnavailable, ScannerProtocolError) as error:
                self._failed(server, error)
                failures.append(error)
                continue
            if self._failed_at.pop(server, None) is not None:
                log.info("clamd %s answers again", server)
            return answer
        reasons = "; ".join(failure.reason for failure in failures)
        if loop.time() >= deadline:
            raise ScannerTimeout(
                self.name, f"no clamd answered within {self.settings.timeout:g} s: {reasons}"
            )
        if any(isinstance(failure, ScannerProtocolError) for failure in failures):
            raise ScannerProtocolError(self.name, reasons)
        raise ScannerUnavailable(self.name, reasons)

    async def _ask(
        self,
        server: ClamdServer,
        message: Message,
        what: str,
        talk: Callable[[ClamdServer, socket.socket], Awaitable[T]],
        deadline: float,
    ) -> T:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sock = await self._connect(server, deadline)
        connected = loop.time()
        try:
            async with asyncio.timeout_at(deadline):
                answer = await talk(server, sock)
        except TimeoutError:
            raise ScannerTimeout(
                self.name, f"clamd {server}: no reply within {deadline - started:.1f} s"
            ) from None
        except UnreadableFile as error:  # the spool, not the server
            raise ScannerError(self.name, f"extracted file unreadable: {error}") from None
        except OSError as error:
            raise ScannerUnavailable(self.name, f"clamd {server}: {_describe(error)}") from None
        finally:
            sock.close()
        log.debug(
            "%s: clamd %s connect %.3f s, scan %.3f s, %s",
            message.log_id,
            server,
            connected - started,
            loop.time() - connected,
            what,
        )
        return answer

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

    def _failed(self, server: ClamdServer, error: ScannerError) -> None:
        now = self._clock()
        previous = self._failed_at.get(server)
        self._failed_at[server] = now
        if previous is None or now - previous >= self.settings.cooldown:  # once per cooldown
            log.warning("%s; trying other servers first for %.0f s", error, self.settings.cooldown)


async def _ready(parts: DecodedMessage | None) -> DecodedMessage | None:
    return parts


def _discard(task: asyncio.Future[ClamdReply]) -> None:
    """Stop a raw scan that is no longer wanted, and keep its error from being reported."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[int]:
    """An anonymous in-memory file holding `data`, to hand to clamd (FILDES)."""
    descriptor = os.memfd_create("contentfilter-message", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.write(descriptor, view[written:])
        os.lseek(descriptor, 0, os.SEEK_SET)
        yield descriptor
    finally:
        os.close(descriptor)


def _describe(error: OSError) -> str:
    if error.errno:
        return os.strerror(error.errno)
    return str(error) or type(error).__name__
