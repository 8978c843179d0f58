"""The regex scanner: rule validation, header decoding, header and body matching."""

from __future__ import annotations

import re

import pytest

from contentfilter import config
from contentfilter.errors import ConfigError
from contentfilter.model import ContentsCategory, Envelope, Message, Recipient
from contentfilter.rfc5322 import decode_encoded_words, read_message
from scanners import load_settings
from scanners.regex import RegexRule, RegexScanner, RegexSettings, header_fields

ENVELOPE = Envelope("alice@sender.example", (Recipient("bob@recipient.example"),))


def message(header: bytes, body: bytes = b"Hello.\r\n") -> Message:
    return read_message("1234-01", "mailid", ENVELOPE, header + b"\r\n" + body)


def findings(
    rules: list[RegexRule], msg: Message, max_body_size: int = 51200
) -> list[tuple[str, str]]:
    settings = RegexSettings(rules=tuple(rules), max_body_size=max_body_size)
    scanner = RegexScanner("local_rules", settings)
    return [(f.category.name, f.detail) for f in scanner.findings(msg)]


# --- decoding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ("plain text", "plain text"),
        ("=?UTF-8?B?SW52b2ljZSDDvGJlcmbDpGxsaWc=?=", "Invoice überfällig"),
        ("=?iso-8859-1?Q?Gr=FC=DFe?= aus Berlin", "Grüße aus Berlin"),
        ("Re: =?utf-8?q?caf=C3=A9?= =?utf-8?q?_cr=C3=A8me?=", "Re: café crème"),
        ("=?x-unknown?Q?caf=E9?=", "café"),  # unknown charset: Latin-1
        ("=?utf-8?B?not*base64?=", "=?utf-8?B?not*base64?="),  # malformed: kept
        ("déjà =?utf-8?q?vu?=", "déjà vu"),  # raw UTF-8 beside an encoded word
    ],
)
def test_encoded_words_are_decoded(value: str, decoded: str) -> None:
    assert decode_encoded_words(value) == decoded


def test_header_fields_are_unfolded_and_decoded() -> None:
    header = (
        b"Received: from a.example\r\n\tby b.example; Thu, 20 Nov 2025 12:00:00 +0000\r\n"
        b"Subject: =?UTF-8?B?UHLDpG1pZQ==?=\r\n"
        b"  continued\r\n"
        b"X-Latin1: caf\xe9\r\n"
        b"X-Utf8: caf\xc3\xa9\r\n"
        b"not a header line\r\n"
        b"\r\n"
    )
    assert list(header_fields(header)) == [
        ("Received", "from a.example\tby b.example; Thu, 20 Nov 2025 12:00:00 +0000"),
        ("Subject", "Prämie  continued"),
        ("X-Latin1", "café"),
        ("X-Utf8", "café"),
    ]


# --- rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"category": "spam"}, "needs either `header`"),
        ({"header": "Subject", "body": "x", "category": "spam"}, "needs either `header`"),
        ({"header": "Subject", "category": "spam"}, "needs a `pattern`"),
        ({"body": "x", "pattern": "y", "category": "spam"}, "drop `pattern`"),
        ({"header": "Sub ject", "pattern": "x", "category": "spam"}, "not a header field name"),
        (
            {"header": "Subject", "pattern": "(unclosed", "category": "spam"},
            "Subject /(unclosed/: bad regular expression: missing )",
        ),
        ({"body": "[z-a]", "category": "spam"}, "body /[z-a]/: bad regular expression"),
    ],
)
def test_bad_rules_are_refused_with_the_rule_named(rule: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        RegexRule(**rule)  # type: ignore[arg-type]


def test_the_config_error_carries_the_key_path() -> None:
    section = {
        "type": "regex",
        "rules": [
            {"header": "Subject", "pattern": "ok", "category": "spam"},
            {"body": "(", "category": "spam"},
        ],
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(config.from_mapping({"scanners": {"local_rules": section}}).scanners)
    assert caught.value.key == "scanners.local_rules.rules[1]"
    assert "body /(/: bad regular expression" in str(caught.value)


def test_an_unknown_category_is_refused() -> None:
    section = {"type": "regex", "rules": [{"body": "x", "category": "evil"}]}
    with pytest.raises(ConfigError, match=r"rules\[0\]\.category: must be one of"):
        load_settings(config.from_mapping({"scanners": {"local_rules": section}}).scanners)


def test_rules_dump_as_written() -> None:
    section = {
        "type": "regex",
        "rules": [
            {"header": "Subject", "pattern": "x", "category": "banned", "detail": "d"},
            {"body": "y", "category": "spam", "ignore_case": False},
        ],
    }
    loaded = config.from_mapping({"scanners": {"local_rules": section}})
    dumped = config.dump(loaded, load_settings(loaded.scanners))
    assert (
        "- header: Subject\n      pattern: x\n      category: banned\n      detail: d\n" in dumped
    )
    assert "- body: y\n      category: spam\n      ignore_case: false\n" in dumped


# --- matching ------------------------------------------------------------------------


def test_a_header_rule_matches_the_decoded_value() -> None:
    msg = message(b"Subject: =?UTF-8?B?WW91ciBJbnZvaWNlLmV4ZQ==?=\r\n")  # "Your Invoice.exe"
    rule = RegexRule("banned", header="subject", pattern=r"invoice\.exe$", detail="invoice exe")
    assert findings([rule], msg) == [("BANNED", "invoice exe")]


def test_case_matters_only_when_asked() -> None:
    msg = message(b"X-Mailer: BULKMAILER 2.0\r\n")
    loose = RegexRule("spam", header="X-Mailer", pattern="^bulkmailer")
    strict = RegexRule("spam", header="X-Mailer", pattern="^bulkmailer", ignore_case=False)
    assert findings([loose], msg) == [("SPAM", "X-Mailer /^bulkmailer/")]
    assert findings([strict], msg) == []


def test_any_field_of_the_name_can_match() -> None:
    msg = message(b"Received: from good.example\r\nReceived: from bad.example\r\n")
    rule = RegexRule("bad_header", header="Received", pattern=r"bad\.example")
    assert findings([rule], msg) == [("BAD_HEADER", r"Received /bad\.example/")]


def test_a_missing_header_matches_nothing() -> None:
    rule = RegexRule("spam", header="X-Spam-Bot", pattern=".*")
    assert findings([rule], message(b"Subject: hi\r\n")) == []


def test_a_body_rule_sees_the_raw_body_not_the_header() -> None:
    msg = message(b"Subject: wire transfer\r\n", b"Please act =\r\nnow: wire transfer URGENT\r\n")
    rule = RegexRule("spam", body=r"wire transfer \w+", detail="advance fee")
    assert findings([rule], msg) == [("SPAM", "advance fee")]
    only_header = RegexRule("spam", body="^Subject:")
    assert findings([only_header], msg) == []


def test_body_bytes_are_read_as_latin1() -> None:
    msg = message(b"Subject: x\r\n", "Grüße".encode())  # UTF-8 bytes: two per ü/ß
    assert findings([RegexRule("spam", body="GrÃ¼Ã\x9fe")], msg) == [("SPAM", "body /GrÃ¼Ã\x9fe/")]


def test_the_body_is_read_up_to_the_cap() -> None:
    msg = message(b"Subject: x\r\n", b"a" * 100 + b"NEEDLE\r\n")
    rule = RegexRule("spam", body="needle")
    assert findings([rule], msg, max_body_size=106) == [("SPAM", "body /needle/")]
    assert findings([rule], msg, max_body_size=105) == []


def test_each_matching_rule_adds_a_finding_in_rule_order() -> None:
    msg = message(b"Subject: EICAR test\r\n", b"X5O!P%@AP\r\n")
    rules = [
        RegexRule("virus", body=r"X5O!P%@AP", detail="EICAR start"),
        RegexRule("unchecked", header="Subject", pattern="nothing like this"),
        RegexRule("bad_header", header="Subject", pattern="eicar"),
    ]
    assert findings(rules, msg) == [("VIRUS", "EICAR start"), ("BAD_HEADER", "Subject /eicar/")]


async def test_scan_returns_a_result_with_the_scanner_name() -> None:
    rule = RegexRule("spam", header="Subject", pattern="offer")
    scanner = RegexScanner("local_rules", RegexSettings(rules=(rule,)))
    result = await scanner.scan(message(b"Subject: special offer\r\n"))
    assert result.scanner == "local_rules"
    assert [(f.category, f.scanner) for f in result.findings] == [
        (ContentsCategory.SPAM, "local_rules")
    ]
    assert scanner.cache_key(message(b"Subject: x\r\n")) is None and not scanner.needs_parts
