"""The filter's SMTP side, talked to directly, with a recording sink as next hop.

What Postfix (or an admin with swaks) sees: the EHLO keywords, the exact replies,
and what arrives at the next hop, byte for byte.
"""

from __future__ import annotations

import re
import smtplib
import subprocess
from pathlib import Path

import pytest

from tests.support import messages
from tests.support.client import RawSession, host_port, send, transaction
from tests.support.daemons import Clamd, FilterFactory
from tests.support.sink import CaptureSink

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
EICAR_NAME = r"Eicar-Test-Signature(\.UNOFFICIAL)?"
SIZE_LIMIT = 52428800


def ehlo_keywords(reply: str) -> dict[str, str]:
    """EHLO reply lines after the greeting line: KEYWORD -> parameters."""
    keywords = {}
    for line in reply.split("\r\n")[1:]:
        keyword, _, parameters = line[4:].partition(" ")
        keywords[keyword.upper()] = parameters
    return keywords


def test_ehlo_advertises_what_postfix_uses(filter_factory: FilterFactory) -> None:
    process = filter_factory()
    with RawSession(process.address) as session:
        assert session.greeting.startswith("220 ")
        reply = session.command("EHLO client.test")
    assert reply.startswith("250-")
    keywords = ehlo_keywords(reply)
    for keyword in ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"):
        assert keyword in keywords, reply
    assert keywords["SIZE"] == str(SIZE_LIMIT), reply
    # Postfix sends only the XFORWARD attributes the server names.
    assert {"NAME", "ADDR", "PROTO", "HELO"} <= set(keywords["XFORWARD"].split()), reply


def test_xforward_attributes_are_passed_to_the_next_hop(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory()
    replies = send(
        process.address,
        messages.clean(),
        messages.SENDER,
        [messages.RECIPIENT],
        xforward="NAME=mail.client.example ADDR=192.0.2.55 PROTO=ESMTP HELO=client.example",
    )
    assert replies.data.startswith("250 2.0.0 "), replies
    (arrived,) = sink.wait_for(1)
    assert arrived.xforward["ADDR"] == "192.0.2.55"
    assert arrived.xforward["NAME"] == "mail.client.example"
    assert arrived.xforward["HELO"] == "client.example"


def test_dsn_and_body_parameters_reach_the_next_hop(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory()
    recipient = "jöran@recipient.example"
    message = messages.message(
        "Grüße aus Köln",
        "Schöne Grüße, Jöran\r\n".encode(),
        recipient=recipient,
        content_type="text/plain; charset=utf-8",
        extra_headers=("Content-Transfer-Encoding: 8bit",),
    )
    replies = send(
        process.address,
        message,
        messages.SENDER,
        [recipient],
        mail_options=["BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=QQ314159"],
        rcpt_options=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;bob@recipient.example"],
    )
    assert replies.data.startswith("250 "), replies
    (arrived,) = sink.wait_for(1)
    assert arrived.rcpt_tos == [recipient]
    assert {"BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=QQ314159"} <= set(
        arrived.mail_options
    ), arrived.mail_options
    assert set(arrived.rcpt_options[recipient]) == {
        "NOTIFY=SUCCESS,DELAY",
        "ORCPT=rfc822;bob@recipient.example",
    }
    messages.added_headers(arrived.data, message)  # 8-bit body untouched


def test_declared_size_over_the_limit_is_refused(filter_factory: FilterFactory) -> None:
    process = filter_factory()
    with RawSession(process.address) as session:
        session.command("EHLO client.test")
        too_big = session.command(f"MAIL FROM:<{messages.SENDER}> SIZE={SIZE_LIMIT + 1}")
        session.command("RSET")
        at_limit = session.command(f"MAIL FROM:<{messages.SENDER}> SIZE={SIZE_LIMIT}")
    assert too_big.startswith("552 5.3.4 "), too_big
    assert at_limit.startswith("250 "), at_limit


def test_clean_message_is_relayed_unchanged_below_added_headers(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory()
    message = messages.clean()
    replies = send(process.address, message, messages.SENDER, [messages.RECIPIENT])
    assert re.fullmatch(
        rf"250 2\.0\.0 Ok, id=\S+, from MTA\(\[127\.0\.0\.1\]:{sink.port}\): "
        r"250 2\.0\.0 Ok: queued as SINK\d+",
        replies.data,
    ), replies.data
    (arrived,) = sink.wait_for(1)
    assert arrived.mail_from == messages.SENDER
    assert arrived.rcpt_tos == [messages.RECIPIENT]
    messages.added_headers(arrived.data, message)


@pytest.mark.parametrize("dotted", [False, True], ids=["no dot lines", "dot lines"])
def test_large_message_is_relayed_unchanged_below_added_headers(
    filter_factory: FilterFactory, sink: CaptureSink, dotted: bool
) -> None:
    # 3 MB: read in many pieces, relayed in many writes; with lines starting with a
    # dot, dot-stuffed on both sides (the wire pieces are cut after the stuffing)
    lines = [
        b"%07d abcdefghijklmnopqrstuvwxyz0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ" % n
        for n in range(40_000)
    ]
    if dotted:
        lines = [b"." * (n % 3) + line if n % 997 < 3 else line for n, line in enumerate(lines)]
    message = messages.message("Large", b"\r\n".join(lines) + b"\r\n")
    process = filter_factory()
    replies = send(process.address, message, messages.SENDER, [messages.RECIPIENT])
    assert replies.data.startswith("250 2.0.0 Ok"), replies.data
    (arrived,) = sink.wait_for(1)
    messages.added_headers(arrived.data, message)


def test_three_messages_in_one_session_with_rset(
    filter_factory: FilterFactory, sink: CaptureSink
) -> None:
    process = filter_factory()
    sent = [messages.clean(f"message {n}") for n in range(3)]
    with smtplib.SMTP(*host_port(process.address), local_hostname="client.test") as smtp:
        replies = []
        for n, message in enumerate(sent):
            # An abandoned transaction first: its recipient must not leak into the next.
            smtp.mail("abandoned@sender.example")
            smtp.rcpt("nobody@recipient.example")
            assert smtp.rset()[0] == 250
            replies.append(
                transaction(smtp, message, messages.SENDER, [f"user{n}@recipient.example"])
            )
    assert [r.data_code for r in replies] == [250, 250, 250], replies
    arrived = sink.wait_for(3)
    assert [t.rcpt_tos for t in arrived] == [[f"user{n}@recipient.example"] for n in range(3)]
    assert all(t.mail_from == messages.SENDER for t in arrived)
    for transaction_, message in zip(arrived, sent, strict=True):
        messages.added_headers(transaction_.data, message)


SMUGGLING_ENDINGS = {
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
}


@pytest.mark.parametrize("fake_end", SMUGGLING_ENDINGS.values(), ids=SMUGGLING_ENDINGS.keys())
def test_smtp_smuggling_attempt_is_rejected_and_nothing_relayed(
    filter_factory: FilterFactory, sink: CaptureSink, fake_end: bytes
) -> None:
    """A fake end-of-data followed by a second transaction (SMTP smuggling).

    A server that takes the fake ending for the real one would relay a second,
    forged message. We read the whole thing as one message and refuse it because
    it contains a bare CR or LF (554 5.6.0).
    """
    process = filter_factory()
    payload = (
        b"From: <alice@sender.example>\r\nTo: <bob@recipient.example>\r\n"
        b"Subject: innocent\r\n\r\nhello" + fake_end + b"MAIL FROM:<admin@bank.example>\r\n"
        b"RCPT TO:<victim@recipient.example>\r\n"
        b"DATA\r\n"
        b"From: <admin@bank.example>\r\nSubject: smuggled\r\n\r\nsend money\r\n"
        b"\r\n.\r\n"
    )
    with RawSession(process.address) as session:
        session.command("EHLO client.test")
        assert session.command(f"MAIL FROM:<{messages.SENDER}>").startswith("250")
        assert session.command(f"RCPT TO:<{messages.RECIPIENT}>").startswith("250")
        assert session.command("DATA").startswith("354")
        session.send(payload)
        end_of_data = session.reply()
        after = session.command("QUIT")
    assert re.match(r"554 5\.6\.0 ", end_of_data), end_of_data
    # Exactly one reply to the payload: the smuggled commands were not executed.
    assert after.startswith("221"), after
    assert sink.attempts == []


def test_client_outside_allowed_clients_gets_554_at_connect(
    filter_factory: FilterFactory,
) -> None:
    process = filter_factory(config_text="server: {allowed_clients: [192.0.2.0/24]}\n")
    with RawSession(process.address) as session:
        assert session.greeting.startswith("554 "), session.greeting


def swaks(address: str, data_file: Path) -> subprocess.CompletedProcess[str]:
    host, port = host_port(address)
    return subprocess.run(
        [
            "swaks",
            "--server",
            host,
            "--port",
            str(port),
            "--from",
            messages.SENDER,
            "--to",
            messages.RECIPIENT,
            "--data",
            str(data_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def eicar_sample() -> Path:
    path = SAMPLES / "eicar.eml"
    assert path.is_file(), f"{path} is missing"
    return path


def test_swaks_eicar_sample_is_discarded_by_default(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    process = filter_factory(clamd=clamd.address)
    result = swaks(process.address, eicar_sample())
    answer = re.search(
        rf"^<-  250 2\.7\.0 Ok, discarded, id=\S+ - INFECTED: {EICAR_NAME}"
        r", quarantine: (?P<id>[\w-]{12})$",
        result.stdout,
        re.MULTILINE,
    )
    assert answer, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert sink.attempts == []
    assert process.quarantine_directory is not None  # kept, not dropped: the id is its file
    assert list(process.quarantine_directory.glob(f"bodies/*/{answer['id']}.eml.gz"))


def test_swaks_eicar_sample_is_rejected_when_virus_destiny_is_reject(
    filter_factory: FilterFactory, sink: CaptureSink, clamd: Clamd
) -> None:
    process = filter_factory(
        clamd=clamd.address, config_text="policy: {destiny: {virus: reject}}\n"
    )
    result = swaks(process.address, eicar_sample())
    assert re.search(
        rf"^<\*\* 554 5\.7\.0 .*INFECTED: {EICAR_NAME}, quarantine: [\w-]{{12}}$",
        result.stdout,
        re.MULTILINE,
    ), result.stdout
    assert sink.attempts == []
