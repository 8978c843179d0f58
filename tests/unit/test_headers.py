"""contentfilter.headers: amavisd-new's header formats and the one message edit.

Golden strings marked "amavisd-new 2.13" were produced by running amavisd-new's own
`Amavis::Out::EditHeader::hdr` (Debian package 1:2.13.0-3+deb12u1) on the same input.
"""

from __future__ import annotations

import email
import email.policy
import re

import pytest

from contentfilter.headers import (
    alert_header,
    alert_text,
    apply_edits,
    encoded_words,
    expand_subject_tag,
    format_score,
    header_line,
    perl_number,
    spam_headers,
    spam_level,
    virus_scanned_header,
)
from contentfilter.model import ContentsCategory
from contentfilter.rfc5322 import decoded_text, header_fields, header_section_end

CRLF = b"\r\n"


def unfold(field: bytes) -> bytes:
    """RFC 5322 section 2.2.3: unfolding removes each CRLF before whitespace."""
    return re.sub(rb"\r\n(?=[ \t])", b"", field)


# --- numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "text"),
    [
        (1007.457, "1007.457"),
        (6.31, "6.31"),
        (2.0, "2"),
        (-0.1, "-0.1"),
        (0.0, "0"),
        (-0.0001, "0"),  # Perl: 0+sprintf("%.3f", -0.0001) is 0, never -0
        (0.0004, "0"),
        (0.0005, "0.001"),
        (5.55555, "5.556"),
        (1.0005, "1"),
        (-5.0, "-5"),
        (123456789.1234, "123456789.123"),
    ],
)
def test_format_score_is_perl_0_plus_sprintf(score: float, text: str) -> None:
    assert format_score(score) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(2.0, "2"), (6.31, "6.31"), (-999.0, "-999"), (1000.0, "1000"), (0.001, "0.001"), (-0.0, "0")],
)
def test_perl_number(value: float, text: str) -> None:
    assert perl_number(value) == text


@pytest.mark.parametrize(
    ("score", "stars"),
    [
        (1007.457, 64),
        (64.9, 64),
        (63.9, 63),
        (6.31, 6),
        (1.0, 1),
        (0.999, 0),
        (0.0, 0),
        (-5.0, 0),  # amavisd-new: a negative score gives an empty bar
    ],
)
def test_spam_level(score: float, stars: int) -> None:
    assert spam_level(score) == "*" * stars


# --- single header fields -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("X-Spam-Flag", "YES", b"X-Spam-Flag: YES\r\n"),
        ("X-Spam-Level", "", b"X-Spam-Level:\r\n"),  # amavisd-new: no space before nothing
        ("X-Trailing", "value   ", b"X-Trailing: value   \r\n"),
        # amavisd-new 2.13 goldens: folds before existing whitespace, never a TAB added
        (
            "X-Amavis-Alert",
            "INFECTED, message contains virus: Win.Trojan.Agent-123456, "
            "Eicar-Test-Signature, Win.Test.EICAR_HDB-1, Html.Phishing.Bank-42",
            b"X-Amavis-Alert: INFECTED, message contains virus: Win.Trojan.Agent-123456,\r\n"
            b" Eicar-Test-Signature, Win.Test.EICAR_HDB-1, Html.Phishing.Bank-42\r\n",
        ),
        (
            "X-Amavis-Alert",
            "BANNED, message contains a   b  " + "c" * 60 + "   ddddddddd",
            b"X-Amavis-Alert: BANNED, message contains a   b \r\n "
            + b"c" * 60
            + b"   ddddddddd\r\n",
        ),
        (
            "X-Virus-Scanned",
            "x\t" + "y" * 58 + " \t zzzzzzzzzzzzzzzzzzzzzz",
            b"X-Virus-Scanned: x\r\n\t" + b"y" * 58 + b" \t\r\n zzzzzzzzzzzzzzzzzzzzzz\r\n",
        ),
        ("X-Long", "a" * 96 + " b", b"X-Long:\r\n " + b"a" * 96 + b"\r\n b\r\n"),
    ],
)
def test_header_line_matches_amavisd(name: str, value: str, expected: bytes) -> None:
    assert header_line(name, value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "short",
        "word " * 40,
        "BANNED, message contains multipart/mixed | application/octet-stream,.exe,invoice.exe " * 3,
        "no-spaces-at-all-" * 10,
    ],
)
def test_header_line_folding_keeps_value_and_limits(value: str) -> None:
    field = header_line("X-Test", value)
    assert field.endswith(CRLF)
    assert unfold(field) == b"X-Test: " + value.encode() + CRLF
    lines = field.split(CRLF)[:-1]
    assert all(line[:1] in (b" ", b"\t") for line in lines[1:])
    for line in lines:  # longer only when a single word is longer than the limit
        assert len(line) <= 78 or b" " not in line.strip()


@pytest.mark.parametrize(
    "value", ["evil\r\nBcc: victim@example.com", "evil\nX-Spam-Flag: NO", "a\rb", "nul\x00"]
)
def test_header_line_cannot_inject_a_field(value: str) -> None:
    field = header_line("X-Amavis-Alert", value)
    assert field.count(CRLF) == 1 and field.endswith(CRLF)
    assert b"\r" not in field[:-2] and b"\n" not in field[:-2] and b"\x00" not in field


@pytest.mark.parametrize("name", ["", "X Bad", "X:Bad", "Caf\u00e9"])
def test_header_line_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        header_line(name, "value")


@pytest.mark.parametrize(
    ("value", "display"),
    [
        ("BANNED, message contains счёт.exe", "BANNED, message contains счёт.exe"),
        ("два слова here", "два слова here"),
        ("x" + "ж" * 80, "x" + "ж" * 80),
    ],
)
def test_header_line_encodes_non_ascii_as_rfc2047(value: str, display: str) -> None:
    field = header_line("Subject", value)
    assert field.isascii()
    assert all(len(word) <= 75 for word in re.findall(rb"=\?[^ ]*\?=", field))
    assert all(len(line) <= 78 for line in field.split(CRLF))
    message = email.message_from_bytes(field + CRLF, policy=email.policy.default)
    assert str(message["Subject"]) == display


def test_encoded_words_never_split_a_character() -> None:
    words = encoded_words("€" * 40)
    assert all(len(word) <= 75 for word in words)
    assert all(word.count("=") % 3 == 2 for word in words)  # "=?", "?=" and whole "=E2=82=AC"


# --- spam headers ---------------------------------------------------------------------

GTUBE_TESTS = (
    ("UNDISC_RECIPS", 0.883),
    ("GTUBE", 1000.0),
    ("DNS_FROM_AHBL_RHSBL", 0.306),
    ("DNS_FROM_RFC_ABUSE", 0.479),
    ("DNS_FROM_RFC_DSN", 2.872),
    ("DNS_FROM_RFC_POST", 1.44),
    ("MSGID_FROM_MTA_ID", 0.927),
    ("NO_REAL_NAME", 0.55),
)


def test_spam_headers_gtube_golden() -> None:
    """The tutorial's GTUBE example, byte for byte as amavisd-new 2.13 folds it."""
    headers = spam_headers(
        score=1007.457,
        tagged_above=2.0,
        required=6.31,
        is_spammy=True,
        tests=GTUBE_TESTS,
        autolearn="no autolearn_force=no",
    )
    assert b"".join(headers) == (
        b"X-Spam-Flag: YES\r\n"
        b"X-Spam-Score: 1007.457\r\n"
        b"X-Spam-Level: " + b"*" * 64 + b"\r\n"
        b"X-Spam-Status: Yes, score=1007.457 tagged_above=2 required=6.31\r\n"
        b" tests=[DNS_FROM_AHBL_RHSBL=0.306, DNS_FROM_RFC_ABUSE=0.479,\r\n"
        b" DNS_FROM_RFC_DSN=2.872, DNS_FROM_RFC_POST=1.44, GTUBE=1000,\r\n"
        b" MSGID_FROM_MTA_ID=0.927, NO_REAL_NAME=0.55, UNDISC_RECIPS=0.883]\r\n"
        b" autolearn=no autolearn_force=no\r\n"
    )


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        (
            {"score": 3.5, "tagged_above": 2.0, "is_spammy": False, "tests": (), "autolearn": None},
            "No, score=3.5 tagged_above=2 required=6.31 tests=[none] autolearn=unavailable",
        ),
        (
            {"score": -1.9, "tagged_above": None, "is_spammy": False, "autolearn": "ham"},
            "No, score=-1.9 required=6.31 tests=[BAYES_00=-1.9] autolearn=ham",
        ),
        (
            {"score": 2.0, "tagged_above": -999.0, "is_spammy": False, "autolearn": "no"},
            "No, score=2 tagged_above=-999 required=6.31 tests=[BAYES_00=-1.9] autolearn=no",
        ),
        (
            {
                "score": 0.0,
                "tagged_above": None,
                "is_spammy": False,
                "autolearn": None,
                "tests": (("ZERO", 0.0), ("A_RULE", 0.001)),
            },
            "No, score=0 required=6.31 tests=[A_RULE=0.001, ZERO=0] autolearn=unavailable",
        ),
        (  # spamd asked for the rule names only (spamassassin.rule_scores: false)
            {
                "score": 1001.3,
                "tagged_above": 2.0,
                "is_spammy": True,
                "autolearn": None,
                "tests": (("RCVD_ILLEGAL_IP", None), ("GTUBE", None)),
            },
            "Yes, score=1001.3 tagged_above=2 required=6.31 tests=[GTUBE, RCVD_ILLEGAL_IP]"
            " autolearn=unavailable",
        ),
    ],
)
def test_spam_status_variants(kwargs: dict[str, object], status: str) -> None:
    arguments: dict[str, object] = {"required": 6.31, "tests": (("BAYES_00", -1.9),)}
    arguments.update(kwargs)
    flag, score, level, status_field = spam_headers(**arguments)  # type: ignore[arg-type]
    assert flag == (b"X-Spam-Flag: YES\r\n" if kwargs["is_spammy"] else b"X-Spam-Flag: NO\r\n")
    assert score.startswith(b"X-Spam-Score: ") and level.startswith(b"X-Spam-Level:")
    assert unfold(status_field) == f"X-Spam-Status: {status}".encode() + CRLF


def test_spam_headers_order_is_amavisd_order() -> None:
    headers = spam_headers(
        score=7.0, tagged_above=2.0, required=6.31, is_spammy=True, tests=(), autolearn=None
    )
    names = [line.split(b":", 1)[0] for line in headers]
    assert names == [b"X-Spam-Flag", b"X-Spam-Score", b"X-Spam-Level", b"X-Spam-Status"]


def test_spam_status_folds_only_between_items() -> None:
    tests = tuple((f"RULE_NUMBER_{n:02d}", 1.5) for n in range(20))
    (status,) = spam_headers(
        score=30.0, tagged_above=2.0, required=6.31, is_spammy=True, tests=tests, autolearn="no"
    )[3:]
    for line in status.split(CRLF)[1:-1]:
        assert line.startswith(b" ") and len(line) <= 78
        assert re.fullmatch(rb" (tests=\[)?RULE_NUMBER_\d\d=1\.5[,\]]( RULE.*)?|.*", line)
    assert b"RULE_NUMBER_00=1.5, RULE_NUMBER_01=1.5" in unfold(status)


# --- alerts and subject tags ----------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "details", "text"),
    [
        (
            ContentsCategory.VIRUS,
            ["Eicar-Test-Signature"],
            "INFECTED, message contains virus: Eicar-Test-Signature",
        ),
        (
            ContentsCategory.VIRUS,
            ["Eicar-Test-Signature", "Win.Test.EICAR_HDB-1"],
            "INFECTED, message contains virus: Eicar-Test-Signature, Win.Test.EICAR_HDB-1",
        ),
        (
            ContentsCategory.BANNED,
            ["text/plain,.exe,run.exe", "second.exe"],
            "BANNED, message contains text/plain,.exe,run.exe",
        ),
        (
            ContentsCategory.BAD_HEADER,
            ['Duplicate header field: "Subject"'],
            'BAD HEADER SECTION, Duplicate header field: "Subject"',
        ),
    ],
)
def test_alert_text(category: ContentsCategory, details: list[str], text: str) -> None:
    assert alert_text(category, details) == text
    assert unfold(alert_header(text)) == f"X-Amavis-Alert: {text}".encode() + CRLF


@pytest.mark.parametrize("category", [ContentsCategory.CLEAN, ContentsCategory.SPAM])
def test_alert_text_refuses_categories_without_alert(category: ContentsCategory) -> None:
    with pytest.raises(ValueError):
        alert_text(category, [])


def test_virus_scanned_header() -> None:
    assert virus_scanned_header("Debian amavis at mail.example.com") == (
        b"X-Virus-Scanned: Debian amavis at mail.example.com\r\n"
    )


@pytest.mark.parametrize(
    ("tag", "score", "required", "expanded"),
    [
        ("***SPAM*** ", 9.0, 6.31, "***SPAM*** "),
        ("***SPAM(_SCORE_)*** ", 1007.457, 6.31, "***SPAM(1007.457)*** "),
        ("[_SCORE_/_REQD_] ", 7.1234, 6.3, "[7.123/6.3] "),
        ("[_SCORE_/_REQD_] ", None, None, "[0/-] "),  # amavisd-new's defaults
        ("_YESNO_ _HOSTNAME_ _score_ ", 1.0, 2.0, "_YESNO_ _HOSTNAME_ _score_ "),
    ],
)
def test_expand_subject_tag(
    tag: str, score: float | None, required: float | None, expanded: str
) -> None:
    assert expand_subject_tag(tag, score, required) == expanded


# --- the header section ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "names", "body_start"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nbody", [b"A", b"B"], 14),
        (b"A: 1\r\n folded\r\nB: 2\r\n\r\n", [b"A", b"B"], 23),
        (b"A: 1\r\nB: 2\r\n", [b"A", b"B"], 12),  # no empty line, no body
        (b"A: 1", [b"A"], 4),  # not even a final line break
        (b"\r\nA: body\r\n", [], 2),  # empty header section
        (b"A: 1\nB: 2\n\nbody\n", [b"A", b"B"], 11),  # bare LF
        (b"A: 1\r\nnot a header\r\nB: 2\r\n", [b"A"], 6),  # the body starts there
        (b" leading: ws\r\n\r\n", [b""], 16),  # a nameless first field, kept whole
        (b"Obs-Name : value\r\n\r\n", [b"Obs-Name"], 20),  # RFC 5322 section 4.5.3
        (b"", [], 0),
    ],
)
def test_header_section(raw: bytes, names: list[bytes], body_start: int) -> None:
    fields, _ = header_fields(raw)
    assert [field.name for field in fields] == names
    assert header_section_end(raw) == body_start


# --- apply_edits ----------------------------------------------------------------------

BODY = b"X-Spam-Flag: YES\r\nSubject: in the body\r\n\r\n\x00\xff binary \r\n.\r\n"
ADDED = (b"X-Virus-Scanned: Debian amavis at mx.example.com\r\n",)
SPAM = "***SPAM*** "


@pytest.mark.parametrize(
    ("header", "lines", "tag", "remove", "expected"),
    [
        ("Subject: Hi\r\n", ADDED, "", False, ADDED[0] + b"Subject: Hi\r\n"),
        ("Subject: Hi\r\n", (), SPAM, False, b"Subject: ***SPAM*** Hi\r\n"),
        ("Subject: ***SPAM*** Hi\r\n", (), SPAM, False, b"Subject: ***SPAM*** Hi\r\n"),
        ("Subject: ***SPAM***\r\n", (), SPAM, False, b"Subject: ***SPAM***\r\n"),
        ("Subject:   Hi\r\n", (), SPAM, False, b"Subject:   ***SPAM*** Hi\r\n"),
        ("Subject:Hi\r\n", (), SPAM, False, b"Subject: ***SPAM*** Hi\r\n"),
        ("Subject: \r\n", (), SPAM, False, b"Subject: ***SPAM***\r\n"),
        ("Subject:\r\n Hi\r\n", (), SPAM, False, b"Subject: ***SPAM***\r\n Hi\r\n"),
        ("subject: Hi\r\n", (), "[SPAM]", False, b"subject: [SPAM]Hi\r\n"),
        ("Subject: Hi\r\n", (), "   ", False, b"Subject: Hi\r\n"),  # a blank tag is no tag
        (  # folded subject: continuation lines kept byte for byte
            "Subject: a long\r\n\tsubject line\r\nTo: b@y\r\n",
            (),
            SPAM,
            False,
            b"Subject: ***SPAM*** a long\r\n\tsubject line\r\nTo: b@y\r\n",
        ),
        (  # missing Subject: added below our header lines
            "From: a@x\r\n",
            ADDED,
            SPAM,
            False,
            ADDED[0] + b"Subject: ***SPAM***\r\nFrom: a@x\r\n",
        ),
        (  # every Subject field is tagged, as amavisd-new edits them all
            "Subject: one\r\nSubject: two\r\n",
            (),
            SPAM,
            False,
            b"Subject: ***SPAM*** one\r\nSubject: ***SPAM*** two\r\n",
        ),
        (  # X-Spam-* removed with continuation lines, any case; others kept
            "X-Spam-Status: Yes,\r\n\tscore=99\r\nX-SPAM-FLAG: YES\r\nx-spam-level: ***\r\n"
            "X-Spamd-Bar: +++\r\nX-Spam: yes\r\nSubject: Hi\r\n",
            ADDED,
            "",
            True,
            ADDED[0] + b"X-Spamd-Bar: +++\r\nX-Spam: yes\r\nSubject: Hi\r\n",
        ),
        (  # ... and kept when not asked to remove them
            "X-Spam-Flag: YES\r\n",
            (),
            "",
            False,
            b"X-Spam-Flag: YES\r\n",
        ),
    ],
)
def test_apply_edits(
    header: str, lines: tuple[bytes, ...], tag: str, remove: bool, expected: bytes
) -> None:
    raw = header.encode() + CRLF + BODY
    edited = apply_edits(raw, lines, tag, remove)
    assert edited == expected + CRLF + BODY
    assert edited.endswith(CRLF + BODY)  # the body, byte for byte


@pytest.mark.parametrize(
    ("subject", "tag", "raw_expected", "display"),
    [
        (  # ASCII tag before an encoded-word: plain text, the space kept
            b"=?UTF-8?B?0J/RgNC40LLQtdGC?=",
            SPAM,
            b"***SPAM*** =?UTF-8?B?0J/RgNC40LLQtdGC?=",
            "***SPAM*** Привет",
        ),
        (  # no trailing space in the tag: one is needed before an encoded-word
            b"=?UTF-8?B?0J/RgNC40LLQtdGC?=",
            "[SPAM]",
            b"[SPAM] =?UTF-8?B?0J/RgNC40LLQtdGC?=",
            "[SPAM] Привет",
        ),
        (  # non-ASCII tag before an encoded-word: its space inside its own encoding
            b"=?UTF-8?B?0J/RgNC40LLQtdGC?=",
            "⚠SPAM⚠ ",
            b"=?UTF-8?Q?=E2=9A=A0SPAM=E2=9A=A0_?= =?UTF-8?B?0J/RgNC40LLQtdGC?=",
            "⚠SPAM⚠ Привет",
        ),
        (  # non-ASCII tag before plain text
            b"Hello",
            "⚠SPAM ",
            b"=?UTF-8?Q?=E2=9A=A0SPAM?= Hello",
            "⚠SPAM Hello",
        ),
        (  # an encoded subject already carrying the tag is left alone
            b"=?UTF-8?Q?***SPAM***_Hi?=",
            SPAM,
            b"=?UTF-8?Q?***SPAM***_Hi?=",
            "***SPAM*** Hi",
        ),
        (  # raw UTF-8 subject (SMTPUTF8): the ASCII tag goes in front
            "Привет".encode(),
            SPAM,
            "***SPAM*** Привет".encode(),
            "***SPAM*** Привет",
        ),
    ],
)
def test_apply_edits_encoded_subjects(
    subject: bytes, tag: str, raw_expected: bytes, display: str
) -> None:
    raw = b"From: a@x\r\nSubject: " + subject + b"\r\n\r\n" + BODY
    edited = apply_edits(raw, (), tag, False)
    assert edited == b"From: a@x\r\nSubject: " + raw_expected + b"\r\n\r\n" + BODY
    parsed = email.message_from_bytes(edited, policy=email.policy.default)
    assert str(parsed["Subject"]) == display


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Subject: Hi\r\n", b"Subject: ***SPAM*** Hi\r\n"),  # no body, no empty line
        (b"Subject: Hi", b"Subject: ***SPAM*** Hi"),  # not even a final CRLF
        (b"\r\nSubject: body\r\n", b"Subject: ***SPAM***\r\n\r\nSubject: body\r\n"),
        (b"Subject: Hi\n\nbody\n", b"Subject: ***SPAM*** Hi\n\nbody\n"),  # bare LF kept
        (b"", b"Subject: ***SPAM***\r\n"),
    ],
)
def test_apply_edits_odd_messages(raw: bytes, expected: bytes) -> None:
    assert apply_edits(raw, (), SPAM, True) == expected


def test_apply_edits_leaves_a_non_header_line_and_what_follows() -> None:
    raw = b"Subject: Hi\r\nnot a header\r\nX-Spam-Flag: YES\r\n\r\nbody"
    assert apply_edits(raw, (), SPAM, True) == (
        b"Subject: ***SPAM*** Hi\r\nnot a header\r\nX-Spam-Flag: YES\r\n\r\nbody"
    )


def test_apply_edits_refuses_unterminated_header_lines() -> None:
    with pytest.raises(ValueError):
        apply_edits(b"Subject: Hi\r\n\r\n", (b"X-Virus-Scanned: x",), "", False)


def test_apply_edits_with_spam_headers_parses() -> None:
    lines = spam_headers(
        score=1007.457,
        tagged_above=2.0,
        required=6.31,
        is_spammy=True,
        tests=GTUBE_TESTS,
        autolearn="no",
    )
    raw = b"Subject: Test spam mail (GTUBE)\r\nX-Spam-Flag: NO\r\n\r\n" + BODY
    edited = apply_edits(raw, (virus_scanned_header("Debian amavis at x"), *lines), SPAM, True)
    parsed = email.message_from_bytes(edited, policy=email.policy.default)
    assert parsed.get_all("X-Spam-Flag") == ["YES"]
    assert parsed["Subject"] == "***SPAM*** Test spam mail (GTUBE)"
    assert "tagged_above=2 required=6.31" in str(parsed["X-Spam-Status"])
    assert edited.endswith(CRLF + BODY)


# --- hostile header sections ----------------------------------------------------------


def test_apply_edits_removes_only_the_spam_fields_we_write() -> None:
    ours = (
        b"X-Spam-Flag: YES\r\nX-Spam-Score: 9\r\nX-Spam-Level: *********\r\n"
        b"X-Spam-Status: Yes,\r\n score=9\r\nX-Spam-Report: r\r\nX-Spam-Checker-Version: v\r\n"
        b"X-Spam-Tests: t\r\n"
    )
    theirs = (
        b"X-Spam-Summary: list summary\r\nX-Spam-Processed: mx.example, Mon\r\n"
        b"X-Spam-Check-By: mx.example\r\nX-Spamd-Result: default: False\r\n"
    )
    raw = b"Subject: Hi\r\n" + ours + theirs + CRLF + BODY
    assert apply_edits(raw, ADDED, "", True) == ADDED[0] + b"Subject: Hi\r\n" + theirs + CRLF + BODY


WHITESPACE_FIRST = [
    b" From: a@example.org\r\nSubject: Hi\r\n\r\nbody\r\n",
    b"\tFrom: a@example.org\r\n\tTo: b@example.com\r\nSubject: Hi\r\n\r\nbody\r\n",
    b" Subject: hidden\r\n\r\nbody\r\n",
    b" From: a@example.org",  # no line end at all
]


@pytest.mark.parametrize("raw", WHITESPACE_FIRST)
def test_added_lines_never_continue_a_section_that_starts_with_whitespace(raw: bytes) -> None:
    fields, end = header_fields(raw)
    lines = (*ADDED, b"X-Amavis-Alert: BAD HEADER SECTION, Header field syntax error\r\n")
    edited = apply_edits(raw, lines, "", True)
    added = b"".join(lines)
    # The original section stays one piece, byte for byte, our lines right after it.
    original = raw[:end] if raw[:end].endswith(b"\n") else raw[:end] + CRLF
    assert edited == original + added + raw[end:]
    # Each of our fields still reads as we wrote it: nothing became its continuation.
    parsed = email.message_from_bytes(edited, policy=email.policy.default)
    assert parsed["X-Virus-Scanned"] == "Debian amavis at mx.example.com"
    assert fields and fields[0].name == b""


@pytest.mark.parametrize("raw", WHITESPACE_FIRST[:3])
def test_tagging_a_section_that_starts_with_whitespace_adds_one_subject(raw: bytes) -> None:
    edited = apply_edits(raw, ADDED, SPAM, True)
    subjects = [f for f in header_fields(edited)[0] if f.name.lower() == b"subject"]
    count = sum(1 for f in header_fields(raw)[0] if f.name.lower() == b"subject")
    assert len(subjects) == max(count, 1)
    assert all(b"***SPAM***" in edited[f.start : f.end] for f in subjects)
    assert edited.startswith(raw[:2])  # the original first line is still first


@pytest.mark.parametrize(
    "subject",
    [
        b"=?iso-8859-\xe9?q?x?=",
        "=?iso-8859-é?q?x?=".encode(),
        b"=?utf-8?q?ok?= =?iso-8859-\xe9?b?eA==?= tail",
        b"=?x-unknown?q?x?=",
        b"=?utf-8?b?not base64?=",
        b"=?\xff\xfe?q?x?=",
    ],
)
def test_subject_with_a_broken_rfc2047_charset_is_still_tagged(subject: bytes) -> None:
    assert isinstance(decoded_text(subject), str)
    raw = b"From: a@x\r\nSubject: " + subject + b"\r\n\r\nbody\r\n"
    edited = apply_edits(raw, (), SPAM, False)
    assert edited == b"From: a@x\r\nSubject: ***SPAM*** " + subject + b"\r\n\r\nbody\r\n"
