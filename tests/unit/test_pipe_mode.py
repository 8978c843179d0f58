"""`contentfilter pipe`: exit statuses for pipe(8), its input, the sendmail reinjection."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from contentfilter import cli, config, pipe, replies
from contentfilter.errors import NextHopUnavailable, ScannerUnavailable
from contentfilter.model import Action, Disposition, Envelope, Recipient, Reply
from contentfilter.pipeline import Pipeline

from .test_pipeline import EICAR, FakeNextHop, FakeScanner

RELAYED = Disposition(Recipient("a@example.com"), None, Action.RELAYED, Reply(250, "2.0.0", "Ok"))
DISCARDED = Disposition(
    Recipient("b@example.com"), None, Action.DISCARDED, Reply(250, "2.7.0", "Ok, discarded")
)
REJECTED = Disposition(
    Recipient("c@example.com"), None, Action.REJECTED, Reply(554, "5.7.0", "Reject, id=1 - X")
)
TEMPFAILED = Disposition(
    Recipient("d@example.com"), None, Action.TEMPFAILED, Reply(451, "4.5.0", "Error, id=1")
)


@pytest.mark.parametrize(
    ("dispositions", "code", "text"),
    [
        ((RELAYED,), pipe.EX_OK, ""),
        ((DISCARDED,), pipe.EX_OK, ""),
        ((REJECTED,), pipe.EX_UNAVAILABLE, "5.7.0 Reject, id=1 - X"),
        ((TEMPFAILED,), pipe.EX_TEMPFAIL, "4.5.0 Error, id=1"),
        ((RELAYED, TEMPFAILED), pipe.EX_TEMPFAIL, "4.5.0 Error, id=1"),  # any tempfail wins
        ((REJECTED, TEMPFAILED), pipe.EX_TEMPFAIL, "4.5.0 Error, id=1"),
        ((DISCARDED, REJECTED), pipe.EX_UNAVAILABLE, "5.7.0 Reject, id=1 - X"),
        ((RELAYED, REJECTED), pipe.EX_OK, ""),  # the refused one gets our DSN
    ],
)
def test_exit_status_follows_the_combined_smtp_reply(
    dispositions: tuple[Disposition, ...], code: int, text: str
) -> None:
    assert pipe.exit_status("1", dispositions) == pipe.ExitStatus(code, text)


def test_oversized_message_is_refused_for_good() -> None:
    status = pipe.status_for(replies.size_exceeded())
    assert status == pipe.ExitStatus(69, "5.3.4 Message size exceeds fixed limit")


def test_input_loses_the_return_path_line_and_gets_crlf() -> None:
    stream = io.BytesIO(b"Return-Path: <a@example.org>\nSubject: x\n\nbody\n")
    assert pipe.read_input(stream, 1024) == b"Subject: x\r\n\r\nbody\r\n"


def test_input_over_the_limit_is_not_read_to_the_end() -> None:
    stream = io.BytesIO(b"Subject: x\n\n" + b"y" * 5000)
    assert pipe.read_input(stream, 1024) is None
    assert stream.tell() == 1025


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "sendmail"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_sendmail_gets_the_envelope_as_arguments_and_lf_lines(tmp_path: Path) -> None:
    command = _script(tmp_path, f'echo "$@" > {tmp_path}/args\ncat > {tmp_path}/data\n')
    sendmail = pipe.Sendmail(command, 10)
    recipients = (Recipient("b@example.com"), Recipient("-c@example.com"))
    delivery = await sendmail.deliver(Envelope("a@example.org", recipients), recipients, b"S\r\n")
    assert all(r.accepted for r in delivery.recipients)
    args = (tmp_path / "args").read_text()
    assert args == "-G -i -f a@example.org -- b@example.com -c@example.com\n"
    assert (tmp_path / "data").read_bytes() == b"S\n"


async def test_a_failing_sendmail_is_a_next_hop_failure_with_its_complaint(
    tmp_path: Path,
) -> None:
    command = _script(
        tmp_path, "cat >/dev/null; echo 'postdrop: queue file write error' >&2\nexit 75\n"
    )
    recipients = (Recipient("b@example.com"),)
    with pytest.raises(NextHopUnavailable, match="status 75: postdrop: queue file write error"):
        await pipe.Sendmail(command, 10).deliver(Envelope("", recipients), recipients, b"x\r\n")


async def test_a_tempfailing_scanner_and_a_reject_become_exit_statuses() -> None:
    cfg = config.from_mapping({"scanners": {}, "policy": {"destiny": {"virus": "reject"}}})
    down = FakeScanner("clamav", error=ScannerUnavailable("clamav", "connection refused"))
    status = await pipe.filter_message(
        Pipeline(cfg, [down], FakeNextHop()), "1", "a@example.org", ["b@example.com"], RAW
    )
    assert status.code == pipe.EX_TEMPFAIL
    infected = FakeScanner("clamav", findings=(EICAR,))
    status = await pipe.filter_message(
        Pipeline(cfg, [infected], FakeNextHop()), "1", "a@example.org", ["b@example.com"], RAW
    )
    assert status.code == pipe.EX_UNAVAILABLE
    assert status.text.startswith("5.7.0 Reject, id=1 - INFECTED: Eicar-Test-Signature")


RAW = b"From: a@example.org\r\nSubject: hello\r\n\r\nbody\r\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["pipe", "-f", "a@example.org"],  # no recipient: a master.cf mistake
        ["pipe", "--no-such-flag", "-f", "a@example.org", "--", "b@example.com"],
    ],
)
def test_usage_mistakes_keep_the_mail_queued(argv: list[str]) -> None:
    assert cli.main(argv) == pipe.EX_TEMPFAIL


def test_a_config_error_keeps_the_mail_queued(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("policy: {destiny: {virus: maybe}}\n")
    argv = ["pipe", "-c", str(broken), "-f", "a@example.org", "--", "b@example.com"]
    assert cli.main(argv) == pipe.EX_TEMPFAIL


def test_only_postfixs_own_lines_are_dropped() -> None:
    stream = io.BytesIO(
        b"From a@example.org  Mon Nov 30 21:00:00 2026\n"
        b"Return-Path: <a@example.org>\n"
        b"Return-Path: <kept@example.org>\n"
        b"Subject: x\n\nbody\n"
    )
    assert pipe.read_input(stream, 1024) == (
        b"Return-Path: <kept@example.org>\r\nSubject: x\r\n\r\nbody\r\n"
    )


def test_a_log_that_cannot_be_opened_costs_the_log_not_the_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    command = _script(tmp_path, f"cat > {tmp_path}/data\n")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Subject: x\n\nbody\n")))
    settings = tmp_path / "contentfilter.yaml"
    settings.write_text(f"quarantine: {{directory: '{tmp_path / 'quarantine'}'}}\n")
    argv = ["pipe", "-c", str(settings), "--clamd", "off", "--spamd", "off"]
    argv += ["--sendmail", command, "--log-file", str(tmp_path / "missing" / "log")]
    argv += ["-f", "a@example.org", "--", "b@x"]
    assert cli.main(argv) == pipe.EX_OK
    assert b"Subject: x\n\nbody\n" in (tmp_path / "data").read_bytes()
    assert capsys.readouterr().out == ""
