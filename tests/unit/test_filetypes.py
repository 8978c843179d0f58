"""libmagic descriptions -> amavisd-new short types."""

from __future__ import annotations

import gzip
import io
import zipfile

import pytest

from contentfilter.filetypes import FileType, detect, short_types
from tests.support.mimegen import CLAM_EXE, CLAMAV_TESTFILES, tiny_pe, tnef


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", b"hello")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (tiny_pe(), ("exe", "exe-ms")),
        (tiny_pe(dll=True), ("exe", "dll")),
        (CLAM_EXE.read_bytes(), ("exe", "exe-ms")),
        (_zip(), ("zip",)),
        (gzip.compress(b"x" * 100), ("gz",)),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", ("pdf",)),
        (
            b"<!DOCTYPE html>\n<html><head><title>x</title></head><body>hi</body></html>\n",
            ("html",),
        ),
        (tnef([("a.txt", b"hello")]), ("tnef",)),
        (b"Just some words in a plain text file.\n", ("asc",)),
        (b"\x00\x01\x02\x03\xff\xfe", ("dat",)),
        (b"", ("empty",)),
    ],
    ids=["exe", "dll", "clam.exe", "zip", "gzip", "pdf", "html", "tnef", "text", "data", "empty"],
)
def test_detected_type(content: bytes, expected: tuple[str, ...]) -> None:
    assert detect(content).short_types == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clam.7z", "7z"),
        ("clam.cab", "cab"),
        ("clam.newc.cpio", "cpio"),
        ("clam.exe.bz2", "bz2"),
        ("clam.exe.binhex", "hqx"),
        ("clam.exe.mbox.uu", "uue"),
        ("clam.ole.doc", "cdf-ms"),
        ("clam.exe.rtf", "rtf"),
        ("clam.chm", "chm"),
        ("clam.arj", "arj"),
    ],
)
def test_detected_type_of_clamav_testfiles(name: str, expected: str) -> None:
    assert detect((CLAMAV_TESTFILES / name).read_bytes()).primary == expected


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        # amavisd-new 2.13's own examples and current libmagic wording side by side
        ("MS-DOS executable PE  for MS Windows (DLL) (GUI) Intel 80386 32-bit", ("exe", "dll")),
        ("PE32+ executable (DLL) (console) x86-64, for MS Windows", ("exe", "dll")),
        ("PE32 executable (GUI) Intel 80386 Mono/.Net assembly, for MS Windows", ("exe", "exe-ms")),
        ("MS-DOS executable, MZ for MS-DOS", ("exe", "exe-ms")),
        ("MS-DOS executable (built-in)", ("asc",)),
        ("ELF 64-bit LSB pie executable, x86-64, version 1 (SYSV)", ("exe", "exe-unix")),
        ("HTML document text", ("html",)),
        ("HTML document, UTF-8 Unicode text", ("html",)),
        ("XZ compressed data, checksum CRC64", ("xz",)),
        ("POSIX tar archive (GNU)", ("tar",)),
        ("ASCII cpio archive (SVR4 with no CRC)", ("cpio",)),
        ("Microsoft Cabinet archive data, many", ("cab",)),
        ("Windows metafile", ("wmf",)),
        ("JPEG image data, JFIF standard 1.01", ("image", "jpg")),
        ("UTF-8 Unicode text", ("txt",)),
        ("Unicode text, UTF-8 text", ("txt",)),
        ("something nobody has seen", ("dat",)),
    ],
)
def test_short_types(description: str, expected: tuple[str, ...]) -> None:
    assert short_types(description) == expected


def test_primary_is_the_first_short_type() -> None:
    assert FileType("x", ("exe", "exe-ms")).primary == "exe"
