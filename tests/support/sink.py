"""CaptureSink: the next hop in tests, recording exactly what the filter relays.

An aiosmtpd server in a background thread on a free loopback port. It advertises
XFORWARD and DSN (as Postfix's 10025 listener does), records every transaction with
the raw bytes of DATA (after dot-unstuffing, line endings untouched) and can be told
to misbehave: answer RCPT or end-of-DATA with a given reply, refuse some recipients,
drop the connection during DATA, or hang.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

# MAIL/RCPT parameters aiosmtpd refuses by itself; we take them off before it parses
# the command and record them ourselves (original spelling kept).
_DSN_MAIL_PARAMETERS = {"RET", "ENVID"}
_DSN_RCPT_PARAMETERS = {"NOTIFY", "ORCPT"}

Drop = Literal["after_354", "before_data_reply"]


@dataclass
class Transaction:
    """One MAIL..DATA transaction as the sink saw it."""

    mail_from: str  # "" for the null sender <>
    mail_options: list[str]
    rcpt_tos: list[str]  # accepted recipients, in order
    rcpt_options: dict[str, list[str]]  # accepted recipient -> its RCPT parameters
    refused: dict[str, str]  # refused recipient -> the reply we gave
    data: bytes
    xforward: dict[str, str]
    helo: str
    peer: str
    reply: str = ""  # our end-of-DATA reply


@dataclass
class Behaviour:
    """How the sink answers; the defaults accept everything."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> reply
    rcpt_reply: str | None = None  # reply for every RCPT not in rcpt_replies
    data_reply: str | None = None  # end-of-DATA reply instead of 250
    drop: Drop | None = None
    hang: bool = False  # never answer end-of-DATA


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP plus XFORWARD, DSN parameters and fault injection.

    aiosmtpd makes one instance per connection, so per-session state lives here.
    """

    def __init__(self, sink: CaptureSink, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink = sink
        self.xforward: dict[str, str] = {}
        self.mail_parameters: list[str] = []  # of the current MAIL, as sent
        self.rcpt_parameters: list[str] = []  # of the current RCPT, as sent
        self.accepted_parameters: dict[str, list[str]] = {}  # recipient -> its parameters
        self.refused: dict[str, str] = {}  # recipient -> our refusal

    async def smtp_XFORWARD(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        for token in (arg or "").split():
            name, _, value = token.partition("=")
            self.xforward[name.upper()] = value
        await self.push("250 2.0.0 Ok")

    async def smtp_MAIL(self, arg: str | None) -> None:
        self.mail_parameters = _parameters(arg, "FROM:")
        self.accepted_parameters = {}
        self.refused = {}
        await super().smtp_MAIL(_without(arg, _DSN_MAIL_PARAMETERS))

    async def smtp_RCPT(self, arg: str | None) -> None:
        self.rcpt_parameters = _parameters(arg, "TO:")
        await super().smtp_RCPT(_without(arg, _DSN_RCPT_PARAMETERS))

    async def smtp_DATA(self, arg: str) -> None:
        if self.sink.behaviour.drop == "after_354" and self.envelope and self.envelope.rcpt_tos:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readuntil(b"\r\n")  # take one line, then vanish
            await self.vanish()
        await super().smtp_DATA(arg)

    async def vanish(self) -> None:
        """Drop the connection without a word; connection_lost() cancels the caller."""
        assert isinstance(self.transport, asyncio.Transport)
        self.transport.abort()
        await asyncio.sleep(3600)


def _parameters(arg: str | None, keyword: str) -> list[str]:
    """The ESMTP parameters after the <address>, as sent."""
    if not arg:
        return []
    text = arg[len(keyword) :] if arg[: len(keyword)].upper() == keyword else arg
    text = text.strip()
    text = text[text.find(">") + 1 :] if text.startswith("<") else text.partition(" ")[2]
    return text.split()


def _without(arg: str | None, names: set[str]) -> str | None:
    if arg is None:
        return None
    kept = [t for t in arg.split(" ") if t.partition("=")[0].upper() not in names]
    return " ".join(kept)


class _Handler:
    def __init__(self, sink: CaptureSink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self,
        server: _SinkSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        server.xforward = {}
        extra = ["250-XFORWARD NAME ADDR PROTO HELO SOURCE", "250-DSN", "250-ENHANCEDSTATUSCODES"]
        return responses[:-1] + extra + responses[-1:]

    async def handle_MAIL(
        self,
        server: _SinkSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        envelope.mail_from = address  # "<>" for the null sender: aiosmtpd needs it truthy
        envelope.mail_options = list(server.mail_parameters)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: _SinkSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        behaviour = self.sink.behaviour
        reply = behaviour.rcpt_replies.get(address, behaviour.rcpt_reply)
        if reply is not None and not reply.startswith("2"):
            server.refused[address] = reply
            return reply
        envelope.rcpt_tos.append(address)
        server.accepted_parameters[address] = list(server.rcpt_parameters)
        return reply or "250 2.1.5 Ok"

    async def handle_DATA(self, server: _SinkSMTP, session: Session, envelope: Envelope) -> str:
        behaviour = self.sink.behaviour
        transaction = _transaction(server, session, envelope)
        if behaviour.hang or behaviour.drop == "before_data_reply":
            self.sink._record(transaction, accepted=False)
            if behaviour.hang:
                await asyncio.sleep(3600)
            await server.vanish()
        self.sink.counter += 1
        transaction.reply = behaviour.data_reply or (
            f"250 2.0.0 Ok: queued as SINK{self.sink.counter:04d}"
        )
        self.sink._record(transaction, accepted=transaction.reply.startswith("2"))
        return transaction.reply


def _transaction(server: _SinkSMTP, session: Session, envelope: Envelope) -> Transaction:
    mail_from = envelope.mail_from or ""
    peer_host, peer_port = session.peer if isinstance(session.peer, tuple) else ("?", 0)
    return Transaction(
        mail_from="" if mail_from == "<>" else mail_from,
        mail_options=list(envelope.mail_options),
        rcpt_tos=list(envelope.rcpt_tos),
        rcpt_options=dict(server.accepted_parameters),
        refused=dict(server.refused),
        data=bytes(envelope.original_content or b""),
        xforward=dict(server.xforward),
        helo=session.host_name or "",
        peer=f"{peer_host}:{peer_port}",
    )


class _SinkController(Controller):
    def __init__(self, sink: CaptureSink, **kwargs: Any) -> None:
        super().__init__(_Handler(sink), **kwargs)
        self.sink = sink

    def factory(self) -> _SinkSMTP:
        return _SinkSMTP(self.sink, self.handler, **self.SMTP_kwargs)


class CaptureSink:
    """A recording next hop on 127.0.0.1:<port>; use as a context manager or start()/stop().

    `messages` holds transactions the sink accepted (what "arrived"); `attempts` holds
    every transaction that reached end-of-DATA, accepted or not.
    """

    def __init__(self, hostname: str = "sink.test") -> None:
        from tests.support.net import free_port

        self.port = free_port()
        self.host = "127.0.0.1"
        self.address = f"{self.host}:{self.port}"
        self.behaviour = Behaviour()
        self.messages: list[Transaction] = []
        self.attempts: list[Transaction] = []
        self.counter = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._controller = _SinkController(
            self,
            hostname=self.host,
            port=self.port,
            server_hostname=hostname,
            enable_SMTPUTF8=True,
            data_size_limit=100 * 1024 * 1024,
            ready_timeout=10,
        )

    def start(self) -> CaptureSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> CaptureSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def clear(self) -> None:
        """Forget recorded mail and go back to accepting everything."""
        with self._lock:
            self.messages.clear()
            self.attempts.clear()
            self.behaviour = Behaviour()

    def misbehave(self, **changes: Any) -> None:
        """Set Behaviour fields: rcpt_reply, rcpt_replies, data_reply, drop, hang."""
        self.behaviour = Behaviour(**changes)

    def _record(self, transaction: Transaction, accepted: bool) -> None:
        with self._arrived:
            self.attempts.append(transaction)
            if accepted:
                self.messages.append(transaction)
            self._arrived.notify_all()

    def wait_for(self, count: int = 1, timeout: float = 30.0) -> list[Transaction]:
        """Block until `count` messages have arrived; return them (fails loudly)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} message(s) at the sink, got {len(self.messages)}"
                    )
                self._arrived.wait(remaining)
            return list(self.messages)
