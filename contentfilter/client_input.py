"""What an SMTP client sends, bounded in size and time and checked where it arrives.

A session holds at most a command line (COMMAND_LINE_LIMIT) and one buffer of
READ_PIECE bytes besides the message it is sending; a client that is silent or
slow is disconnected (Postfix's smtpd_timeout with smtpd_per_request_deadline,
and smtpd_min_data_rate). Envelope values that the next hop would refuse or that
cannot go on an SMTP command line are refused at MAIL, RCPT or XFORWARD, where the
client can still be told why, instead of at the end of DATA.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from contentfilter import replies
from contentfilter.errors import SessionClosed
from contentfilter.model import Reply

# RFC 5321 section 4.5.3.1.4: 512 octets, plus what extensions add (SIZE, SMTPUTF8,
# DSN's ORCPT of up to 500 characters); Postfix's line_length_limit is 2048.
COMMAND_LINE_LIMIT = 4096
READ_PIECE = 65536  # the stream buffer: DATA is read in pieces of up to this size

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\udc80-\udcff]")  # aiosmtpd's surrogateescape of non-UTF-8 bytes
_DIGITS = re.compile(r"[0-9]{1,5}")

T = TypeVar("T")


class SessionReader:
    """The client's bytes for one session: aiosmtpd reads through this.

    `refuse` writes a reply line and is called before the session is ended with
    SessionClosed (a ConnectionResetError, which aiosmtpd lets end the session).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        refuse: Callable[[Reply], None],
        *,
        hostname: str,
        idle_timeout: float,
        min_data_rate: float,
    ) -> None:
        self._reader = reader
        self._refuse = refuse
        self._hostname = hostname
        self._idle_timeout = idle_timeout
        self._min_data_rate = min_data_rate
        self._data_deadline: float | None = None

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        if separator != b"\n":  # DATA (read_data), while start_data's deadline runs
            return self._count(await self._within_deadline(self._reader.readuntil(separator)))
        try:
            return await self._within(self._idle_timeout, self._reader.readuntil(separator))
        except asyncio.LimitOverrunError:
            self._close(replies.line_too_long(COMMAND_LINE_LIMIT), "command line too long")
            raise  # not reached: _close raises

    async def readline(self) -> bytes:
        return await self.readuntil(b"\n")

    async def readexactly(self, size: int) -> bytes:
        return self._count(await self._within_deadline(self._reader.readexactly(size)))

    async def read(self, size: int = -1) -> bytes:
        return await self._within(self._idle_timeout, self._reader.read(size))

    def start_data(self) -> None:
        """DATA begins: it may take `idle_timeout` plus one second per `min_data_rate` bytes."""
        self._data_deadline = asyncio.get_running_loop().time() + self._idle_timeout

    def end_data(self) -> None:
        self._data_deadline = None

    def _count(self, piece: bytes) -> bytes:
        if self._data_deadline is not None:
            self._data_deadline += len(piece) / self._min_data_rate
        return piece

    async def _within_deadline(self, reading: Awaitable[T]) -> T:
        if self._data_deadline is None:
            return await self._within(self._idle_timeout, reading)
        left = self._data_deadline - asyncio.get_running_loop().time()
        return await self._within(min(self._idle_timeout, max(left, 0.0)), reading)

    async def _within(self, seconds: float, reading: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(seconds):
                return await reading
        except TimeoutError:
            self._close(replies.timeout_exceeded(self._hostname), "timeout")
            raise  # not reached: _close raises

    def _close(self, reply: Reply, reason: str) -> None:
        self._refuse(reply)
        raise SessionClosed(reason)


# --- envelope values ------------------------------------------------------------------


def argument_problem(arg: str) -> str | None:
    """Why a MAIL or RCPT argument cannot be passed on (None: it can).

    aiosmtpd hands us non-UTF-8 bytes as surrogates; the relay cannot put control
    characters on a command line (RFC 5321 section 4.1.2 allows none in a path).
    """
    if _SURROGATE.search(arg):
        return "bad UTF-8"
    if "\x00" in arg:
        return "NUL character"
    if _CONTROL.search(arg):
        return "control character"
    return None


def parameter_problem(value: str) -> str | None:
    """DSN parameters (ENVID, ORCPT) are xtext (RFC 3461 section 4): printable ASCII."""
    if not value.isascii():
        return "not ASCII (RFC 3461 xtext)"
    if _CONTROL.search(value):
        return "control character"
    return None


def xforward_problem(name: str, value: str) -> str | None:
    """Why an XFORWARD attribute value is refused (None: it is taken).

    Postfix sends the values xtext-encoded (XFORWARD_README), so a control
    character or a byte that is not UTF-8 never comes from it.
    """
    problem = argument_problem(value)
    if problem is not None:
        return problem
    if name == "PORT" and not (_DIGITS.fullmatch(value) or value == "[UNAVAILABLE]"):
        return "not a port number"
    return None


def printable_reply(status: str) -> str:
    """A reply safe to send though it echoes what the client sent: a byte that was not
    UTF-8 or a control character becomes "?" (Postfix neuters them the same way)."""
    lines = status.split("\r\n")
    return "\r\n".join(_CONTROL.sub("?", _SURROGATE.sub("?", line)) for line in lines)
