"""SMTP clients for tests: exact reply lines, raw bytes when a test needs them."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Sequence
from dataclasses import dataclass


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


@dataclass(frozen=True)
class Replies:
    """What the server answered to one transaction, as "CODE TEXT" lines."""

    mail: str
    rcpts: tuple[str, ...]
    data: str  # the reply to end-of-DATA ("" if DATA was not reached)

    @property
    def data_code(self) -> int:
        return int(self.data[:3])


def _line(code: int, text: bytes) -> str:
    # smtplib joins the lines of a multi-line reply with "\n"; keep the last line's
    # meaning by joining them back with a space.
    return f"{code} {text.decode('utf-8', 'replace').replace(chr(10), ' ')}"


def send(
    address: str,
    message: bytes,
    sender: str,
    recipients: Sequence[str],
    *,
    mail_options: Sequence[str] = (),
    rcpt_options: Sequence[str] = (),
    xforward: str | None = None,
    helo: str = "client.test",
    timeout: float = 120.0,
) -> Replies:
    """One transaction in a fresh session; every reply is returned, nothing raised."""
    with smtplib.SMTP(*host_port(address), local_hostname=helo, timeout=timeout) as smtp:
        return transaction(
            smtp,
            message,
            sender,
            recipients,
            mail_options=mail_options,
            rcpt_options=rcpt_options,
            xforward=xforward,
        )


def transaction(
    smtp: smtplib.SMTP,
    message: bytes,
    sender: str,
    recipients: Sequence[str],
    *,
    mail_options: Sequence[str] = (),
    rcpt_options: Sequence[str] = (),
    xforward: str | None = None,
) -> Replies:
    """MAIL, RCPT..., DATA on an open session (EHLO done here if not yet)."""
    smtp.ehlo_or_helo_if_needed()
    if xforward is not None:
        code, text = smtp.docmd("XFORWARD", xforward)
        assert code == 250, _line(code, text)
    mail = _line(*smtp.mail(sender, list(mail_options)))
    if not mail.startswith("2"):
        return Replies(mail, (), "")
    rcpts = tuple(_line(*smtp.rcpt(r, list(rcpt_options))) for r in recipients)
    if not any(r.startswith("2") for r in rcpts):
        smtp.rset()
        return Replies(mail, rcpts, "")
    return Replies(mail, rcpts, _line(*smtp.data(message)))


class RawSession:
    """A plain socket speaking SMTP: for bytes no well-behaved client would send."""

    def __init__(self, address: str, timeout: float = 120.0) -> None:
        self.sock = socket.create_connection(host_port(address), timeout=timeout)
        self.buffer = b""
        self.greeting = self.reply()

    def __enter__(self) -> RawSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def reply(self) -> str:
        """The next complete reply; its lines joined by CRLF, no final CRLF.

        "" if the server closed the connection before a complete reply.
        """
        lines = []
        while True:
            line = self._line()
            if line is None:
                return ""
            lines.append(line)
            if line[3:4] != b"-":
                return b"\r\n".join(lines).decode("utf-8", "replace")

    def _line(self) -> bytes | None:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def transaction(self, mail_from: str, recipients: list[str], data: bytes) -> str:
        """MAIL, RCPT for each recipient and DATA, each accepted; the end-of-DATA reply.

        `data` is sent as it is (already dot-stuffed), followed by the final dot.
        """
        assert self.command(f"MAIL FROM:<{mail_from}>").startswith("250")
        for recipient in recipients:
            assert self.command(f"RCPT TO:<{recipient}>").startswith("250")
        assert self.command("DATA").startswith("354")
        self.send(data + b".\r\n")
        return self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def pending(self) -> bytes:
        """Bytes received but not yet consumed as a reply."""
        return self.buffer
