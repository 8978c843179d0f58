"""SMTP and LMTP in: the only user of aiosmtpd.

Adds to aiosmtpd what Postfix's content-filter protocol needs: XFORWARD (Postfix's
XFORWARD_README), DSN parameters passed through (RFC 3461), enhanced status codes
(RFC 2034), a client access list, SMTP smuggling protection (bare CR/LF refused),
and a reply to end-of-DATA only after the verdict and the next hop's answer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from contentfilter import __version__, client_input, replies
from contentfilter.acceptor import Acceptor, Listening
from contentfilter.addresses import HostPort, Network
from contentfilter.client_input import COMMAND_LINE_LIMIT, READ_PIECE, SessionReader
from contentfilter.config import Config, Listener, ServerSettings
from contentfilter.errors import SessionClosed
from contentfilter.model import Envelope as MessageEnvelope
from contentfilter.model import Recipient, Reply, new_mail_id
from contentfilter.pipeline import Pipeline
from contentfilter.relay import address_problem
from contentfilter.rfc5322 import read_message
from contentfilter.sessionboard import SessionBoard

log = logging.getLogger("contentfilter.server")

LISTEN_BACKLOG = 1024  # connections the kernel queues while every worker is busy
XFORWARD_NAMES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
DSN_MAIL_PARAMETERS = ("RET", "ENVID")
DSN_RCPT_PARAMETERS = ("NOTIFY", "ORCPT")

# aiosmtpd's own reply lines as we send them
_ENHANCED = {line: replies.render(reply) for line, reply in replies.AIOSMTPD_REPLIES.items()}


class FilterEnvelope(Envelope):
    """aiosmtpd's envelope plus what Postfix sends beside it."""

    def __init__(self) -> None:
        super().__init__()
        self.xforward: dict[str, str] = {}
        self.dsn: dict[str, str] = {}
        self.recipients: list[Recipient] = []
        self.received: float | None = None  # seconds from the DATA reply to end-of-DATA


_sequence = itertools.count(1)


def new_log_id() -> str:
    """amavisd-new style id, `PID-NN`, as mailgraph and admins know it."""
    return f"{os.getpid():05d}-{next(_sequence):02d}"


class SessionCounter:
    """Concurrent sessions, bounded by server.max_sessions.

    With several workers the limit is for all of them together: `board` holds every
    worker's count and `slot` is this worker's place in it.
    """

    def __init__(self, limit: int, board: SessionBoard | None = None, slot: int = 0) -> None:
        self.limit = limit
        self.active = 0
        self.board = board
        self.slot = slot
        self.idle = asyncio.Event()  # no session open in this process
        self.idle.set()
        self.on_refused: Callable[[str], None] = lambda reason: None  # metrics
        self.on_change: Callable[[int], None] = lambda active: None  # metrics

    def enter(self) -> bool:
        total = self.active if self.board is None else self.board.total()
        if total >= self.limit:
            return False
        self._set(self.active + 1)
        return True

    def leave(self) -> None:
        self._set(self.active - 1)

    def _set(self, active: int) -> None:
        self.active = active
        if self.board is not None:
            self.board.set(self.slot, active)
        if active:
            self.idle.clear()
        else:
            self.idle.set()
        self.on_change(active)


class _CommandSizeLimits(dict[str, int]):
    """COMMAND_LINE_LIMIT for every command, per session.

    aiosmtpd's own table is one dict shared by all sessions, 512 bytes for RCPT (too
    little for a DSN ORCPT), and grows for MAIL on every EHLO anyone sends.
    """

    def __getitem__(self, command: str) -> int:
        return COMMAND_LINE_LIMIT

    def __setitem__(self, command: str, limit: int) -> None:
        pass


class _FilterProtocol:
    """Our additions, mixed into aiosmtpd's SMTP and LMTP classes."""

    envelope: FilterEnvelope
    session: Session
    transport: Any
    allowed_clients: Sequence[Network]
    sessions: SessionCounter
    settings: ServerSettings
    _reader: SessionReader
    _writer: asyncio.StreamWriter

    def __init__(self, *args: Any, data_size_limit: int, **kwargs: Any) -> None:
        # aiosmtpd sizes its stream buffer by `line_length_limit`: the most a session
        # buffers besides its message; DATA is read in pieces of this size.
        self.line_length_limit = READ_PIECE
        super().__init__(*args, data_size_limit=data_size_limit, **kwargs)  # type: ignore[call-arg]
        self.command_size_limit = COMMAND_LINE_LIMIT
        self.command_size_limits = _CommandSizeLimits()
        self.ended = asyncio.Event()  # the connection is gone (`Server.serve_connection`)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)  # type: ignore[misc]
        self.ended.set()

    def _cb_client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super()._cb_client_connected(reader, writer)  # type: ignore[misc]
        self._reader = SessionReader(
            reader,
            self._refuse,
            hostname=self.settings.hostname,
            idle_timeout=self.settings.idle_timeout,
            min_data_rate=self.settings.min_data_rate,
        )

    def _refuse(self, reply: Reply) -> None:
        """The last reply of a session the filter ends (SessionReader raises next)."""
        self._writer.write(replies.render(reply).encode("utf-8") + b"\r\n")

    def _timeout_cb(self) -> None:
        """aiosmtpd's timer would also run out while a message is being scanned.

        The client's time is bounded where we wait for it, in SessionReader.
        """

    def _create_envelope(self) -> FilterEnvelope:
        return FilterEnvelope()

    async def push(self, status: str) -> None:
        """Send a reply; a client that does not read them for `idle_timeout` is dropped."""
        status = client_input.printable_reply(_ENHANCED.get(status, status))
        try:
            async with asyncio.timeout(self.settings.idle_timeout):
                await super().push(status)  # type: ignore[misc]
        except TimeoutError:
            self.transport.abort()  # what it did not read is not worth waiting for
            raise SessionClosed("the client does not read our replies") from None

    async def _handle_client(self) -> None:
        peer = self.session.peer
        local = not isinstance(peer, tuple)  # a Unix socket (spawn(8))
        host = peer[0] if isinstance(peer, tuple) else "local"
        if not local and not any(host in network for network in self.allowed_clients):
            log.warning("refused connection from %s: not in server.allowed_clients", host)
            self.sessions.on_refused("not_allowed")
            await self.push(replies.render(replies.access_denied()))
            self.transport.close()
            return
        if not self.sessions.enter():
            log.warning("refused connection from %s: server.max_sessions reached", host)
            self.sessions.on_refused("max_sessions")
            await self.push(replies.render(replies.too_many_sessions()))
            self.transport.close()
            return
        try:
            await super()._handle_client()  # type: ignore[misc]
        except SessionClosed as closed:
            log.warning("closed session with %s: %s", host, closed)
            if self.transport is not None:  # a plain close would wait for it to read
                self.transport.abort()
        except ConnectionResetError:
            log.info("%s closed the session", host)
        finally:
            self.sessions.leave()

    async def _refused(self, reply: Reply) -> None:
        await self.push(replies.render(reply))

    async def smtp_XFORWARD(self, arg: str | None) -> None:
        """Postfix's XFORWARD: NAME, ADDR, PORT, PROTO, HELO, IDENT, SOURCE."""
        if not arg:
            await self.push(
                replies.render(replies.syntax_error("Syntax: XFORWARD attribute=value..."))
            )
            return
        if client_input.argument_problem(arg) == "bad UTF-8":
            await self._refused(replies.bad_utf8())
            return
        attributes = {}
        for item in arg.split():
            name, sep, value = item.partition("=")
            if not sep or name.upper() not in XFORWARD_NAMES:
                await self.push(
                    replies.render(replies.syntax_error(f"Bad XFORWARD attribute name: {name}"))
                )
                return
            problem = client_input.xforward_problem(name.upper(), value)
            if problem:
                refusal = replies.bad_utf8() if problem == "bad UTF-8" else None
                await self._refused(refusal or replies.bad_xforward(name.upper(), problem))
                return
            attributes[name.upper()] = value
        self.envelope.xforward.update(attributes)
        await self.push(replies.render(replies.ok()))

    async def smtp_DATA(self, arg: str | None) -> None:
        """DATA, read in large pieces (aiosmtpd reads it line by line: 90% of our CPU)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):  # type: ignore[attr-defined]
            return
        if not self.envelope.rcpt_tos:
            await self.push(replies.render(replies.bad_sequence("Error: need RCPT command")))
            return
        if arg:
            await self.push(replies.render(replies.syntax_error("Syntax: DATA")))
            return
        await self.push(replies.render(replies.start_data()))
        started = time.monotonic()
        self._reader.start_data()
        content = await read_data(self._reader, self.data_size_limit)  # type: ignore[attr-defined]
        self._reader.end_data()
        self.envelope.received = time.monotonic() - started
        if content is None:
            await self.push(replies.render(replies.size_exceeded()))
            self._set_post_data_state()  # type: ignore[attr-defined]
            return
        self.envelope.content = self.envelope.original_content = content
        handler: Handler = self.event_handler  # type: ignore[attr-defined]
        if not handler.begin():  # stopping: what is not answered now is not processed
            self._set_post_data_state()  # type: ignore[attr-defined]
            await self.push(replies.render(replies.shutting_down()))
            self.transport.close()
            return
        try:  # a stop waits until the reply is written, not only until the verdict
            status = await self._call_handler_hook("DATA")  # type: ignore[attr-defined]
            self._set_post_data_state()  # type: ignore[attr-defined]
            await self.push(replies.render(replies.ok()) if status is MISSING else status)
        finally:
            handler.end()

    async def smtp_MAIL(self, arg: str | None) -> None:
        remaining, dsn = _take_parameters(arg, DSN_MAIL_PARAMETERS)
        refusal = _argument_refusal(arg, remaining, dsn, replies.bad_sender)
        if refusal:
            await self._refused(refusal)
            return
        had_sender = bool(self.envelope.mail_from)
        await super().smtp_MAIL(remaining)  # type: ignore[misc]
        if self.envelope.mail_from and not had_sender:
            self.envelope.dsn = dsn

    async def smtp_RCPT(self, arg: str | None) -> None:
        remaining, dsn = _take_parameters(arg, DSN_RCPT_PARAMETERS)
        refusal = _argument_refusal(arg, remaining, dsn, replies.bad_recipient)
        if self.envelope.mail_from and len(self.envelope.rcpt_tos) >= self.settings.max_recipients:
            refusal = replies.too_many_recipients()
        if refusal:
            await self._refused(refusal)
            return
        before = len(self.envelope.rcpt_tos)
        await super().smtp_RCPT(remaining)  # type: ignore[misc]
        if len(self.envelope.rcpt_tos) > before:
            address = self.envelope.rcpt_tos[-1]
            self.envelope.recipients.append(
                Recipient(address, notify=dsn.get("NOTIFY"), orcpt=dsn.get("ORCPT"))
            )


def _argument_refusal(
    arg: str | None,
    remaining: str | None,
    dsn: dict[str, str],
    bad_address: Callable[[str], Reply],
) -> Reply | None:
    """The reply refusing a MAIL or RCPT argument the next hop could not be given."""
    if client_input.argument_problem(arg or "") == "bad UTF-8":
        return replies.bad_utf8()
    problem = client_input.argument_problem(remaining or "")
    if problem:
        return bad_address(problem)
    for name, value in dsn.items():
        problem = client_input.parameter_problem(value)
        if problem:
            return replies.bad_parameter(name, problem)
    return None


async def read_data(
    reader: asyncio.StreamReader | SessionReader, limit: int | None
) -> bytes | None:
    """The message after DATA, dot-unstuffed; None if it was larger than `limit`.

    The end is a line holding only "." (RFC 5321 section 4.1.1.4): ".\r\n" right at the
    start or after CRLF. A dot that starts any other line is removed (section 4.5.2).
    Over the limit, the rest is read and thrown away so the session stays in step.
    """
    pieces: list[bytes] = []
    size = 0
    tail = b"\r\n"  # the start of DATA counts as the start of a line
    while True:
        try:
            piece = await reader.readuntil(b".\r\n")
        except asyncio.LimitOverrunError as error:
            piece = await reader.readexactly(error.consumed)
        except asyncio.IncompleteReadError as error:
            raise ConnectionResetError("connection closed during DATA") from error
        size += len(piece)
        ended = (tail + piece[:-3]).endswith(b"\r\n") and piece.endswith(b".\r\n")
        if limit is None or size <= limit + 3:
            pieces.append(piece)
        tail = (tail + piece)[-2:]
        if ended:
            break
    if limit is not None and size > limit + 3:
        return None
    pieces[-1] = pieces[-1][:-3]  # the end-of-data line (it ends the last piece)
    if pieces[0].startswith(b"."):
        pieces[0] = pieces[0][1:]
    data = b"".join(pieces)  # one copy of the message: no slicing of the whole
    del pieces[:]
    return data.replace(b"\r\n.", b"\r\n")  # `data` itself when nothing is stuffed


def _split_parameter(word: str) -> tuple[str, str]:
    name, _, value = word.partition("=")
    return name.upper(), value


def _take_parameters(arg: str | None, names: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """Remove the named ESMTP parameters from a MAIL/RCPT argument (values keep their case)."""
    if arg is None:
        return None, {}
    address_end = arg.find(">")
    head, tail = (arg, "") if address_end < 0 else (arg[: address_end + 1], arg[address_end + 1 :])
    kept, taken = [], {}
    for word in tail.split():
        name, value = _split_parameter(word)
        if name in names:
            taken[name] = value
        else:
            kept.append(word)
    return " ".join([head, *kept]), taken


class FilterSMTP(_FilterProtocol, SMTP):  # type: ignore[misc]
    pass


class FilterLMTP(_FilterProtocol, LMTP):  # type: ignore[misc]
    pass


class Handler:
    """aiosmtpd handler: builds the Message, runs the pipeline, answers."""

    def __init__(self, config: Config, pipeline: Pipeline, listener: Listener) -> None:
        self.config = config
        self.pipeline = pipeline
        self.listener = listener
        self.in_flight = 0  # messages between end-of-DATA and their reply
        self.idle = asyncio.Event()
        self.idle.set()
        self.closing = False  # stopping: no message starts any more

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        extra = [
            "250-PIPELINING",
            "250-ENHANCEDSTATUSCODES",
            "250-DSN",
            "250-XFORWARD " + " ".join(XFORWARD_NAMES),
        ]
        return [*responses[:-1], *extra, "250 HELP"]

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        problem = address_problem(_null_sender_as_empty(address))
        if problem:
            return replies.render(replies.bad_sender(problem))
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.render(replies.sender_ok())

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        problem = address_problem(address)
        if problem:
            return replies.render(replies.bad_recipient(problem))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.render(replies.recipient_ok())

    async def handle_exception(self, error: Exception) -> str:
        self.pipeline.faults.record("SMTP session", error)
        return replies.render(replies.failure("-", error))

    def begin(self) -> bool:
        """A message reached end-of-DATA; False once the server is stopping."""
        if self.closing:
            return False
        self.in_flight += 1
        self.idle.clear()
        return True

    def end(self) -> None:
        """Its reply has been written."""
        self.in_flight -= 1
        if not self.in_flight:
            self.idle.set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: FilterEnvelope) -> str:
        answers = await self._process(session, envelope)
        return "\r\n".join(replies.render(reply) for reply in answers)

    async def _process(self, session: Session, envelope: FilterEnvelope) -> list[Reply]:
        """The reply to end-of-DATA: one for SMTP, one per recipient for LMTP."""
        lmtp = self.listener.protocol == "lmtp"
        log_id = new_log_id()
        raw: bytes = envelope.original_content or b""
        message = read_message(log_id, new_mail_id(), self._envelope(session, envelope), raw)
        if has_bare_line_ending(raw):
            reply = replies.bare_line_ending()
            log.warning("(%s) rejected: %s", log_id, reply.text)
            return [reply] * (len(message.envelope.recipients) if lmtp else 1)
        outcome = await self.pipeline.handle(message, lmtp=lmtp, received=envelope.received)
        if lmtp:
            return replies.per_recipient(outcome.dispositions)
        return [replies.combine(log_id, outcome.dispositions)]

    def _envelope(self, session: Session, envelope: FilterEnvelope) -> MessageEnvelope:
        options = {o.split("=")[0].upper(): o.partition("=")[2] for o in envelope.mail_options}
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        recipients = envelope.recipients or [Recipient(a) for a in envelope.rcpt_tos]
        return MessageEnvelope(
            mail_from=_null_sender_as_empty(envelope.mail_from),
            recipients=tuple(recipients),
            body=options.get("BODY") or None,
            smtputf8=bool(envelope.smtp_utf8),
            ret=envelope.dsn.get("RET"),
            envid=envelope.dsn.get("ENVID"),
            xforward=tuple(envelope.xforward.items()),
            client_address=peer,
            listener=str(self.listener.address),
        )


def _null_sender_as_empty(address: str | None) -> str:
    """aiosmtpd gives the null sender (`MAIL FROM:<>`, RFC 5321 section 4.5.5) as "<>"."""
    return "" if address is None or address == "<>" else address


def has_bare_line_ending(raw: bytes) -> bool:
    """A CR or LF outside a CRLF pair: the next hop could see a different end of DATA.

    SMTP smuggling (CVE-2023-51764 and kin) hides `<LF>.<CR><LF>` or `<CR>.<CR><LF>`
    in DATA so that a later server ends the message early and reads the rest as new
    commands. RFC 5321 section 2.3.8 allows CR and LF only as a CRLF pair.
    """
    crlf = raw.count(b"\r\n")
    return raw.count(b"\n") != crlf or raw.count(b"\r") != crlf


class Server:
    """All listeners of one filter process."""

    def __init__(self, config: Config, pipeline: Pipeline, sessions: SessionCounter | None = None):
        self.config = config
        self.pipeline = pipeline
        self.handlers: list[Handler] = []
        self.servers: list[asyncio.base_events.Server] = []
        self.acceptor: Acceptor | None = None  # on sockets shared with other workers
        self.sessions = sessions or SessionCounter(config.server.max_sessions)

    async def start(
        self, sockets: Mapping[HostPort, socket.socket] | None = None, accepting: bool = True
    ) -> None:
        """Listen on every configured address: bind here, or use the bound and
        listening `sockets` a supervisor shares between its workers; accept
        connections now, or from `accept()` on."""
        loop = asyncio.get_running_loop()
        shared: list[Listening] = []
        for listener in self.config.server.listen:
            handler = Handler(self.config, self.pipeline, listener)
            self.handlers.append(handler)
            factory = lambda h=handler, lst=listener: self._protocol(h, lst)  # noqa: E731
            if sockets is not None:  # listening already, with the supervisor's backlog
                shared.append(Listening(sockets[listener.address], factory))
            else:
                server = await loop.create_server(
                    factory,
                    host=listener.address.host,
                    port=listener.address.port,
                    reuse_address=True,
                    backlog=LISTEN_BACKLOG,
                    start_serving=accepting,
                )
                self.servers.append(server)
            log.info("listening on %s (%s)", listener.address, listener.protocol.upper())
        if sockets is not None:
            self.acceptor = Acceptor(shared, self.sessions.board, self.sessions.slot)
            if accepting:
                self.acceptor.start()

    async def accept(self) -> None:
        """Accept connections on listeners bound with `start(accepting=False)`."""
        for server in self.servers:
            await server.start_serving()
        if self.acceptor is not None:
            self.acceptor.start()

    async def serve_connection(self, sock: socket.socket, listener: Listener) -> None:
        """One session on a connection someone else accepted (Postfix's spawn(8)).

        Returns when the session has ended and its last reply has been written.
        """
        handler = Handler(self.config, self.pipeline, listener)
        self.handlers.append(handler)
        protocol = self._protocol(handler, listener)
        ended: asyncio.Event = protocol.ended  # type: ignore[attr-defined]
        await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, sock)
        await ended.wait()

    def _protocol(self, handler: Handler, listener: Listener) -> SMTP:
        settings = self.config.server
        kind = FilterLMTP if listener.protocol == "lmtp" else FilterSMTP
        protocol = kind(
            handler,
            data_size_limit=settings.message_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.hostname,
            ident=f"ESMTP contentfilter {__version__}",
            timeout=settings.idle_timeout,
            command_call_limit=None,
        )
        protocol.allowed_clients = settings.allowed_clients
        protocol.settings = settings
        protocol.sessions = self.sessions
        return protocol

    async def drain(self, timeout: float) -> None:
        """Stop accepting, then wait for messages in progress to get their reply."""
        await self._stop_accepting(asyncio.get_running_loop())
        for server in self.servers:
            server.close()
        await self._wait_idle(timeout)
        for handler in self.handlers:  # a message that ends its DATA from now on gets
            handler.closing = True  # 421 and is not processed: its reply could be lost
        await self._wait_idle(timeout)
        in_flight = sum(h.in_flight for h in self.handlers)
        if in_flight:
            log.warning(
                "stopping with %d message(s) unanswered: Postfix will retry them", in_flight
            )

    async def _wait_idle(self, timeout: float) -> None:
        waits = [asyncio.create_task(h.idle.wait()) for h in self.handlers]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=timeout)
            for task in pending:
                task.cancel()

    async def _stop_accepting(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop taking connections off the listening sockets, then let the ones already
        taken become sessions before the servers close: asyncio (3.11) drops, without
        a word, a connection it accepted when its server closes before the connection's
        transport is made, and the client sees it closed before the greeting. (On
        shared sockets the Acceptor makes every transport before it returns.)"""
        for server in self.servers:
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
        if self.acceptor is not None:  # returns once the taken ones have their protocol
            await self.acceptor.stop()
        for _ in range(3):  # accepted connections get their transports a turn later
            await asyncio.sleep(0)

    async def retire(self, timeout: float) -> None:
        """Stop accepting, then let every open session end as its client ends it.

        For a reload: the listening sockets stay open in the supervisor and the new
        workers, so a client sees neither a refused connection nor a 421; a session
        still open after `timeout` is cut as by `drain`.
        """
        loop = asyncio.get_running_loop()
        await self._stop_accepting(loop)
        for server in self.servers:
            server.close()
        deadline = loop.time() + timeout
        try:
            # A connection accepted just before the close starts its session (and
            # counts) a few loop turns later: idle twice, a pause apart, is idle.
            while True:
                await asyncio.sleep(0.5)
                async with asyncio.timeout_at(deadline):
                    await self.sessions.idle.wait()
                await asyncio.sleep(0.5)
                if self.sessions.idle.is_set():
                    break
        except TimeoutError:
            log.warning("%d session(s) still open after %gs", self.sessions.active, timeout)
        await self.drain(timeout)
