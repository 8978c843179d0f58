"""The tools that read amavisd-new's log read ours: mailgraph, logwatch's amavis
service, munin's amavis plugin, all from Debian's packages, run on the syslog file
our filter wrote through a syslog socket (real clamd and spamd decide)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import mimegen as g
from tests.support.client import send
from tests.support.daemons import Clamd, FilterFactory, Spamd
from tests.support.messages import EICAR, clean, gtube, message
from tests.support.net import wait_until
from tests.support.sink import CaptureSink
from tests.support.syslog import SyslogFile

ALICE = "alice@sender.example"
BOB = "bob@recipient.example"
MANY = [f"recipient-with-a-long-name-{n:03d}@recipient.example" for n in range(30)]

MAILGRAPH = "/usr/sbin/mailgraph"
LOGWATCH_AMAVIS = "/usr/share/logwatch/scripts/services/amavis"
MUNIN_AMAVIS = "/usr/share/munin/plugins/amavis"


@pytest.fixture(scope="module")
def mail_log(
    tmp_path_factory: pytest.TempPathFactory, clamd: Clamd, spamd: Spamd
) -> Iterator[tuple[SyslogFile, list[dict[str, object]]]]:
    """The syslog file after: 2 clean (one to 30 recipients: a split line), 1 EICAR,
    1 GTUBE, 1 banned .exe in a zip; and the JSON events of the same messages."""
    directory = tmp_path_factory.mktemp("syslog")
    syslog = SyslogFile(directory)
    sink = CaptureSink().__enter__()
    factory = FilterFactory(directory / "filter", sink.address)
    events = directory / "events.json"
    config = f"log:\n  syslog: true\n  syslog_socket: {syslog.socket_path}\n  json: {events}\n"
    try:
        process = factory(clamd=clamd.address, spamd=spamd.address, config_text=config)
        mails = [
            (clean(), [BOB]),
            (clean("To many"), MANY),
            (message("EICAR", EICAR + b"\r\n"), [BOB]),
            (gtube(), [BOB]),
            (
                g.with_attachments(
                    g.attachment(g.zip_archive({"setup.exe": g.tiny_pe()}), "update.zip"),
                    subject="banned",
                ),
                [BOB],
            ),
        ]
        for data, recipients in mails:
            replies = send(process.address, data, ALICE, recipients)
            assert replies.data.startswith("250 "), replies
        wait_until(
            lambda: sum(" Hits: " in line for line in syslog.lines()) >= 5,
            "the summary lines in the syslog file",
            30,
        )
        process.stop()  # the JSON file is complete
        lines = events.read_text().splitlines()
        yield syslog, [json.loads(line) for line in lines]
    finally:
        factory.stop_all()
        sink.__exit__(None, None, None)
        syslog.close()


def amavis_lines(syslog: SyslogFile) -> list[str]:
    return [line for line in syslog.lines() if re.search(r" amavis\[\d+\]: ", line)]


def test_the_log_is_amavisd_new_syslog_with_the_pid_and_long_lines_cut(
    mail_log: tuple[SyslogFile, list[dict[str, object]]],
) -> None:
    syslog, events = mail_log
    lines = amavis_lines(syslog)
    assert lines
    assert all(len(line.split(": ", 1)[1]) <= 980 for line in lines)
    cut = [line for line in lines if line.endswith("...")]
    assert cut, "the 30-recipient line is cut at 980 characters"
    assert len(events) == 5
    assert [e["content_type"] for e in events] == ["CLEAN", "CLEAN", "INFECTED", "SPAM", "BANNED"]


def test_mailgraph_counts_our_virus_banned_and_spam_lines(
    mail_log: tuple[SyslogFile, list[dict[str, object]]], tmp_path: Path
) -> None:
    syslog, _ = mail_log
    log = tmp_path / "mail.log"
    shutil.copy(syslog.log_path, log)
    later = time.strftime("%b %e %H:%M:%S", time.localtime(time.time() + 3600))
    with log.open("a") as file:  # mailgraph writes a minute's counts when the next begins
        file.write(f"{later} mx postfix/smtp[1]: 4AbC: to=<x@y>, relay=z, status=sent (ok)\n")
        file.write(f"{later} mx amavisd-milter[2]: (9-01) Blocked INFECTED (not ours)\n")
    result = subprocess.run(
        [MAILGRAPH, "--cat", "--logfile", str(log), "--verbose", "--ignore-localhost"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    updates = [
        [int(n) for n in line.split()[1].split(":")[1:]]
        for line in result.stdout.splitlines()
        if line.startswith("update ") and "SKIP" not in line
    ]
    # columns: sent received bounced rejected virus spam greylisted delayed
    virus = sum(u[4] for u in updates)
    spam = sum(u[5] for u in updates)
    assert (virus, spam) == (2, 1), result.stdout  # EICAR and the banned .exe; GTUBE


def test_logwatch_amavis_service_rejoins_and_reads_our_lines(
    mail_log: tuple[SyslogFile, list[dict[str, object]]],
) -> None:
    syslog, _ = mail_log
    # logwatch hands the service its lines with the syslog header removed
    stripped = "".join(line.split(": ", 1)[1] + "\n" for line in amavis_lines(syslog))
    environment = dict(
        os.environ,
        LOGWATCH_DETAIL_LEVEL="10",
        amavis_Max_Report_Width="200",
        amavis_Line_Style="Full",
        amavis_Show_First_Recip_Only="0",
        amavis_CleanPassed="10",
        amavis_SpamPassed="10",
        amavis_MalwareBlocked="10",
        amavis_BannedNameBlocked="10",
        amavis_Show_Summary="1",
        amavis_Show_By_Ccat_Summary="1",
    )
    result = subprocess.run(
        ["perl", LOGWATCH_AMAVIS],
        input=stripped,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = result.stdout
    assert result.returncode == 0, result.stderr
    unmatched = report.partition("**Unmatched Entries**")[2]
    # every per-message line is read; only our start and stop lines are not amavisd-new's
    assert not re.search(r"\(\d+-\d+\)|Hits:|Passed|Blocked", unmatched), unmatched
    assert re.search(r"\b1\s+Malware blocked", report), report
    assert re.search(r"\b1\s+Banned name blocked", report), report
    assert re.search(r"\b1\s+Spam passed", report), report
    assert re.search(r"\b2\s+Clean passed", report), report
    assert "Eicar-Test-Signature" in report, report
    assert MANY[-1] in report, "the last recipient of the cut line is read back"


def test_munin_amavis_plugin_counts_our_lines(
    mail_log: tuple[SyslogFile, list[dict[str, object]]], tmp_path: Path
) -> None:
    syslog, _ = mail_log
    environment = dict(os.environ, amavislog=str(syslog.log_path), MUNIN_PLUGSTATE=str(tmp_path))
    result = subprocess.run(
        ["sh", MUNIN_AMAVIS],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    values = dict(line.split(".value ") for line in result.stdout.splitlines())
    assert values == {"virus": "1", "spam_maybe": "0", "spam_sure": "1", "total": "5"}, (
        result.stdout
    )
