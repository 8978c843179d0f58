"""clamd's socket protocol (clamd(8)): INSTREAM, FILDES and IDSESSION, on plain asyncio sockets.

- `zINSTREAM\\0`, then chunks each prefixed with their length as a 4-byte
  unsigned integer in network byte order, then a zero-length chunk. clamd
  writes the stream to a temporary file and scans it; a stream longer than its
  `StreamMaxLength` is refused with `INSTREAM size limit exceeded. ERROR`, and
  clamd hangs up while we are still sending.
- `zFILDES\\0`, then one byte carrying an open file descriptor as SCM_RIGHTS
  ancillary data (unix sockets only). clamd scans the file behind the
  descriptor: nothing is copied and StreamMaxLength does not apply (its
  MaxFileSize and MaxScanSize do). As clamdscan sends it: the command, then
  the byte with the descriptor in a second send.
- `zIDSESSION\\0` starts a session: any number of commands follow on the same
  connection, clamd scans them concurrently (up to its MaxThreads) and answers
  each as `<n>: <reply>`, n counting the commands from 1, in the order the
  scans finish; `zEND\\0` ends the session and clamd closes the connection
  after the last answer.

Answers are NUL-terminated: `stream: OK`, `fd[12]: NAME FOUND`, `... ERROR`.
The PyPI `clamd` package is synchronous and unmaintained, and `aioclamd` 1.1.0
speaks TCP only (Debian's clamd listens on a unix socket), ships no type
information, parses a single reply line and sends 1 KiB chunks. asyncio
*streams* are not used either: once a write fails they drop what the peer
already sent, and that is exactly clamd's "size limit exceeded" reply.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from contentfilter.addresses import HostPort

MAX_REPLY_SIZE = 64 * 1024  # per command: clamd's replies are one short line
SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded."
_PATHS = re.compile(r"stream|fd\[\d+\]")  # what clamd names the scanned thing in replies


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

    @property
    def is_local(self) -> bool:
        """A unix socket: clamd runs on this host and can be handed file descriptors."""
        return self.path is not None

    async def connect(self) -> socket.socket:
        """A connected non-blocking socket; OSError if the server cannot be reached."""
        loop = asyncio.get_running_loop()
        if self.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            return await _connect(loop, sock, self.path)
        assert self.endpoint is not None
        host, port = self.endpoint.host, self.endpoint.port
        try:  # an address needs no resolver, and no thread of the loop's executor
            infos = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except socket.gaierror:  # a name
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
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
    """clamd's answer to one scan command, parsed. Clean only if `clean` is True."""

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
        known = _PATHS.fullmatch(path) is not None
        if known and status == "OK":
            clean = True
        elif known and status.endswith(" FOUND") and len(status) > len(" FOUND"):
            viruses.append(status.removesuffix(" FOUND"))
        elif line.endswith("ERROR"):
            errors.append(line)
        else:
            errors.append(f"unexpected reply {line[:200]!r}")
    if viruses:  # a detection stands even beside an error: it is not a guess
        return ClamdReply(viruses=tuple(dict.fromkeys(viruses)))
    if errors:
        size_limit = any(error.startswith(SIZE_LIMIT_REPLY) for error in errors)
        return ClamdReply(error="; ".join(errors), size_limit=size_limit)
    return ClamdReply(clean=clean)


def split_session_replies(raw: bytes) -> dict[int, bytes]:
    """`<n>: <reply>\\0` answers of a session by command number; other lines under 0."""
    answers: dict[int, bytes] = {}
    for line in raw.split(b"\0"):
        number, separator, reply = line.strip().partition(b": ")
        if separator and number.isdigit() and len(number) < 10:
            answers[int(number)] = answers.get(int(number), b"") + reply + b"\0"
        elif line.strip():
            answers[0] = answers.get(0, b"") + line.strip() + b"\0"
    return answers


# --- sending --------------------------------------------------------------------------


def _frames(data: bytes, chunk_size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        chunk = view[start : start + chunk_size]
        yield struct.pack("!L", len(chunk)) + chunk
    yield struct.pack("!L", 0)


async def send_instream(sock: socket.socket, data: bytes, chunk_size: int) -> None:
    """The INSTREAM command with `data`."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, b"zINSTREAM\0")
    for frame in _frames(data, chunk_size):
        await loop.sock_sendall(sock, frame)


async def send_instream_file(sock: socket.socket, file: BinaryIO, chunk_size: int) -> None:
    """The INSTREAM command with the contents of an open file, read chunk by chunk."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, b"zINSTREAM\0")
    while chunk := file.read(chunk_size):
        await loop.sock_sendall(sock, struct.pack("!L", len(chunk)) + chunk)
    await loop.sock_sendall(sock, struct.pack("!L", 0))


async def send_fildes(sock: socket.socket, descriptor: int) -> None:
    """The FILDES command, then one byte carrying `descriptor` (unix sockets only)."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, b"zFILDES\0")
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [descriptor]))]
    while True:
        try:
            sock.sendmsg([b"\0"], rights)  # one byte: sent whole or not at all
            return
        except (BlockingIOError, InterruptedError):
            await _writable(loop, sock)


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_writer(sock.fileno())


# --- receiving ------------------------------------------------------------------------


async def read_reply(sock: socket.socket, limit: int = MAX_REPLY_SIZE) -> bytes:
    """Everything clamd sends until it closes the connection (at most `limit` + 4 KiB).

    An error after some bytes arrived ends the reply (clamd says why it hangs up
    before it does); an error before any byte is raised.
    """
    loop = asyncio.get_running_loop()
    reply = bytearray()
    while len(reply) <= limit:
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


async def instream(sock: socket.socket, data: bytes, chunk_size: int) -> bytes:
    """Send `data` with INSTREAM on a connected socket and return the raw reply."""
    # clamd hangs up mid-stream when the stream is too long, after saying so; the
    # reply decides. A reply that never comes is an error for the caller.
    with contextlib.suppress(OSError):
        await send_instream(sock, data, chunk_size)
    return await read_reply(sock)


async def fildes(sock: socket.socket, descriptor: int) -> bytes:
    """Have clamd scan the open file `descriptor` and return the raw reply."""
    await send_fildes(sock, descriptor)
    return await read_reply(sock)


class UnreadableFile(Exception):
    """A file to be scanned could not be opened: our fault, not the server's."""


@dataclass(frozen=True, slots=True)
class SessionJob:
    """One command of a session: a file clamd is handed (FILDES) or sent (INSTREAM)."""

    path: str
    pass_descriptor: bool


async def session(
    sock: socket.socket, jobs: Sequence[SessionJob], chunk_size: int
) -> dict[int, bytes]:
    """Scan `jobs` in one IDSESSION; the raw answers by job number (from 1).

    Answers are read while the commands are still being sent: clamd answers as
    scans finish, and a reader that waited for the end could leave both sides
    blocked on full socket buffers.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.ensure_future(read_reply(sock, MAX_REPLY_SIZE + 1024 * len(jobs)))
    try:
        await loop.sock_sendall(sock, b"zIDSESSION\0")
        for job in jobs:
            with _open(job.path) as file:
                if job.pass_descriptor:
                    await send_fildes(sock, file.fileno())
                else:
                    await send_instream_file(sock, file, chunk_size)
            if reader.done():  # clamd hung up (e.g. a stream over StreamMaxLength)
                break
        else:
            await loop.sock_sendall(sock, b"zEND\0")
    except OSError:
        pass  # clamd hung up while we were sending; its last words are in the reply
    except BaseException:
        reader.cancel()
        raise
    return split_session_replies(await reader)


def _open(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as error:
        raise UnreadableFile(f"{path}: {error.strerror or error}") from None
