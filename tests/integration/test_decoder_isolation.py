"""A decoder that crashes or hangs costs one message, not the filter.

The decoder runs in worker processes; the fault-injection variable makes a worker
segfault (or hang) on any message containing a marker. The message that killed
its worker becomes UNCHECKED (and, clamd scanning the raw message as always, is
passed tagged by default); a session in progress at that moment and the next
message are served normally by a fresh worker.
"""

from __future__ import annotations

import re

import pytest

from contentfilter.decode.wire import FAULT_VARIABLE
from tests.support import messages
from tests.support import mimegen as g
from tests.support.client import RawSession, send
from tests.support.daemons import FilterFactory
from tests.support.sink import CaptureSink

MARK = "CRASH-THE-DECODER-7f3a"
CONFIG = r"""
decoder: {workers: 1, timeout: 5}
scanners:
  banned:
    rules: [{ban: '^\.exe$', match: type}]
"""
ALICE = messages.SENDER
BOB = messages.RECIPIENT


def zipped_exe(subject: str) -> bytes:
    return g.with_attachments(
        g.attachment(g.zip_archive({"setup.exe": g.tiny_pe()}), "update.zip"), subject=subject
    )


def zipped_text(subject: str) -> bytes:
    return g.with_attachments(
        g.attachment(g.zip_archive({"notes.txt": b"minutes\r\n" * 100}), "notes.zip"),
        subject=subject,
    )


@pytest.mark.parametrize(
    ("fault", "problem"),
    [("segfault", "Decoder crashed (signal 11)"), ("hang", "Decoder killed after 5s")],
)
def test_a_crashing_decoder_costs_one_message(
    filter_factory: FilterFactory,
    sink: CaptureSink,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    problem: str,
) -> None:
    monkeypatch.setenv(FAULT_VARIABLE, f"{fault}:{MARK}")
    process = filter_factory(config_text=CONFIG)
    in_progress = zipped_text("started before the crash")
    with RawSession(process.address) as session:
        # a session in the middle of DATA while another message kills the worker
        assert session.command("EHLO client.test").startswith("250")
        assert session.command(f"MAIL FROM:<{ALICE}>").startswith("250")
        assert session.command(f"RCPT TO:<{BOB}>").startswith("250")
        assert session.command("DATA").startswith("354")
        session.send(in_progress[:200])

        crashing = g.message(g.text(f"{MARK}\r\n"), "poison")
        replies = send(process.address, crashing, ALICE, [BOB])
        assert replies.data.startswith("250 "), replies
        (poisoned,) = sink.wait_for(1)
        assert messages.header_value(poisoned.data, "Subject") == "***UNCHECKED*** poison"
        alert = messages.header_value(poisoned.data, "X-Amavis-Alert") or ""
        assert problem in alert

        session.send(in_progress[200:] + b"\r\n.\r\n")
        assert session.reply().startswith("250 "), "the session in progress was served"
    survivor = sink.wait_for(2)[1]
    assert messages.header_value(survivor.data, "Subject") == "started before the crash"

    # the next message is decoded by a fresh worker: the .exe inside the zip is found
    replies = send(process.address, zipped_exe("after the crash"), ALICE, [BOB])
    assert "BANNED" in replies.data, replies
    assert re.search(rf"decoder worker .*{re.escape(problem[8:])}", process.log_text())
