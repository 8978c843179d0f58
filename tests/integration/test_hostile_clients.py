"""Clients that send what no MTA should: each gets a defined answer where it arrives.

Command lines are bounded in size, silent and slow clients in time, and envelope
values the next hop could not be given are refused at MAIL, RCPT or XFORWARD with
a 5xx naming the reason (Postfix's own texts), instead of a 250 followed by an
internal error at the end of DATA on every retry.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from tests.support import messages
from tests.support.client import RawSession, host_port, send
from tests.support.daemons import FilterFactory, PostfixStack
from tests.support.net import HangingServer
from tests.support.sink import CaptureSink

MESSAGE = (
    b"From: a@example.org\r\nTo: b@example.com\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
    b"Subject: hello\r\nMessage-ID: <1@example.org>\r\n\r\nhello\r\n"
)


def _config(**server: object) -> str:
    lines = "".join(f"  {key}: {value}\n" for key, value in server.items())
    return "server:\n" + lines + "scanners:\n  banned: {}\n  bad_header: {}\n"


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _long_line(address: str, size: int, replies: list[bytes]) -> None:
    """Send `size` bytes of one command line without CRLF; keep what the server answers."""
    with socket.create_connection(host_port(address), timeout=120) as sock:
        sock.recv(4096)  # greeting
        chunk = b"MAIL FROM:<" + b"a" * (1024 * 1024)
        sent = 0
        try:
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed the connection: what it said is what counts
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except OSError:
            pass
        replies.append(answer)


def test_long_command_lines_are_refused_and_memory_stays_bounded(
    filter_factory: FilterFactory,
) -> None:
    process = filter_factory(config_text=_config(idle_timeout=60))
    pid = process.process.pid
    before = _memory_kib(pid, "VmRSS")
    replies: list[bytes] = []
    senders = [
        threading.Thread(target=_long_line, args=(process.address, 20 * 1024 * 1024, replies))
        for _ in range(20)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert len(replies) == 20
    for answer in replies:
        assert answer.startswith(b"500 5.5.2 Error: command line longer than 4096 bytes"), answer
    # 20 lines of 20 MB each once took 400 MB; the bound is generous on purpose.
    assert _memory_kib(pid, "VmHWM") - before < 100 * 1024
    # ... and the filter still serves.
    with RawSession(process.address) as session:
        assert session.command("EHLO client.test").startswith("250")


def test_a_client_silent_in_a_command_line_is_disconnected(
    filter_factory: FilterFactory,
) -> None:
    process = filter_factory(config_text=_config(idle_timeout=1))
    with RawSession(process.address, timeout=60) as session:
        assert session.command("EHLO client.test").startswith("250")
        session.send(b"MAIL FROM:<slow")  # ... and nothing more
        reply = session.reply()
        assert reply.startswith("421 4.4.2 ") and reply.endswith("Error: timeout exceeded")
        assert session.reply() == ""  # closed


def test_a_client_that_trickles_data_is_cut_off(filter_factory: FilterFactory) -> None:
    process = filter_factory(config_text=_config(idle_timeout=2, min_data_rate=1000))
    with RawSession(process.address, timeout=60) as session:
        session.command("EHLO client.test")
        assert session.command("MAIL FROM:<a@example.org>").startswith("250")
        assert session.command("RCPT TO:<b@example.com>").startswith("250")
        assert session.command("DATA").startswith("354")
        session.sock.settimeout(0.3)
        answer = b""
        for _ in range(300):  # one byte every 0.3 s: never silent for 2 s, but too slow
            try:
                session.send(b"x")
                answer += session.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if b"\r\n" in answer:
                break
        assert answer.startswith(b"421 4.4.2 "), answer


def test_scanning_longer_than_the_idle_timeout_is_not_a_timeout(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    with HangingServer() as clamd:
        config = _config(idle_timeout=1) + (
            f"  clamav:\n    servers: ['{clamd.address}']\n    timeout: 3\n    on_failure: pass\n"
        )
        process = filter_factory(config_text=config, clamd=None)
        replies = send(process.address, messages.clean(), messages.SENDER, [messages.RECIPIENT])
    assert replies.data.startswith("250 2.0.0 "), replies
    assert len(sink.wait_for(1)) == 1


# --- envelope values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        ([b"MAIL FROM:<a\x00b@example.org>"], "501 5.1.7 Bad sender address syntax: NUL character"),
        ([b"MAIL FROM:<j\xf6ran@example.org>"], "500 5.5.2 Error: bad UTF-8 syntax"),
        ([b"MAIL FROM:<a\x01b@example.org>"], "501 5.1.7 Bad sender address syntax: control"),
        (
            [b"MAIL FROM:<a@example.org> ENVID=caf\xc3\xa9"],
            "501 5.5.4 Bad ENVID parameter syntax: not ASCII",
        ),
        (
            [b"MAIL FROM:<a@example.org>", b"RCPT TO:<b\x00c@example.com>"],
            "501 5.1.3 Bad recipient address syntax: NUL character",
        ),
        (
            [b"MAIL FROM:<a@example.org>", b"RCPT TO:<b\xe9@example.com>"],
            "500 5.5.2 Error: bad UTF-8 syntax",
        ),
        (
            [b"MAIL FROM:<a@example.org>", b"RCPT TO:<b\x1b@example.com>"],
            "501 5.1.3 Bad recipient address syntax: control character",
        ),
        (
            [b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.com> ORCPT=rfc822;b\x7f"],
            "501 5.5.4 Bad ORCPT parameter syntax: control character",
        ),
        ([b"XFORWARD NAME=a\x00b"], "501 5.5.4 Bad XFORWARD NAME syntax: NUL character"),
        ([b"XFORWARD HELO=a\x01b"], "501 5.5.4 Bad XFORWARD HELO syntax: control character"),
        ([b"XFORWARD HELO=h\xf6st"], "500 5.5.2 Error: bad UTF-8 syntax"),
        ([b"XFORWARD PORT=abc"], "501 5.5.4 Bad XFORWARD PORT syntax: not a port number"),
    ],
)
def test_envelope_values_that_cannot_be_relayed_are_refused_where_they_arrive(
    filter_factory: FilterFactory, sink: CaptureSink, commands: list[bytes], expected: str
) -> None:
    process = filter_factory()
    with RawSession(process.address) as session:
        session.command("EHLO client.test")
        for command in commands:
            session.send(command + b"\r\n")
            reply = session.reply()
        assert reply.startswith(expected), reply
        # The session goes on: a good transaction after the refusal is relayed.
        session.command("RSET")
        reply = session.transaction("a@example.org", ["b@example.com"], MESSAGE)
        assert reply.startswith("250 2.0.0 "), reply
    (arrived,) = sink.wait_for(1)
    assert arrived.mail_from == "a@example.org"


def test_utf8_addresses_without_smtputf8_are_relayed_as_postfix_relays_them(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory()
    with RawSession(process.address) as session:
        session.command("EHLO client.test")
        reply = session.transaction("jöran@example.org", ["grüße@example.com"], MESSAGE)
        assert reply.startswith("250 2.0.0 "), reply
    (arrived,) = sink.wait_for(1)
    assert arrived.mail_from == "jöran@example.org"
    assert arrived.rcpt_tos == ["grüße@example.com"]


def test_utf8_sender_without_smtputf8_through_postfix(postfix: PostfixStack) -> None:
    """Postfix's smtpd takes it (smtputf8_enable=yes); so must the filter behind it."""
    address = f"127.0.0.1:{postfix.postfix.smtpd_port}"
    with RawSession(address) as session:
        session.command("EHLO client.test")
        reply = session.transaction("jöran@example.org", ["b@example.com"], MESSAGE)
        assert reply.startswith("250 "), reply
    (arrived,) = postfix.sink.wait_for(1, timeout=60)
    assert arrived.mail_from == "jöran@example.org"
    assert b"X-Virus-Scanned: " in arrived.data


def test_recipients_beyond_the_limit_are_told_to_come_back(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory(config_text=_config(max_recipients=2))
    with RawSession(process.address) as session:
        session.command("EHLO client.test")
        session.command("MAIL FROM:<a@example.org>")
        assert session.command("RCPT TO:<b1@example.com>").startswith("250")
        assert session.command("RCPT TO:<b2@example.com>").startswith("250")
        assert session.command("RCPT TO:<b3@example.com>").startswith(
            "452 4.5.3 Error: too many recipients"
        )
        assert session.command("DATA").startswith("354")
        session.send(MESSAGE + b".\r\n")
        assert session.reply().startswith("250 2.0.0 ")
    (arrived,) = sink.wait_for(1)
    assert arrived.rcpt_tos == ["b1@example.com", "b2@example.com"]


def test_the_null_sender_is_relayed(filter_factory: FilterFactory, sink: CaptureSink) -> None:
    """Bounces and DSNs (RFC 5321 section 4.5.5) come with MAIL FROM:<>."""
    process = filter_factory()
    with RawSession(process.address) as session:
        session.command("EHLO client.test")
        reply = session.transaction("", ["b@example.com"], MESSAGE)
        assert reply.startswith("250 2.0.0 "), reply
    (arrived,) = sink.wait_for(1)
    assert arrived.mail_from == ""


@pytest.mark.parametrize(
    ("command", "expected"),
    [(b"RCPT TO:<>", "501 5.1.3 Bad recipient address syntax: not a mailbox")],
)
def test_addresses_the_relay_cannot_pass_on_as_they_are_are_refused(
    filter_factory: FilterFactory, command: bytes, expected: str
) -> None:
    process = filter_factory()
    with RawSession(process.address) as session:
        session.command("EHLO client.test")
        if command.startswith(b"RCPT"):
            session.command("MAIL FROM:<a@example.org>")
        session.send(command + b"\r\n")
        assert session.reply().startswith(expected)


def test_replies_that_echo_the_client_stay_printable(filter_factory: FilterFactory) -> None:
    process = filter_factory()
    with RawSession(process.address) as session:
        session.command("EHLO client.test")
        session.send(b"XFORWARD NAME=a\x0bb\x1c\r\n")
        reply = session.reply()
    assert reply.startswith("501 5.5.4 ") and reply.isprintable(), reply
