"""The decoder where mail clients and strict MIME parsers disagree: it reads what clients show."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from email.parser import BytesHeaderParser
from email.policy import compat32

import pytest

from contentfilter.decode import readings, transfer
from contentfilter.decode.session import Session
from contentfilter.decode.textcodecs import ydecode_body
from contentfilter.mime import DecoderLimits, decode, format_tree
from contentfilter.model import (
    ContentsCategory,
    DecodedMessage,
    Envelope,
    Part,
    Recipient,
)
from contentfilter.rfc5322 import read_message
from scanners.banned import BannedRule, BannedScanner, BannedSettings
from tests.support import evasions
from tests.support import mimegen as g
from tests.support.messages import EICAR

LIMITS = DecoderLimits()
EICAR_DIGEST = hashlib.sha256(EICAR).hexdigest()


def eicar_parts(decoded: DecodedMessage) -> list[Part]:
    return [part for part in decoded.walk() if part.digest == EICAR_DIGEST]


@pytest.mark.parametrize("case", evasions.ALL, ids=str)
def test_the_hidden_eicar_is_found(case: evasions.Evasion) -> None:
    decoded = decode(case.build(), LIMITS)
    found = eicar_parts(decoded)
    assert found, format_tree(decoded)
    assert all(part.names == ("eicar.com",) for part in found)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], ()),
        (["base64"], ("base64",)),
        (["\r\n base64"], ("base64",)),
        (["BASE64 (it is)"], ("base64",)),
        (["quoted-printable", "base64"], ("quoted-printable", "base64")),
        (["base64", "quoted-printable"], ("base64", "quoted-printable")),
        (["base64, quoted-printable"], ("base64", "quoted-printable")),
        (["7bit", "base64"], ("7bit", "base64")),
        (["xxx", "base64"], ("base64",)),
        (["x-uue"], ("x-uuencode",)),
        (["quoted-printable;"], ("quoted-printable",)),
        (["x-gzip64"], ()),
        (["=?us-ascii?Q?base64?="], ("base64",)),
    ],
)
def test_transfer_encoding_readings_clients_first(
    values: list[str], expected: tuple[str, ...]
) -> None:
    header = g.entity([f"Content-Transfer-Encoding: {value}" for value in values], b"")
    parsed = BytesHeaderParser(policy=compat32).parsebytes(header)
    assert readings.transfer_encodings(parsed) == expected


def test_each_reading_of_an_ambiguous_part_is_a_child_the_clients_reading_first() -> None:
    attachment = evasions._attachment(
        "Content-Transfer-Encoding: quoted-printable", "Content-Transfer-Encoding: base64"
    )
    decoded = decode(g.message(g.multipart(g.text(), attachment)), LIMITS)
    zip_part = decoded.root.children[1]
    assert zip_part.names == ("eicar.zip",) and zip_part.size == 0
    as_printable, as_base64 = zip_part.children
    assert as_printable.names == as_base64.names == ("eicar.zip",)
    assert as_printable.detected_type != "zip" and as_base64.detected_type == "zip"
    assert decoded.problems == ()  # the odd reading's damage is nobody's problem


def test_damage_in_the_clients_reading_is_still_a_problem() -> None:
    attachment = evasions._attachment(
        "Content-Transfer-Encoding: base64",
        "Content-Transfer-Encoding: quoted-printable",
        body=b"!!not base64!!\r\n",
    )
    decoded = decode(g.message(g.multipart(g.text(), attachment)), LIMITS)
    assert decoded.problems == (
        "Damaged base64 (4 characters outside the base64 alphabet): p003 (eicar.zip)",
    )


def test_a_well_formed_part_has_one_reading_and_keeps_its_shape() -> None:
    decoded = decode(g.with_attachments(g.attachment(EICAR, "eicar.com")), LIMITS)
    assert [part.part_id for part in decoded.walk()] == ["p001", "p002", "p003"]
    assert eicar_parts(decoded)[0].part_id == "p003"


def test_readings_of_readings_stay_within_the_limits() -> None:
    """Each level reuses its parent's boundary, so each has two readings: the work is
    taken from the quota and the file count instead of doubling with every level."""
    body = evasions._ZIP
    for _ in range(30):
        header = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        body = header + evasions._parts("b", evasions._TEXT, body)
    decoded = decode(g.message(body), LIMITS)
    assert len(list(decoded.walk())) <= LIMITS.max_files
    assert eicar_parts(decoded)


@pytest.mark.parametrize("case", evasions.FILE_NAMES, ids=str)
def test_every_name_a_client_shows_is_known(case: evasions.Evasion) -> None:
    decoded = decode(case.build(), LIMITS)
    assert any("invoice.exe" in part.names for part in decoded.walk()), format_tree(decoded)


@pytest.mark.parametrize("case", evasions.FILE_NAMES, ids=str)
def test_the_hidden_name_is_banned(case: evasions.Evasion) -> None:
    rules = (BannedRule.from_config({"ban": r"(?i)\.exe$", "match": "name"}),)
    scanner = BannedScanner("banned", BannedSettings(rules=rules), LIMITS)
    envelope = Envelope("alice@sender.example", (Recipient("bob@recipient.example"),))
    result = asyncio.run(scanner.scan(read_message("1-01", "m1", envelope, case.build())))
    assert [finding.category for finding in result.findings] == [ContentsCategory.BANNED]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"Zm9vYg==YXI=", b"foobar"),  # padding inside: Thunderbird and Apple Mail go on
        (b"Zm9v\r\n#YmFy!", b"foobar"),  # characters outside the alphabet are skipped
        (b"Zm9vYmE", b"foo"),  # an incomplete last token is dropped
        (b"Zg=A", b"f\x00"),  # every "=" in a token costs a byte, wherever it is
    ],
)
def test_base64_as_thunderbird_reads_it(body: bytes, expected: bytes) -> None:
    assert transfer.decode_base64_tokens(body) == expected


def test_damaged_base64_is_read_each_way_clients_read_it() -> None:
    body = b"begin-base64 644 x.bin\r\n" + base64.encodebytes(b"payload!") + b"====\r\n"
    session = Session(LIMITS, len(body))
    decoded = transfer.transfer_readings(session, "base64", body, None)
    assert decoded[-1] == b"payload!" and len(decoded) == len(set(decoded)) > 1


def test_yenc_as_thunderbird_reads_it() -> None:
    assert ydecode_body(b"=ybegin line=128 size=3 name=a\r\n\x8b\x8c=}\r\n=yend size=3\r\n") == (
        b"ab\x13"
    )


def test_a_header_line_that_lost_its_fold_leaves_a_multipart_as_it_was() -> None:
    """Thunderbird reads past the broken line, but the parts are the same: one reading."""
    body = g.multipart(g.text(), g.attachment(b"data", "a.bin"), boundary="b")
    header, _, rest = body.partition(b"\r\n")
    broken = header + b"\r\nReferences: <a@example.org>,\r\n<b@example.org>\r\n" + rest
    assert decode(g.message(broken), LIMITS) == decode(g.message(body), LIMITS)
