"""Hostile input: every bomb ends as problems (UNCHECKED), never as an exception.

The outcome is asserted, not the time taken: benchmarks/bombs.py measures that.
Each bomb is built in memory by tests.support.mimegen without ever holding its
expanded size.
"""

from __future__ import annotations

import pytest

from contentfilter.mime import DecoderLimits, decode, format_tree
from contentfilter.model import DecodedMessage, Part
from tests.support import mimegen as g

LIMITS = DecoderLimits()
PE = g.tiny_pe()
GiB = 1024**3


def parts(decoded: DecodedMessage) -> list[Part]:
    return list(decoded.walk())


def test_one_gigabyte_of_zeros_in_a_zip() -> None:
    bomb = g.zeros_zip(GiB)
    decoded = decode(
        g.with_attachments(g.attachment(bomb, "bomb.zip"), g.attachment(PE, "x.exe")), LIMITS
    )
    assert decoded.problems == (
        "Member larger than max_member_size (104857600 bytes): p004 (zeros.bin)",
    )
    # the honest size in the zip stops it before any inflating; the rest is still seen
    assert [p.names for p in parts(decoded)][-1] == ("x.exe",)


def test_one_gigabyte_of_zeros_in_a_gzip_stops_while_streaming() -> None:
    bomb = g.zeros_gzip(GiB)
    decoded = decode(g.with_attachments(g.attachment(bomb, "data.gz")), LIMITS)
    assert decoded.problems == (
        "Member larger than max_member_size (104857600 bytes): p004 (data)",
    )


def test_gzip_bomb_stops_at_the_message_quota() -> None:
    raw = g.with_attachments(g.attachment(g.zeros_gzip(64 * 1024 * 1024), "data.gz"))
    quota = LIMITS.quota(len(raw))
    assert quota == len(raw) * 500 < 64 * 1024 * 1024
    assert decode(raw, LIMITS).problems == (
        f"Exceeded storage quota ({quota} bytes): p003 (data.gz)",
    )


def test_nested_zip_bomb_like_42_zip() -> None:
    bomb = g.nested_zip_bomb(levels=5, fanout=16)
    decoded = decode(g.with_attachments(g.attachment(bomb, "42.zip")), LIMITS)
    assert len(decoded.problems) == 1
    assert decoded.problems[0].startswith("Exceeded storage quota (")
    # members after the quota ran out are listed by name, unread (for banned checks)
    unread = [p for p in parts(decoded) if p.attributes == "U"]
    assert unread and all(p.size == 0 and p.names for p in unread)


def test_zip_with_50000_entries() -> None:
    archive = g.many_entries_zip(50_000)
    decoded = decode(g.with_attachments(g.attachment(archive, "many.zip")), LIMITS)
    assert decoded.problems == ("Maximum number of files (3000) exceeded: p003 (many.zip)",)
    assert len(parts(decoded)) == 3000


def test_mime_nested_500_levels() -> None:
    decoded = decode(g.nested_multiparts(500), LIMITS)
    assert decoded.problems == ("Maximum MIME nesting depth (40) exceeded: p040",)
    assert len(parts(decoded)) == 40  # the structure down to the limit is still there


def test_mime_nested_500_levels_with_many_lines() -> None:
    """The stdlib parser costs lines x depth: this one would take minutes to parse."""
    raw = g.nested_multiparts(500).replace(b"deep inside\r\n", b"x\r\n" * 200_000)
    assert decode(raw, LIMITS).problems == ("Maximum MIME nesting depth (40) exceeded: p040",)


def test_mime_nesting_just_within_the_limit_is_decoded() -> None:
    decoded = decode(g.nested_multiparts(39), LIMITS)
    assert decoded.problems == ()
    assert max(len(p.level) for p in parts(decoded)) == 40
    decoded = decode(g.nested_multiparts(40), LIMITS)
    assert decoded.problems == ("Maximum MIME nesting depth (40) exceeded: p040",)


def test_mime_nesting_limit_is_configurable() -> None:
    decoded = decode(g.nested_multiparts(12), DecoderLimits(max_mime_depth=10))
    assert decoded.problems == ("Maximum MIME nesting depth (10) exceeded: p010",)


def test_attached_messages_nested_1500_deep() -> None:
    inner = g.text("bottom\r\n")
    for _ in range(1500):
        inner = g.rfc822(g.message(inner))
    decoded = decode(g.message(inner), LIMITS)
    assert decoded.problems == ("Maximum MIME nesting depth (40) exceeded: p040",)


def test_attached_messages_nested_deeper_than_the_limit() -> None:
    inner = g.text("bottom\r\n")
    for _ in range(30):
        inner = g.rfc822(g.message(inner))
    decoded = decode(g.message(inner), DecoderLimits(max_mime_depth=20))
    assert decoded.problems[0].startswith("Maximum MIME nesting depth (20) exceeded: p0")


def test_many_mime_parts() -> None:
    raw = g.message(g.multipart(*(g.text(f"{i}\r\n") for i in range(5000))))
    decoded = decode(raw, LIMITS)
    assert decoded.problems == ("Maximum number of files (3000) exceeded: p001",)


def test_quota_shared_by_everything_in_the_message() -> None:
    members = {f"{i}.bin": bytes(3 * 1024 * 1024) for i in range(10)} | {"last.exe": PE}
    raw = g.with_attachments(g.attachment(g.zip_archive(members), "z.zip"))
    decoded = decode(raw, LIMITS)
    assert decoded.problems == (
        f"Exceeded storage quota ({LIMITS.quota(len(raw))} bytes): p003 (z.zip)",
    )
    last = [p for p in parts(decoded) if p.names == ("last.exe",)]
    assert last and last[0].attributes == "U"  # named, not read


def test_binhex_run_length_bomb() -> None:
    decoded = decode(g.with_attachments(g.attachment(g.binhex_rle_bomb(), "x.hqx")), LIMITS)
    assert decoded.problems == (
        "BinHex could not be decoded (expands beyond the size limits): p003 (x.hqx)",
    )


@pytest.mark.parametrize("cut", [100, 500, 1000, 1500])
def test_truncated_messages(cut: int) -> None:
    raw = g.with_attachments(g.attachment(g.zip_archive({"x.exe": PE}), "x.zip"))[:cut]
    decoded = decode(raw, LIMITS)
    assert isinstance(decoded.problems, tuple)
    assert format_tree(decoded)
