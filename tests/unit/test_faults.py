"""Faults inside the filter: a full disk is a 451 naming it, a bug is logged and counted."""

from __future__ import annotations

import errno
import logging
import os

import pytest

import scanners
from contentfilter import config, replies
from contentfilter.decode import spool
from contentfilter.model import Envelope, Message, Recipient
from contentfilter.pipeline import Pipeline
from contentfilter.rfc5322 import read_message
from tests.support import mimegen as g
from tests.unit.test_pipeline import FakeNextHop, smtp_reply

ATTACHED = g.with_attachments(g.attachment(b"%PDF-1.4\n" + os.urandom(20000), "report.pdf"))


def _message(raw: bytes) -> Message:
    return read_message(
        "100-01", "mailid", Envelope("a@example.org", (Recipient("b@y.example"),)), raw
    )


def _pipeline(next_hop: FakeNextHop) -> Pipeline:
    cfg = config.from_mapping({"scanners": {"banned": {}}})
    built = scanners.build_scanners(cfg.scanners, scanners.Needs(cfg.decoder))
    return Pipeline(cfg, built, next_hop)


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT])
async def test_a_full_disk_at_the_spool_write_is_a_451_naming_it(
    monkeypatch: pytest.MonkeyPatch, number: int
) -> None:
    def full(path: str) -> int:
        raise OSError(number, os.strerror(number), path)

    monkeypatch.setattr(spool, "create_file", full)
    hop = FakeNextHop()
    pipeline = _pipeline(hop)
    reply = smtp_reply(await pipeline.handle(_message(ATTACHED)))
    assert (reply.code, reply.status) == (451, "4.3.1")
    assert reply.text == (
        f"Error in processing, id=100-01, insufficient disk space ({os.strerror(number)})"
    )
    assert hop.sent == []


async def test_a_full_disk_when_making_the_spool_directory_is_a_451(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full(*args: object, **kwargs: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "make_directory", full)
    reply = smtp_reply(await _pipeline(FakeNextHop()).handle(_message(ATTACHED)))
    assert (reply.code, reply.status) == (451, "4.3.1")
    assert "insufficient disk space" in reply.text


async def test_an_unexpected_exception_is_logged_with_traceback_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = _pipeline(FakeNextHop(error=KeyError("bug")))
    with caplog.at_level(logging.ERROR):
        reply = smtp_reply(await pipeline.handle(_message(ATTACHED)))
    assert (reply.code, reply.status) == (451, "4.5.0")
    assert reply.text.endswith("internal error (KeyError)")
    assert pipeline.faults.counts == {("pipeline", "KeyError"): 1}
    assert pipeline.faults.total == 1
    (record,) = [r for r in caplog.records if "internal error in pipeline" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_a_full_disk_anywhere_gets_the_disk_space_reply() -> None:
    for number in (errno.ENOSPC, errno.EDQUOT):
        reply = replies.failure("7-01", OSError(number, os.strerror(number)))
        assert (reply.code, reply.status) == (451, "4.3.1")
    other = replies.failure("7-01", OSError(errno.EACCES, "Permission denied"))
    assert other.status == "4.5.0" and "internal error (PermissionError)" in other.text
