"""Postfix's other two content-filter patterns with a real Postfix, clamd and spamd.

pipe(8), FILTER_README's "simple" filter:

    client -> smtpd -> queue -> pipe: contentfilter pipe -> sendmail -> queue -> sink

spawn(8), Postfix starting the filter per connection on the SMTP-proxy wiring:

    client -> smtpd -> queue -> smtp-amavis -> spawn: contentfilter spawn -> smtpd :10025
           -> queue -> sink

Each has its own private Postfix instance. Extra smtpd listeners with their own
`-o content_filter=` lead to filters with a reject policy or an unreachable clamd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contentfilter import cli
from tests.support import messages
from tests.support.client import send
from tests.support.daemons import CaptureSink, Clamd, Postfix, Spamd, closed_port, filter_command
from tests.support.net import free_port
from tests.support.postfix import Variant, start_postfix

SUPPORT = Path(__file__).resolve().parents[1] / "support"
REJECT_POLICY = "policy:\n  destiny:\n    virus: reject\n"
FILTER_USER = "nobody"  # pipe(8) and spawn(8) refuse to run a command as root


@dataclass
class Stack:
    postfix: Postfix
    sink: CaptureSink
    log: Path  # the filters' log
    reject_port: int  # smtpd whose mail goes to a filter with destiny virus: reject
    down_port: int  # smtpd whose mail goes to a filter whose clamd is unreachable


def _writable_log(workdir: Path) -> Path:
    log = workdir / "filter.log"
    log.touch()
    log.chmod(0o666)
    return log


def _config(workdir: Path, name: str, text: str = "") -> Path:
    """A config file for the unprivileged filter, with its own quarantine directory."""
    quarantine = workdir / f"quarantine-{name}"
    quarantine.mkdir(mode=0o700)
    shutil.chown(quarantine, FILTER_USER)
    config = workdir / f"{name}.yaml"
    config.write_text(f"{text}quarantine:\n  directory: {quarantine}\n")
    config.chmod(0o644)
    return config


def _reject_config(workdir: Path) -> Path:
    return _config(workdir, "reject", REJECT_POLICY)


def _sendmail_stand_in(workdir: Path) -> Path:
    """`sendmail` for the unprivileged filter: SMTP to the instance's reinjection port."""
    script = workdir / "sendmail"
    port_file = workdir / "reinject_port"  # written once Postfix has its ports
    script.write_text(
        f"#!/bin/sh\nexec {sys.executable} {SUPPORT / 'smtp_sendmail.py'}"
        f' "$(cat {port_file})" "$@"\n'
    )
    script.chmod(0o755)
    return script


def _pipe_service(name: str, options: str, log: Path, sendmail: Path) -> str:
    command = " ".join(filter_command())
    return (
        f"{name} unix - n n - 10 pipe\n"
        f"    flags=Rq user={FILTER_USER} argv={command} pipe {options} --sendmail {sendmail}"
        f" --log-file {log} -f ${{sender}} -- ${{recipient}}\n"
    )


def _spawn_service(port: int, options: str, log: Path) -> str:
    command = " ".join(filter_command())
    return (
        f"127.0.0.1:{port} inet n n n - 10 spawn\n"
        f"    user={FILTER_USER} argv={command} spawn --next-hop 127.0.0.1:{{reinject_port}}"
        f" {options} --log-file {log}\n"
    )


def _smtpd_to(port: int, content_filter: str) -> str:
    return (
        f"127.0.0.1:{port} inet n - n - - smtpd\n"
        f"    -o content_filter={content_filter}\n"
        "    -o smtpd_authorized_xforward_hosts=127.0.0.0/8\n"
    )


@pytest.fixture(scope="module")
def pipe_stack(daemon_dir: Path, clamd: Clamd, spamd: Spamd) -> Iterator[Stack]:
    workdir = daemon_dir / "postfix-pipe"
    workdir.mkdir(mode=0o755)
    log, sendmail = _writable_log(workdir), _sendmail_stand_in(workdir)
    scanners = f"-c {_config(workdir, 'filter')} --clamd {clamd.address} --spamd {spamd.address}"
    reject = f"-c {_reject_config(workdir)} --clamd {clamd.address} --spamd {spamd.address}"
    down = (
        f"-c {_config(workdir, 'down')} --clamd 127.0.0.1:{closed_port()} --spamd {spamd.address}"
    )
    reject_port, down_port = free_port(), free_port()
    services = (
        _pipe_service("filtro", scanners, log, sendmail)
        + _pipe_service("filtro-reject", reject, log, sendmail)
        + _pipe_service("filtro-down", down, log, sendmail)
        + _smtpd_to(reject_port, "filtro-reject:dummy")
        + _smtpd_to(down_port, "filtro-down:dummy")
    )
    variant = Variant("filtro:dummy", services, "-o content_filter=")
    with (
        CaptureSink() as sink,
        start_postfix(workdir, free_port(), sink.port, variant=variant) as pf,
    ):
        (workdir / "reinject_port").write_text(str(pf.reinject_port))
        yield Stack(pf, sink, log, reject_port, down_port)
        print("--- Postfix log ---\n" + pf.log_text()[-6000:])
        print("--- filter log ---\n" + log.read_text(errors="replace")[-4000:])


@pytest.fixture(scope="module")
def spawn_stack(daemon_dir: Path, clamd: Clamd, spamd: Spamd) -> Iterator[Stack]:
    workdir = daemon_dir / "postfix-spawn"
    workdir.mkdir(mode=0o755)
    log = _writable_log(workdir)
    scanners = f"-c {_config(workdir, 'filter')} --clamd {clamd.address} --spamd {spamd.address}"
    reject = f"-c {_reject_config(workdir)} --clamd {clamd.address} --spamd {spamd.address}"
    down = (
        f"-c {_config(workdir, 'down')} --clamd 127.0.0.1:{closed_port()} --spamd {spamd.address}"
    )
    reject_port, down_port = free_port(), free_port()
    reject_filter, down_filter = free_port(), free_port()
    services = (
        "{SPAWN}"
        + _spawn_service(reject_filter, reject, log)
        + _spawn_service(down_filter, down, log)
        + _smtpd_to(reject_port, f"smtp-amavis:[127.0.0.1]:{reject_filter}")
        + _smtpd_to(down_port, f"smtp-amavis:[127.0.0.1]:{down_filter}")
    )
    filter_port = free_port()
    services = services.replace("{SPAWN}", _spawn_service(filter_port, scanners, log))
    variant = Variant(services=services)
    with (
        CaptureSink() as sink,
        start_postfix(workdir, filter_port, sink.port, variant=variant) as pf,
    ):
        yield Stack(pf, sink, log, reject_port, down_port)
        print("--- Postfix log ---\n" + pf.log_text()[-6000:])
        print("--- filter log ---\n" + log.read_text(errors="replace")[-4000:])


@pytest.fixture(params=["pipe", "spawn"])
def stack(request: pytest.FixtureRequest) -> Stack:
    chosen: Stack = request.getfixturevalue(f"{request.param}_stack")
    chosen.sink.clear()
    return chosen


def submit(stack: Stack, message: bytes, port: int | None = None) -> str:
    """Send `message` into Postfix; Postfix's queue id for it."""
    replies = send(
        f"127.0.0.1:{port or stack.postfix.smtpd_port}",
        message,
        messages.SENDER,
        [messages.RECIPIENT],
    )
    assert replies.data.startswith("250 2.0.0 Ok: queued as "), replies
    return replies.data.split()[-1]


def delivery_line(stack: Stack, queue_id: str) -> str:
    """Postfix's log line for the filter's answer about `queue_id`."""
    return stack.postfix.wait_for_log(
        rf"{queue_id}: to=<{re.escape(messages.RECIPIENT)}>, relay=(filtro|127\.0\.0\.1).*"
    ).group(0)


def test_clean_mail_arrives_unchanged_below_added_headers(stack: Stack) -> None:
    message = messages.clean()
    submit(stack, message)
    (arrived,) = stack.sink.wait_for(1)
    assert arrived.mail_from == messages.SENDER
    assert arrived.rcpt_tos == [messages.RECIPIENT]
    names = messages.header_names(messages.added_headers(arrived.data, message))
    assert "x-virus-scanned" in names, names
    stack.postfix.wait_for_empty_queue()


def test_eicar_is_not_delivered(stack: Stack) -> None:
    queue_id = submit(stack, messages.eicar_attachment())
    line = delivery_line(stack, queue_id)
    assert "status=sent" in line, line
    stack.postfix.wait_for_empty_queue()
    submit(stack, messages.clean())  # a later message overtakes nothing
    (arrived,) = stack.sink.wait_for(1)
    assert messages.header_value(arrived.data, "Subject") == "Quarterly report"


def test_gtube_arrives_tagged(stack: Stack) -> None:
    message = messages.gtube()
    submit(stack, message)
    (arrived,) = stack.sink.wait_for(1)
    assert messages.header_value(arrived.data, "Subject") == "***SPAM*** Test spam mail (GTUBE)"
    assert messages.header_value(arrived.data, "X-Spam-Flag") == "YES"
    retagged = message.replace(
        b"Subject: Test spam mail (GTUBE)", b"Subject: ***SPAM*** Test spam mail (GTUBE)"
    )
    messages.added_headers(arrived.data, retagged)
    stack.postfix.wait_for_empty_queue()


def test_reject_destiny_makes_postfix_bounce_with_our_text(stack: Stack) -> None:
    queue_id = submit(stack, messages.eicar_attachment(), stack.reject_port)
    line = delivery_line(stack, queue_id)
    assert "status=bounced" in line, line
    assert "Reject, id=" in line and "INFECTED: Eicar-Test-Signature" in line, line
    (dsn,) = stack.sink.wait_for(1)  # Postfix's bounce to the sender
    assert dsn.mail_from == "" and dsn.rcpt_tos == [messages.SENDER]
    text = b" ".join(dsn.data.split())  # the DSN folds long lines
    assert b"Reject, id=" in text and b"INFECTED: Eicar-Test-Signature" in text, text
    stack.postfix.wait_for_empty_queue()


def test_scanner_down_makes_postfix_defer(stack: Stack) -> None:
    queue_id = submit(stack, messages.clean(), stack.down_port)
    try:
        line = delivery_line(stack, queue_id)
        assert "status=deferred" in line, line
        assert "Error in processing, id=" in line and "clamav" in line, line
        assert stack.sink.attempts == []
    finally:
        subprocess.run(
            ["postsuper", "-c", str(stack.postfix.config_directory), "-d", queue_id],
            capture_output=True,
            check=True,
        )


def test_check_config_sees_the_pickup_loop_guard(pipe_stack: Stack, tmp_path: Path) -> None:
    guarded = pipe_stack.postfix.config_directory
    assert cli.main(["check-config", "--postfix", str(guarded)]) == 0
    unguarded = tmp_path / "etc"
    shutil.copytree(guarded, unguarded)
    master_cf = unguarded / "master.cf"
    master_cf.write_text(master_cf.read_text().replace("-o content_filter=\n", "\n", 1))
    assert cli.main(["check-config", "--postfix", str(unguarded)]) == 1


def test_postfix_sendmail_reinjects_through_pickup_once(pipe_stack: Stack) -> None:
    """Postfix's own sendmail (run as root here: for the unprivileged filter user it
    refuses a private instance's config directory); pickup's `-o content_filter=`
    keeps the reinjected mail from going through the filter again."""
    pipe_stack.sink.clear()
    message = messages.clean(subject="Reinjected by sendmail")
    envelope = ["-f", messages.SENDER, "--", messages.RECIPIENT]
    run = subprocess.run(
        [*filter_command(), "pipe", "--clamd", "off", "--spamd", "off", *envelope],
        input=message.replace(b"\r\n", b"\n"),
        capture_output=True,
        env={"MAIL_CONFIG": str(pipe_stack.postfix.config_directory), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run
    (arrived,) = pipe_stack.sink.wait_for(1)
    assert arrived.mail_from == messages.SENDER and arrived.rcpt_tos == [messages.RECIPIENT]
    assert messages.header_value(arrived.data, "Subject") == "Reinjected by sendmail"
    assert messages.header_value(arrived.data, "X-Virus-Scanned"), arrived.data[:500]
    pipe_stack.postfix.wait_for_empty_queue()
    assert len(pipe_stack.sink.messages) == 1


def test_our_dsn_goes_out_through_postfix_sendmail_with_the_null_sender(
    pipe_stack: Stack, clamd: Clamd, tmp_path: Path
) -> None:
    pipe_stack.sink.clear()
    config = tmp_path / "bounce.yaml"
    config.write_text(
        f"policy:\n  destiny:\n    virus: bounce\nquarantine:\n  directory: {tmp_path / 'q'}\n"
    )
    envelope = ["-f", messages.SENDER, "--", messages.RECIPIENT]
    run = subprocess.run(
        [
            *filter_command(),
            "pipe",
            "-c",
            str(config),
            "--clamd",
            clamd.address,
            "--spamd",
            "off",
            *envelope,
        ],
        input=messages.eicar_attachment().replace(b"\r\n", b"\n"),
        capture_output=True,
        env={"MAIL_CONFIG": str(pipe_stack.postfix.config_directory), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run
    (dsn,) = pipe_stack.sink.wait_for(1)
    assert dsn.mail_from == "" and dsn.rcpt_tos == [messages.SENDER]
    assert b"Eicar-Test-Signature" in dsn.data
    pipe_stack.postfix.wait_for_empty_queue()
