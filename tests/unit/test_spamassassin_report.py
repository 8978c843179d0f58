"""Reading spamd's REPORT answer, what spamd is sent, and how errors are mapped.

The files in `spamd_replies/` are complete spamd 4.0.1 answers to `REPORT
SPAMC/1.5`, captured byte for byte from `spamd -L` (Debian 12, no network tests):
`gtube` is a GTUBE message, `plain` a short clean one, `lottery` an HTML
advance-fee message that hits many rules, with a negative score, a wrapped
description and a rule name longer than the name column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiospamc import exceptions as spamc_errors  # type: ignore[import-untyped]
from aiospamc import responses as spamc_responses
from aiospamc.incremental_parser import ResponseParser  # type: ignore[import-untyped]

from contentfilter.errors import ScannerProtocolError, ScannerTimeout, ScannerUnavailable
from contentfilter.model import Envelope, FailureAction, Message, Recipient, SpamReport
from contentfilter.rfc5322 import read_message
from scanners.spamassassin import (
    SpamAssassinScanner,
    SpamAssassinSettings,
    _converted,
    parse_rule_table,
    parse_symbols,
    spam_report,
    spamd_copy,
)

REPLIES = Path(__file__).parent / "spamd_replies"


def captured(name: str) -> Any:
    """A captured spamd answer, parsed by aiospamc exactly as aiospamc.report does."""
    raw = (REPLIES / f"{name}.report").read_bytes()
    return spamc_responses.Response(**ResponseParser().parse(raw))


def message(raw: bytes, sender: str = "alice@sender.example") -> Message:
    envelope = Envelope(sender, (Recipient("bob@recipient.example"),))
    return read_message("1234-01", "mailid", envelope, raw)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "gtube",
            SpamReport(1001.3, 5.0, (("RCVD_ILLEGAL_IP", 1.3), ("GTUBE", 1000.0))),
        ),
        (
            "plain",
            SpamReport(-0.0, 5.0, (("NO_RECEIVED", -0.0), ("NO_RELAYS", -0.0))),
        ),
        (
            "lottery",
            SpamReport(
                14.1,
                5.0,
                (
                    ("MISSING_DATE", 2.7),
                    ("MISSING_MID", 0.6),
                    ("ALL_TRUSTED", -1.0),
                    ("SUBJ_ALL_CAPS", 0.5),
                    ("DEAR_FRIEND", 2.7),
                    ("BANG_GUAR", 1.0),
                    ("GUARANTEED_100_PERCENT", 2.7),
                    ("US_DOLLARS_3", 1.0),
                    ("NORMAL_HTTP_TO_IP", 0.2),  # its description wraps to a second line
                    ("MIME_HTML_ONLY", 0.1),
                    ("HTML_MESSAGE", 0.0),
                    ("HTML_FONT_SIZE_HUGE", 0.0),
                    ("HTML_IMAGE_ONLY_04", 1.7),
                    ("LOTS_OF_MONEY", 0.0),
                    ("T_REMOTE_IMAGE", 0.0),
                    ("UNDISC_MONEY", 1.0),
                    ("ADVANCE_FEE_3_NEW_MONEY", 1.0),  # longer than the 22-column name field
                ),
            ),
        ),
    ],
)
def test_captured_reports_are_read_in_full(name: str, expected: SpamReport) -> None:
    assert spam_report(captured(name)) == expected


def test_rounded_rule_scores_need_not_add_up_to_the_total() -> None:
    """Documented precision: one decimal per rule and in the total."""
    report = spam_report(captured("lottery"))
    assert round(sum(points for _, points in report.tests if points is not None), 1) == 14.2
    assert report.score == 14.1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a custom report template without the table\n 2.0 LOOKS_LIKE_A_RULE but no table\n",
        "---- ---------------------- -----\n",
    ],
)
def test_no_table_means_no_rules(text: str) -> None:
    assert parse_rule_table(text) == ()


def test_rows_before_the_table_and_continuation_lines_are_ignored() -> None:
    text = (
        "Content preview:  1000 GTUBE lookalike in the preview\n"
        " pts rule name              description\n"
        "---- ---------------------- --------------------------------------------------\n"
        " 0.2 NORMAL_HTTP_TO_IP      URI: URI host has a public dotted-decimal IPv4\n"
        "                            address\n"
        "                            [2.0 looks like a score]\n"
        "  12 BIG_RULE               whole points from 10 up\n"
        "-5.5 NEGATIVE_RULE          \n"
        "10000 USER_RULE             five digits\n"
    )
    assert parse_rule_table(text) == (
        ("NORMAL_HTTP_TO_IP", 0.2),
        ("BIG_RULE", 12.0),
        ("NEGATIVE_RULE", -5.5),
        ("USER_RULE", 10000.0),
    )


def test_a_symbols_answer_gives_the_rule_names_without_scores() -> None:
    raw = (  # spamd 4.0.1's answer to SYMBOLS for a GTUBE message
        b"SPAMD/1.1 0 EX_OK\r\nContent-length: 21\r\nSpam: True ; 1001.3 / 5.0\r\n\r\n"
        b"GTUBE,RCVD_ILLEGAL_IP"
    )
    response = spamc_responses.Response(**ResponseParser().parse(raw))
    assert spam_report(response, "SYMBOLS") == SpamReport(
        1001.3, 5.0, (("GTUBE", None), ("RCVD_ILLEGAL_IP", None))
    )


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", []),
        ("\r\n", []),
        ("GTUBE", ["GTUBE"]),
        (
            "MISSING_DATE,MISSING_MID, NO_RECEIVED\r\n",
            ["MISSING_DATE", "MISSING_MID", "NO_RECEIVED"],
        ),
        ("GTUBE,not a rule,__HIDDEN,X-INJECTED: yes", ["GTUBE", "__HIDDEN"]),
    ],
)
def test_symbols_are_rule_names_and_nothing_else(text: str, names: list[str]) -> None:
    assert parse_symbols(text) == tuple((name, None) for name in names)


@pytest.mark.parametrize(("rule_scores", "verb"), [(True, "REPORT"), (False, "SYMBOLS")])
def test_the_request_is_the_cheapest_that_gives_what_is_asked(rule_scores: bool, verb: str) -> None:
    assert SpamAssassinSettings(rule_scores=rule_scores).verb == verb


def test_a_reply_without_a_spam_header_is_unusable() -> None:
    response = spamc_responses.Response(status_code=0, message="EX_OK", body=b"report")
    with pytest.raises(ValueError, match="no usable Spam header"):
        spam_report(response)


# --- what spamd gets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "top"),
    [
        ("alice@sender.example", b"Return-Path: <alice@sender.example>\r\n"),
        ("", b"Return-Path: <>\r\n"),  # the null sender of bounces
        ("j\xf6rg@b\xfccher.example", "Return-Path: <j\xf6rg@b\xfccher.example>\r\n".encode()),
    ],
)
def test_spamd_gets_the_envelope_sender_on_top(sender: str, top: bytes) -> None:
    raw = b"Return-Path: <forged@elsewhere.example>\r\nSubject: hi\r\n\r\nbody\r\n"
    assert spamd_copy(message(raw, sender)) == top + raw


def test_a_sender_that_cannot_be_one_header_line_is_left_out() -> None:
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    assert spamd_copy(message(raw, "evil\r\nX-Injected: yes")) == raw


async def test_oversized_messages_are_skipped_without_asking_spamd() -> None:
    settings = SpamAssassinSettings(server="127.0.0.1:9", max_size=100)  # nothing listens
    scanner = SpamAssassinScanner("spamassassin", settings)
    result = await scanner.scan(message(b"Subject: big\r\n\r\n" + b"x" * 100))
    assert result.skipped == "size 116 > limit 100"
    assert result.spam is None


# --- settings ------------------------------------------------------------------------


def test_defaults_are_spamc_and_amavisd_new_ones() -> None:
    settings = SpamAssassinSettings()
    assert settings.server == "127.0.0.1:783"
    assert settings.max_size == 512_000
    assert settings.on_failure is FailureAction.PASS


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"server": "localhost"}, "server: expected host:port"),
        ({"server": "spamd:0"}, "port out of range"),
        ({"max_size": 0}, "max_size must be positive"),
        ({"connect_timeout": 0}, "connect_timeout must be positive"),
        ({"timeout": -1}, "timeout must be positive"),
        ({"user": "a b"}, "user must be printable ASCII"),
        ({"user": "amavis\r\nCompress: zlib"}, "user must be printable ASCII"),
        ({"user": ""}, "user must be printable ASCII"),
    ],
)
def test_bad_settings_are_refused(values: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SpamAssassinSettings(**values)


# --- errors --------------------------------------------------------------------------


def _status(code: int) -> Exception:
    response = spamc_responses.Response(status_code=code, message="x")
    try:
        response.raise_for_status()
    except spamc_responses.ResponseException as error:
        return error  # type: ignore[no-any-return]
    raise AssertionError("no exception for a non-zero status")


def _connection_failed() -> Exception:
    try:
        raise spamc_errors.AIOSpamcConnectionFailed from ConnectionRefusedError(111, "refused")
    except spamc_errors.AIOSpamcConnectionFailed as error:
        return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (_status(69), ScannerUnavailable, "answered 69"),
        (_status(75), ScannerUnavailable, "answered 75"),
        (_status(79), ScannerTimeout, "answered 79"),
        (_status(76), ScannerProtocolError, "answered 76"),
        (_status(78), ScannerProtocolError, "answered 78"),
        (_status(99), ScannerProtocolError, "answered 99"),
        (_connection_failed(), ScannerUnavailable, "Connection refused"),
        (spamc_errors.ClientTimeoutException(), ScannerTimeout, "no answer in time"),
        (TimeoutError(), ScannerTimeout, "no answer in time"),
        (spamc_errors.BadResponse(b""), ScannerUnavailable, "without a reply"),
        (spamc_errors.BadResponse(b"garbage"), ScannerProtocolError, "unparseable reply"),
        (ConnectionResetError(104, "reset"), ScannerUnavailable, "connection lost"),
        (ValueError("surprise"), ScannerProtocolError, "unusable reply (ValueError)"),
    ],
)
def test_client_errors_become_scanner_errors(
    error: Exception, kind: type[Exception], reason: str
) -> None:
    converted = _converted("spamassassin", "127.0.0.1:783", error)
    assert type(converted) is kind
    assert reason in str(converted)
    assert str(converted).startswith("spamassassin: spamd 127.0.0.1:783")
