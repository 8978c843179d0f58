"""The decoder: MIME structure, names, transfer encodings, archives, TNEF, BinHex, uuencode."""

from __future__ import annotations

import base64
import bz2
import random
from pathlib import Path

import pytest

from contentfilter.decode import describe
from contentfilter.mime import DecoderLimits, decode, format_tree
from contentfilter.model import DecodedMessage, Part
from tests.support import mimegen as g

LIMITS = DecoderLimits()
PE = g.tiny_pe()


def part_named(decoded: DecodedMessage, name: str) -> Part:
    found = [part for part in decoded.walk() if name in part.names]
    assert len(found) == 1, format_tree(decoded)
    return found[0]


def leaves(decoded: DecodedMessage) -> list[Part]:
    return [part for part in decoded.walk() if not part.children]


# --- structure ----------------------------------------------------------------------------


def test_single_part_message_is_the_root() -> None:
    decoded = decode(g.message(g.text("hello\r\n")), LIMITS)
    assert decoded.problems == ()
    root = decoded.root
    assert (root.part_id, root.level, root.declared_type, root.detected_type) == (
        "p001",
        (1,),
        "text/plain",
        "asc",
    )
    assert root.size == len(b"hello\r\n")


def test_part_ids_and_levels_follow_amavisd_new() -> None:
    raw = g.message(
        g.multipart(
            g.multipart(
                g.text(),
                g.text("<!DOCTYPE html>\r\n<html><body><p>hi</p></body></html>\r\n", "html"),
                subtype="alternative",
            ),
            g.attachment(PE, "run.exe"),
        )
    )
    decoded = decode(raw, LIMITS)
    described = [describe(part) for part in decoded.walk()]
    assert described == [
        "P=p001,L=1,M=multipart/mixed",
        "P=p002,L=1/1,M=multipart/alternative",
        "P=p003,L=1/1/1,M=text/plain,T=asc",
        "P=p004,L=1/1/2,M=text/html,T=html",
        "P=p005,L=1/2,M=application/octet-stream,T=exe,T=exe-ms,N=run.exe",
    ]
    exe = part_named(decoded, "run.exe")
    assert exe.size == len(PE) and len(exe.digest) == 64
    assert exe.file_type.startswith("PE32 executable")


def test_format_tree_indents_by_depth() -> None:
    decoded = decode(g.with_attachments(g.attachment(PE, "run.exe")), LIMITS)
    lines = format_tree(decoded)
    assert lines[0] == "P=p001,L=1,M=multipart/mixed"
    assert lines[2].startswith("  P=p003,L=1/2,M=application/octet-stream,T=exe,T=exe-ms,N=run.exe")
    assert "1024 bytes" in lines[2] and "PE32 executable" in lines[2]


def test_attached_message_is_decoded_recursively() -> None:
    inner = g.with_attachments(g.attachment(PE, "inner.exe"))
    decoded = decode(g.with_attachments(g.rfc822(inner, "forward.eml")), LIMITS)
    exe = part_named(decoded, "inner.exe")
    assert exe.level == (1, 2, 1, 2) and exe.detected_type == "exe"
    attached = part_named(decoded, "forward.eml")
    assert attached.declared_type == "message/rfc822"
    assert attached.children[0].declared_type == "multipart/mixed"


def test_parts_of_a_digest_are_messages_by_default() -> None:
    inner = b"From: a@example.org\r\nSubject: one\r\n\r\nhello\r\n"
    digest = g.multipart(b"\r\n" + inner, subtype="digest")  # a part without header fields
    decoded = decode(g.message(digest), LIMITS)
    assert [p.declared_type for p in decoded.walk()] == [
        "multipart/digest",
        "message/rfc822",
        "text/plain",
    ]


# --- names -------------------------------------------------------------------------------


def test_rfc2231_continuations_and_charset() -> None:
    disposition = "attachment; filename*0*=utf-8''%E2%82%AC%20rech; filename*1*=nung.exe"
    raw = g.with_attachments(g.attachment(PE, disposition=disposition, type_params=""))
    assert [p.names for p in leaves(decode(raw, LIMITS))][-1] == ("€ rechnung.exe",)


def test_rfc2047_name_keeps_both_forms_as_amavisd_new_does() -> None:
    encoded = "=?koi8-r?B?Zm90by5leGU=?="  # foto.exe
    raw = g.with_attachments(g.attachment(PE, encoded))
    assert part_named(decode(raw, LIMITS), "foto.exe").names == ("foto.exe", encoded)


def test_disposition_and_type_names_both_kept_when_they_differ() -> None:
    raw = g.with_attachments(
        g.attachment(PE, disposition='attachment; filename="a.txt"', type_params='; name="b.exe"')
    )
    assert leaves(decode(raw, LIMITS))[-1].names == ("a.txt", "b.exe")


def test_raw_8bit_name_is_read_as_utf8_or_latin1() -> None:
    utf8 = g.entity(['Content-Disposition: attachment; filename="r\u00e9sum\u00e9.exe"'], PE)
    latin1 = utf8.replace("r\u00e9sum\u00e9".encode(), "r\u00e9sum\u00e9".encode("latin-1"))
    for entity in (utf8, latin1):
        decoded = decode(g.message(g.multipart(g.text(), entity)), LIMITS)
        assert leaves(decoded)[-1].names == ("r\u00e9sum\u00e9.exe",)


def test_newlines_in_names_become_spaces() -> None:
    raw = g.with_attachments(g.attachment(PE, disposition='attachment; filename="a\tb.exe"'))
    assert leaves(decode(raw, LIMITS))[-1].names == ("a b.exe",)


# --- transfer encodings -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "8bit", "binary"])
def test_transfer_encodings(encoding: str) -> None:
    raw = g.with_attachments(g.attachment(PE, "x.exe", encoding=encoding))
    exe = part_named(decode(raw, LIMITS), "x.exe")
    assert exe.size == len(PE) and exe.detected_type == "exe"


def test_x_uuencode_transfer_encoding() -> None:
    body = b"begin 644 x.exe\r\n" + _uuencode(PE) + b"end\r\n"
    entity = g.entity(
        [
            'Content-Type: application/octet-stream; name="x.exe"',
            "Content-Transfer-Encoding: x-uuencode",
        ],
        body,
    )
    exe = part_named(decode(g.message(g.multipart(g.text(), entity)), LIMITS), "x.exe")
    assert exe.size == len(PE) and exe.detected_type == "exe"


def test_unknown_transfer_encoding_is_a_problem() -> None:
    raw = g.with_attachments(g.attachment(PE, "x.exe", encoding="x-gzip64"))
    decoded = decode(raw, LIMITS)
    assert decoded.problems == ("Unknown Content-Transfer-Encoding 'x-gzip64': p003 (x.exe)",)


def test_corrupt_base64_is_a_problem() -> None:
    body = base64.encodebytes(PE)[:200] + b"!!**not base64**!!\r\n" + base64.encodebytes(PE)[200:]
    entity = g.entity(
        [
            'Content-Type: application/octet-stream; name="x.exe"',
            "Content-Transfer-Encoding: base64",
        ],
        body,
    )
    decoded = decode(g.message(g.multipart(g.text(), entity)), LIMITS)
    assert decoded.problems == (
        "Damaged base64 (8 characters outside the base64 alphabet): p003 (x.exe)",
    )


def test_truncated_base64_is_a_problem() -> None:
    entity = g.entity(
        ["Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64"], b"QUJDR"
    )
    decoded = decode(g.message(g.multipart(g.text(), entity)), LIMITS)
    assert decoded.problems == ("Damaged base64 (truncated data): p003",)


def test_base64_chunks_encoded_separately_are_all_decoded() -> None:
    body = base64.b64encode(PE[:500]) + b"\r\n" + base64.b64encode(PE[500:]) + b"\r\n"
    entity = g.entity(
        ["Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64"], body
    )
    decoded = decode(g.message(g.multipart(g.text(), entity)), LIMITS)
    assert decoded.problems == () and leaves(decoded)[-1].size == len(PE)


# --- damaged structure --------------------------------------------------------------------


def test_missing_closing_boundary_is_a_problem_but_parts_are_still_seen() -> None:
    raw = g.message(g.multipart(g.text(), g.attachment(PE, "x.exe"), close=False))
    decoded = decode(raw, LIMITS)
    assert decoded.problems == ("MIME multipart without its closing boundary: p001",)
    assert part_named(decoded, "x.exe").detected_type == "exe"


def test_boundary_that_never_occurs_is_a_problem() -> None:
    entity = g.entity(['Content-Type: multipart/mixed; boundary="nowhere"'], b"just text\r\n")
    assert decode(g.message(entity), LIMITS).problems == (
        "MIME multipart whose boundary never occurs: p001",
    )


def test_encrypted_mime_part_is_a_problem() -> None:
    entity = g.entity(
        ['Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"'],
        b"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b--\r\n",
    )
    decoded = decode(g.message(entity), LIMITS)
    assert "Encrypted MIME part: p001" in decoded.problems
    assert "U" in decoded.root.attributes


# --- text encodings inside parts ------------------------------------------------------------


def test_inline_uuencode_in_a_text_body() -> None:
    body = (
        "See the file:\r\n\r\nbegin 644 tool.exe\r\n"
        + _uuencode(PE).decode()
        + "end\r\n\r\nBye\r\n"
    )
    decoded = decode(g.message(g.text(body)), LIMITS)
    exe = part_named(decoded, "tool.exe")
    assert exe.level == (1, 1) and exe.size == len(PE) and exe.detected_type == "exe"


def test_uuencode_without_end_line_is_a_problem() -> None:
    body = "begin 644 tool.exe\r\n" + _uuencode(PE).decode()
    decoded = decode(g.message(g.text(body)), LIMITS)
    assert decoded.problems == ("uuencoded file without an end line: p001",)
    assert part_named(decoded, "tool.exe").detected_type == "exe"


def test_binhex_attachment() -> None:
    binhex = (g.CLAMAV_TESTFILES / "clam.exe.binhex").read_bytes()
    decoded = decode(g.with_attachments(g.attachment(binhex, "clam.hqx")), LIMITS)
    exe = part_named(decoded, "clam.exe")
    assert exe.detected_types == ("exe", "exe-ms") and exe.size == 544
    assert part_named(decoded, "clam.hqx").detected_type == "hqx"


def test_damaged_binhex_is_a_problem() -> None:
    binhex = (g.CLAMAV_TESTFILES / "clam.exe.binhex").read_bytes().replace(b"J!!!!!", b"J!!!#!", 1)
    decoded = decode(g.with_attachments(g.attachment(binhex, "clam.hqx")), LIMITS)
    assert decoded.problems == ("BinHex could not be decoded (checksum mismatch): p003 (clam.hqx)",)


# --- TNEF ------------------------------------------------------------------------------------


def test_tnef_attachments_with_long_and_short_names() -> None:
    winmail = g.tnef([("Quarterly invoice.exe", PE), ("notes.txt", b"hello")])
    decoded = decode(
        g.with_attachments(g.attachment(winmail, "winmail.dat", "application/ms-tnef")), LIMITS
    )
    assert decoded.problems == ()
    exe = part_named(decoded, "Quarterly invoice.exe")
    assert exe.names == ("Quarterly invoice.exe", "QUARTERL.EXE")
    assert exe.detected_type == "exe" and exe.level == (1, 2, 1)
    assert part_named(decoded, "winmail.dat").detected_type == "tnef"


def test_real_tnef_file() -> None:
    winmail = (g.CLAMAV_TESTFILES / "clam.tnef").read_bytes()
    decoded = decode(g.with_attachments(g.attachment(winmail, "winmail.dat")), LIMITS)
    assert decoded.problems == ()
    assert part_named(decoded, "clam.exe").detected_type == "exe"


def test_truncated_tnef_is_a_problem_and_keeps_what_was_read() -> None:
    winmail = g.tnef([("a.exe", PE)]) + b"\x02\x0f\x80\x06\x00\xff\xff\x00\x00tail"
    decoded = decode(g.with_attachments(g.attachment(winmail, "winmail.dat")), LIMITS)
    assert decoded.problems == (
        "TNEF could not be decoded (truncated attribute): p003 (winmail.dat)",
    )
    assert part_named(decoded, "a.exe").detected_type == "exe"


def test_tnef_property_count_is_not_trusted() -> None:
    """tnefparse loops four billion times on this; we refuse it at once."""
    hostile = bytes.fromhex("ffffffff") + bytes(16)
    winmail = g.tnef([("a.exe", PE)], long_names=False)
    winmail += g._tnef_attribute(2, 0x00069005, hostile)
    decoded = decode(g.with_attachments(g.attachment(winmail, "winmail.dat")), LIMITS)
    assert decoded.problems == (
        "TNEF could not be decoded (property count 4294967295 larger than its data):"
        " p003 (winmail.dat)",
    )


# --- archives --------------------------------------------------------------------------------


def test_zip_members_are_parts() -> None:
    archive = g.zip_archive({"docs/readme.txt": b"read me\n", "docs/run.exe": PE})
    decoded = decode(g.with_attachments(g.attachment(archive, "docs.zip")), LIMITS)
    assert [describe(p) for p in part_named(decoded, "docs.zip").children] == [
        "P=p004,L=1/2/1,T=asc,N=docs/readme.txt",
        "P=p005,L=1/2/2,T=exe,T=exe-ms,N=docs/run.exe",
    ]


def test_tar_gz_decodes_in_two_steps_as_amavisd_new() -> None:
    archive = g.tar_gz({"inner.zip": g.zip_archive({"x.exe": PE})})
    decoded = decode(g.with_attachments(g.attachment(archive, "stuff.tar.gz")), LIMITS)
    assert [describe(p).split(",N=")[0] for p in decoded.walk()][2:] == [
        "P=p003,L=1/2,M=application/octet-stream,T=gz",
        "P=p004,L=1/2/1,T=tar",
        "P=p005,L=1/2/1/1,T=zip",
        "P=p006,L=1/2/1/1/1,T=exe,T=exe-ms",
    ]
    assert part_named(decoded, "stuff.tar").detected_type == "tar"


def test_compressed_single_file_is_named_after_its_suffix() -> None:
    decoded = decode(g.with_attachments(g.attachment(bz2.compress(PE), "setup.exe.bz2")), LIMITS)
    assert part_named(decoded, "setup.exe").detected_type == "exe"


@pytest.mark.parametrize(
    "name", ["clam.7z", "clam.cab", "clam.bin-be.cpio", "clam.newc.cpio", "clam.zip"]
)
def test_archive_formats_of_the_clamav_testfiles(name: str) -> None:
    data = (g.CLAMAV_TESTFILES / name).read_bytes()
    decoded = decode(g.with_attachments(g.attachment(data, name)), LIMITS)
    assert decoded.problems == ()
    assert [p.detected_types for p in leaves(decoded)][-1] == ("exe", "exe-ms")


def test_unsupported_compression_method_is_a_problem() -> None:
    data = (g.CLAMAV_TESTFILES / "clam.d64.zip").read_bytes()
    decoded = decode(g.with_attachments(g.attachment(data, "clam.zip")), LIMITS)
    assert len(decoded.problems) == 2
    assert decoded.problems[0].startswith("Archive member could not be decoded (Unsupported ZIP")
    assert decoded.problems[1] == "Archive not read past a damaged member: p003 (clam.zip)"
    assert part_named(decoded, "clam.exe").attributes == "U"


def test_encrypted_zip_is_a_problem_but_its_names_are_known() -> None:
    archive = g.encrypted_zip({"secret.exe": PE, "readme.txt": b"hi"})
    decoded = decode(g.with_attachments(g.attachment(archive, "secret.zip")), LIMITS)
    assert decoded.problems == (
        "Encrypted archive member: p004 (secret.exe)",
        "Encrypted archive member: p005 (readme.txt)",
    )
    assert part_named(decoded, "secret.exe").attributes == "UC"


def test_corrupt_archive_is_a_problem() -> None:
    text = bytes(random.Random(1).choice(b"abcdefgh ") for _ in range(5000))
    archive = g.zip_archive({"a.txt": text, "b.exe": PE})
    damaged = archive[:100] + b"\xff" * 50 + archive[150:]  # inside a.txt's deflate data
    decoded = decode(g.with_attachments(g.attachment(damaged, "broken.zip")), LIMITS)
    assert decoded.problems == (
        "Archive member could not be decoded (ZIP decompression failed (-3)): p005 (b.exe)",
        "Archive not read past a damaged member: p003 (broken.zip)",
    )


def test_archives_nested_beyond_max_depth() -> None:
    data = PE
    for level in range(6):
        data = g.zip_archive({f"level{level}.zip" if level else "x.exe": data})
    decoded = decode(
        g.with_attachments(g.attachment(data, "outer.zip")), DecoderLimits(max_depth=5)
    )
    assert decoded.problems == ("Maximum decoding depth (5) exceeded: p007 (level2.zip)",)


# --- the private spool directory ------------------------------------------------------------


def test_large_members_spool_to_an_unnamed_file_and_leave_nothing_behind(tmp_path: Path) -> None:
    inner = g.zip_archive({"big.bin": bytes(20 * 1024 * 1024), "x.exe": PE})
    outer = g.zip_archive({"inner.zip": inner + bytes(10 * 1024 * 1024)})  # > 8 MiB: spooled
    decoded = decode(
        g.with_attachments(g.attachment(outer, "outer.zip")),
        DecoderLimits(min_total_bytes=100 * 2**20, temp_directory=str(tmp_path)),
    )
    assert decoded.problems == ()
    assert part_named(decoded, "x.exe").detected_type == "exe"
    assert list(tmp_path.iterdir()) == []


def _uuencode(data: bytes) -> bytes:
    import binascii

    lines = [binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45)]
    return b"".join(line.replace(b"\n", b"\r\n") for line in lines) + b"`\r\n"
