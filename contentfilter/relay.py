"""SMTP out: hand passed mail to the next hop (Postfix's reinjection listener).

The only user of aiosmtplib. Connections are reused across messages (RSET before
each reuse, at most `max_use` messages per connection, idle ones closed after
`max_idle` seconds), XFORWARD is sent when the next hop offers it, and every
aiosmtplib error becomes one of our RelayError leaves here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.email import quote_address

from contentfilter.config import NextHopSettings
from contentfilter.errors import NextHopRefused, NextHopTimeout, NextHopUnavailable
from contentfilter.model import Envelope, Recipient

log = logging.getLogger("contentfilter.relay")

XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
WRITE_PIECE = 256 * 1024  # bytes of the message handed to the transport at a time


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The next hop's final answer for one recipient: its RCPT refusal or end-of-DATA reply."""

    recipient: Recipient
    code: int
    text: str

    @property
    def accepted(self) -> bool:
        return self.code < 400


@dataclass(frozen=True, slots=True)
class Delivery:
    """The next hop's answers for one transaction, one per recipient in RCPT order."""

    recipients: tuple[RecipientResult, ...]
    queue_id: str | None = None  # when the next hop accepted the message


def queue_id(text: str) -> str | None:
    """The queue id in an end-of-DATA reply text (Postfix: `2.0.0 Ok: queued as 4F1A2B3C`)."""
    words = text.split()
    if "as" in words and words.index("as") + 1 < len(words):
        return words[words.index("as") + 1]
    return None


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    uses: int = 0
    idle_since: float = 0.0


class NextHop:
    """A pool of SMTP sessions to the next hop."""

    def __init__(self, settings: NextHopSettings, hostname: str) -> None:
        self.settings = settings
        self.hostname = hostname
        self._idle: list[_Connection] = []
        self._closing: set[asyncio.Task[None]] = set()
        self.label = f"[{settings.address.host}]:{settings.address.port}"
        # told for each transaction whether it reuses a session (True) or opens one
        self.on_connection: Callable[[bool], None] | None = None

    async def deliver(
        self,
        envelope: Envelope,
        recipients: Sequence[Recipient],
        data: bytes,
    ) -> Delivery:
        """Send one transaction and return the answer for each recipient.

        RelayError when there is no answer per recipient: the next hop cannot be
        reached, times out, drops the connection, or refuses the session or MAIL FROM.
        """
        connection = await self._acquire()
        try:
            delivery = await self._transaction(connection.client, envelope, recipients, data)
        except BaseException:
            connection.client.close()  # its state is unknown: never reuse it
            raise
        self._release(connection)
        return delivery

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await _quit(connection.client)

    # --- connection pool ---------------------------------------------------------------

    async def _acquire(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since > self.settings.max_idle:
                self._quit_later(connection.client)
                continue
            try:
                await connection.client.rset()
            except aiosmtplib.SMTPException as error:
                log.debug("reused session to %s is gone (%s), reconnecting", self.label, error)
                connection.client.close()
                continue
            self._count_connection(True)
            return connection
        connection = _Connection(await self._connect())
        self._count_connection(False)
        return connection

    def _count_connection(self, reused: bool) -> None:
        if self.on_connection is not None:
            self.on_connection(reused)

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self.settings
        client = aiosmtplib.SMTP(
            hostname=settings.address.host,
            port=settings.address.port,
            local_hostname=self.hostname,
            timeout=settings.command_timeout,
            start_tls=False,
        )
        try:
            await client.connect(timeout=settings.connect_timeout)
            await client.ehlo()
        except aiosmtplib.SMTPTimeoutError as error:
            client.close()
            raise NextHopTimeout(f"timed out connecting to {self.label}") from error
        except aiosmtplib.SMTPResponseException as error:
            client.close()
            raise NextHopRefused(
                f"{self.label} refused the session", error.code, error.message
            ) from error
        except (aiosmtplib.SMTPException, OSError) as error:
            client.close()
            raise NextHopUnavailable(f"cannot connect to {self.label}: {error}") from error
        return client

    def _release(self, connection: _Connection) -> None:
        connection.uses += 1
        if connection.uses >= self.settings.max_use or not connection.client.is_connected:
            self._quit_later(connection.client)
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def _quit_later(self, client: aiosmtplib.SMTP) -> None:
        task = asyncio.ensure_future(_quit(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # --- one transaction ---------------------------------------------------------------

    async def _transaction(
        self,
        client: aiosmtplib.SMTP,
        envelope: Envelope,
        recipients: Sequence[Recipient],
        data: bytes,
    ) -> Delivery:
        try:
            return await self._exchange(client, envelope, recipients, data)
        except aiosmtplib.SMTPTimeoutError as error:
            raise NextHopTimeout(f"timeout talking to {self.label}") from error
        except aiosmtplib.SMTPResponseException as error:
            raise NextHopRefused(f"{self.label} refused", error.code, error.message) from error
        except (aiosmtplib.SMTPException, OSError) as error:
            raise NextHopUnavailable(f"lost connection to {self.label}: {error}") from error

    async def _exchange(
        self,
        client: aiosmtplib.SMTP,
        envelope: Envelope,
        recipients: Sequence[Recipient],
        data: bytes,
    ) -> Delivery:
        if self.settings.xforward and client.supports_extension("xforward"):
            await self._xforward(client, envelope)
        # UTF-8 addresses without SMTPUTF8 are passed on as they came: Postfix's smtpd
        # takes them too (smtputf8_enable), and refusing them here would fail the
        # message on every retry. The server refused what is not UTF-8 at MAIL/RCPT.
        encoding = "utf-8"
        options = envelope.mail_options()
        if "dsn" not in client.esmtp_extensions:
            options = [o for o in options if not o.startswith(("RET=", "ENVID="))]
        await client.mail(envelope.mail_from, options=options, encoding=encoding)
        results = [await self._rcpt(client, recipient, encoding) for recipient in recipients]
        if not any(r.accepted for r in results):
            await client.rset()
            return Delivery(tuple(results))
        reply = await self._data(client, data)
        final = tuple(
            RecipientResult(r.recipient, reply.code, reply.message) if r.accepted else r
            for r in results
        )
        return Delivery(final, queue_id(reply.message) if reply.code < 400 else None)

    async def _data(self, client: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
        """DATA without aiosmtplib's line-ending regexes (50 ms for a 2 MB message).

        Our messages have CRLF line endings only (the server refuses bare CR and LF),
        so dot-stuffing (RFC 5321 section 4.5.2) is one bytes.replace. A refusal of
        DATA itself is returned as the reply for the accepted recipients.
        """
        start = await client.execute_command(b"DATA")
        if start.code != 354:
            return start
        protocol = client.protocol
        if protocol is None:
            raise NextHopUnavailable(f"lost connection to {self.label}")
        try:
            async with asyncio.timeout(self.settings.data_timeout):
                for piece in _wire_pieces(data):
                    transport = protocol.transport
                    if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
                        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
                    transport.write(piece)
                    # the flow control StreamWriter.drain() uses: the transport holds at
                    # most one piece beyond its high-water mark, not a copy of the message
                    await protocol._drain_helper()
        except TimeoutError:
            raise aiosmtplib.SMTPTimeoutError("timed out sending the message") from None
        return await protocol.read_response(timeout=self.settings.data_timeout)

    async def _rcpt(
        self, client: aiosmtplib.SMTP, recipient: Recipient, encoding: str
    ) -> RecipientResult:
        options = recipient.rcpt_options() if "dsn" in client.esmtp_extensions else []
        try:
            reply = await client.rcpt(recipient.address, options=options, encoding=encoding)
        except aiosmtplib.SMTPRecipientRefused as refused:
            return RecipientResult(recipient, refused.code, refused.message)
        return RecipientResult(recipient, reply.code, reply.message)

    async def _xforward(self, client: aiosmtplib.SMTP, envelope: Envelope) -> None:
        offered = set(client.esmtp_extensions.get("xforward", "").upper().split())
        pairs = [
            f"{name}={value}"
            for name, value in envelope.xforward
            if name in offered and name in XFORWARD_ATTRIBUTES
        ]
        if not pairs:
            return
        reply = await client.execute_command(
            b"XFORWARD", *(p.encode("utf-8", "replace") for p in pairs)
        )
        if reply.code >= 400:
            log.debug("next hop refused XFORWARD: %s %s", reply.code, reply.message)


def address_problem(address: str) -> str | None:
    """Why `address` cannot be given to the next hop exactly as it is (None: it can).

    aiosmtplib re-parses each address before it puts it on the MAIL or RCPT line and
    refuses whitespace, angle brackets and quotes outside a quoted local part: the
    server refuses such an address where it arrives, instead of every retry of the
    message failing at the end of DATA.
    """
    try:
        quoted = quote_address(address)
    except ValueError:
        return "not a mailbox the next hop can be given"
    if quoted != f"<{address}>":
        return "not a mailbox the next hop can be given as it is"
    return None


def dot_stuffed(data: bytes) -> bytes:
    """The message as it goes on the wire after DATA, end-of-data line included."""
    return b"".join(_wire_pieces(data))


def _wire_pieces(data: bytes) -> Iterator[bytes | memoryview]:
    """`dot_stuffed(data)` in pieces of WRITE_PIECE bytes; `data` is copied only when
    it needs stuffing or line endings mended."""
    if data.count(b"\n") != data.count(b"\r\n") or data.count(b"\r") != data.count(b"\r\n"):
        data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)  # a DSN or edit gone wrong: be safe
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")  # `data` itself when no line starts with "."
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if len(stuffed) <= WRITE_PIECE:  # most mail: one write, one segment
        yield stuffed + b".\r\n"
        return
    view = memoryview(stuffed)
    for start in range(0, len(view), WRITE_PIECE):
        yield view[start : start + WRITE_PIECE]
    yield b".\r\n"


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit(timeout=5)
    except (aiosmtplib.SMTPException, OSError):
        client.close()
