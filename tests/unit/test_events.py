"""contentfilter.events: one record per message, as the amavisd-new line and as JSON."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contentfilter import config
from contentfilter.events import (
    LOGLINE_MAXLEN,
    AmavisSyslogHandler,
    EventLog,
    from_outcome,
    split_line,
)
from contentfilter.model import ContentsCategory, Finding, SpamReport
from contentfilter.pipeline import Pipeline
from tests.unit.test_pipeline import RAW, FakeNextHop, FakeScanner, message

LINE = re.compile(
    r"\((?P<log_id>[^)]+)\) (?P<passed>Passed|Blocked) (?P<category>[A-Z-]+)"
    r"(?: \((?P<details>[^)]*)\))? \{(?P<actions>[^}]*)\}, "
    r"\[(?P<client_ip>[^\]]+)\](?::(?P<client_port>\d+))? <(?P<mail_from>[^>]*)> -> "
    r"(?P<rcpt_to><[^>]*>(?:,<[^>]*>)*), "
    r"(?:Queue-ID: (?P<queue_id>[^,]+), )?(?:Message-ID: (?P<message_id><[^>]*>), )?"
    r"mail_id: (?P<mail_id>[^,]+), Hits: (?P<hits>[^,]+), size: (?P<size>\d+), "
    r"(?:queued_as: (?P<queued_as>[^,]+), )?(?P<ms>\d+) ms$"
)

XFORWARD = (("ADDR", "203.0.113.5"), ("PORT", "44556"), ("IDENT", "4AbCd1"))
EICAR = Finding(ContentsCategory.VIRUS, "Eicar-Test-Signature", "clamav")
GTUBE = SpamReport(1000.0, 5.0, (("GTUBE", 1000.0), ("NO_RELAYS", -0.001)))


async def handled(*scanners: FakeScanner, refuse: set[str] | None = None) -> dict[str, Any]:
    """The line and the JSON object the pipeline wrote for one message."""
    stream = io.StringIO()
    hop = FakeNextHop(refuse=refuse or set())
    pipeline = Pipeline(config.from_mapping({"scanners": {}}), list(scanners), hop)
    pipeline.event_log = EventLog(stream)
    raw = b"Message-ID: <m1@example.org>\r\n" + RAW
    outcome = await pipeline.handle(
        message("b@example.com", "c@example.com", raw=raw, xforward=XFORWARD)
    )
    event = from_outcome(outcome)
    (written,) = stream.getvalue().splitlines()
    return {"line": event.log_line(), "json": json.loads(written)}


@pytest.mark.parametrize(
    ("scanners", "refuse"),
    [
        ((FakeScanner("clamav", (EICAR,)), FakeScanner("spamassassin")), None),
        ((FakeScanner("spamassassin", spam=GTUBE),), None),
        ((FakeScanner("clamav"),), {"c@example.com"}),
    ],
    ids=["virus", "spam", "clean-partly-refused"],
)
async def test_the_json_event_and_the_log_line_agree_field_by_field(
    scanners: tuple[FakeScanner, ...], refuse: set[str] | None
) -> None:
    both = await handled(*scanners, refuse=refuse)
    fields = LINE.fullmatch(both["line"])
    assert fields is not None, both["line"]
    event = both["json"]
    assert fields["log_id"] == event["log_id"]
    assert fields["mail_id"] == event["mail_id"]
    assert fields["category"] == event["content_type"]
    assert fields["passed"] == event["message"].split()[1]
    assert fields["actions"].split(",") == event["action"]
    assert fields["client_ip"] == event["client_ip"]
    assert int(fields["client_port"]) == event["client_port"]
    assert fields["mail_from"] == event["mail_from"]
    assert fields["rcpt_to"] == ",".join(f"<{r}>" for r in event["rcpt_to"])
    assert [r["rcpt_to"] for r in event["recipients"]] == event["rcpt_to"]
    assert fields["queue_id"] == event["queue_id"] == "4AbCd1"
    assert fields["message_id"] == event["message_id"] == "<m1@example.org>"
    assert int(fields["size"]) == event["size"]
    # The JSON keeps microseconds, the line whole milliseconds: the same time.
    assert abs(int(fields["ms"]) - event["elapsed"]["total"] * 1000) <= 0.501
    hits = fields["hits"]
    assert (hits == "-") == ("spam_score" not in event)
    if hits != "-":
        assert float(hits) == event["spam_score"]
    if fields["passed"] == "Passed":
        assert fields["queued_as"].split("/") == event["queued_as"]
    assert (fields["details"] or None) == (
        ", ".join(event["virusnames"]) if "virusnames" in event else None
    )


async def test_the_event_says_what_happened_to_each_recipient() -> None:
    event = (await handled(FakeScanner("clamav"), refuse={"c@example.com"}))["json"]
    first, second = event["recipients"]
    assert first == {
        "rcpt_to": "b@example.com",
        "ccat_main": "CLEAN",
        "destiny": "pass",
        "action": "Relayed",
        "smtp_code": 250,
        "smtp_code_enh": "2.0.0",
        "smtp_response": first["smtp_response"],
        "queued_as": "QUEUE1",
    }
    assert first["smtp_response"].startswith("250 2.0.0 ")
    assert (second["action"], second["smtp_code"]) == ("Rejected", 554)
    assert set(event["elapsed"]) == {"scanner_clamav", "scan", "policy", "reinject", "total"}


async def test_virus_names_spam_tests_and_cache_hits_are_in_the_event() -> None:
    virus = (await handled(FakeScanner("clamav", (EICAR,))))["json"]
    assert (virus["content_type"], virus["virusnames"]) == ("INFECTED", ["Eicar-Test-Signature"])
    spam = (await handled(FakeScanner("spamassassin", spam=GTUBE)))["json"]
    assert spam["tests"] == {"GTUBE": 1000.0, "NO_RELAYS": -0.001}
    assert spam["spam_score"] == 1000.0


def test_a_long_line_is_cut_as_amavisd_new_cuts_it() -> None:
    text = "(1234-05) Passed CLEAN {RelayedInbound}, " + ",".join(
        f"<recipient{n}@example.com>" for n in range(100)
    )
    pieces = split_line(text)
    assert len(pieces) == 3
    assert all(len(piece) == LOGLINE_MAXLEN for piece in pieces[:-1])
    assert len(pieces[-1]) <= LOGLINE_MAXLEN
    assert all(piece.startswith("(1234-05) ") for piece in pieces)
    assert all(piece.endswith("...") for piece in pieces[:-1])
    assert all(piece.startswith("(1234-05) ...") for piece in pieces[1:])
    rejoined = pieces[0][:-3] + "".join(
        p[len("(1234-05) ...") :].removesuffix("...") for p in pieces[1:-1]
    )
    rejoined += pieces[-1][len("(1234-05) ...") :]
    assert rejoined == text
    assert split_line("(1-01) short") == ["(1-01) short"]


@pytest.fixture
def syslog_socket(tmp_path: Path) -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "log"))
    listener.settimeout(10)
    yield listener
    listener.close()


def test_syslog_lines_carry_the_ident_and_pid_and_are_cut(
    syslog_socket: socket.socket,
) -> None:
    handler = AmavisSyslogHandler("amavis", syslog_socket.getsockname())
    logger = logging.getLogger("test.syslog")
    logger.addHandler(handler)
    try:
        logger.warning("(77-01) Blocked INFECTED (x) {DiscardedInbound}, %s", "y" * 1500)
    finally:
        logger.removeHandler(handler)
        handler.close()
    received = [syslog_socket.recv(4096).decode() for _ in range(2)]
    prefix = f"<20>amavis[{os.getpid()}]: "  # mail.warning
    assert all(r.startswith(prefix + "(77-01) ") for r in received)
    assert received[0].endswith("...\x00") or received[0].endswith("...")
    assert received[1].startswith(prefix + "(77-01) ...")


def test_serve_log_json_overrides_the_config_and_opens_the_file(tmp_path: Path) -> None:
    from contentfilter import cli
    from contentfilter.events import open_event_log

    target = tmp_path / "events.json"
    arguments = cli._parser().parse_args(["serve", "--log-json", str(target)])
    settings = cli.load_config(arguments).log
    assert settings.json == str(target)
    event_log = open_event_log(settings.json)
    assert event_log.json_stream is not None
    event_log.json_stream.write("{}\n")
    event_log.json_stream.close()
    assert target.read_text() == "{}\n"
    assert open_event_log("off").json_stream is None
