"""`contentfilter spawn` on a socketpair, as Postfix's spawn(8) hands over a connection."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import messages
from tests.support.daemons import CaptureSink, filter_command


class Session:
    """The client end of the socket the spawned filter serves."""

    def __init__(self, arguments: list[str], log: Path) -> None:
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [*filter_command(), "spawn", *arguments, "--log-file", str(log)],
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
        )
        theirs.close()
        self.sock = ours
        self.sock.settimeout(120)
        self.lines = ours.makefile("rb")

    def reply(self) -> list[str]:
        lines = []
        while True:
            line = self.lines.readline().decode()
            assert line, "the filter closed the connection"
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return lines

    def command(self, text: str) -> list[str]:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()


@pytest.fixture
def spawn(sink: CaptureSink, tmp_path: Path) -> Iterator[Callable[..., Session]]:
    started: list[Session] = []

    def start(*arguments: str) -> Session:
        base = ["--clamd", "off", "--spamd", "off", "--next-hop", sink.address]
        session = Session([*base, *arguments], tmp_path / "filter.log")
        started.append(session)
        return session

    yield start
    for session in started:
        session.sock.close()
        session.process.wait(30)


def test_one_smtp_session_with_xforward_then_exit(
    spawn: Callable[..., Session], sink: CaptureSink
) -> None:
    session = spawn()
    assert session.reply()[0].startswith("220 ")
    assert "250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE" in session.command("EHLO mx")
    assert session.command("XFORWARD ADDR=192.0.2.9 NAME=client.example") == ["250 2.0.0 Ok"]
    session.command(f"MAIL FROM:<{messages.SENDER}> RET=HDRS")
    session.command(f"RCPT TO:<{messages.RECIPIENT}> NOTIFY=FAILURE")
    session.command("DATA")
    (final,) = session.command(messages.clean().decode() + ".")
    assert final.startswith("250 2.0.0 Ok, id="), final
    assert session.command("QUIT") == ["221 Bye"]
    assert session.process.wait(30) == 0
    (arrived,) = sink.messages
    assert arrived.xforward.get("ADDR") == "192.0.2.9"
    assert "RET=HDRS" in arrived.mail_options
    assert arrived.rcpt_options[messages.RECIPIENT] == ["NOTIFY=FAILURE"]


def test_lmtp_answers_each_recipient(spawn: Callable[..., Session], sink: CaptureSink) -> None:
    sink.misbehave(rcpt_replies={"carol@recipient.example": "550 5.1.1 no such user"})
    session = spawn("--protocol", "lmtp")
    session.reply()
    session.command("LHLO mx")
    session.command(f"MAIL FROM:<{messages.SENDER}>")
    session.command(f"RCPT TO:<{messages.RECIPIENT}>")
    session.command("RCPT TO:<carol@recipient.example>")
    session.command("DATA")
    first = session.command(messages.clean().decode() + ".")
    second = session.reply()
    assert first[0].startswith("250 2.0.0 Ok, id="), first
    assert second[0].startswith("554 5.7.1 Rejected by next-hop MTA on relaying"), second
    session.command("QUIT")
    assert session.process.wait(30) == 0
