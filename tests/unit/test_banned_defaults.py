"""The banned-file presets as tables: what each bans, what each lets through.

`default` is Debian 12's amavisd-new `$banned_filename_re` plus today's malware
carriers; `debian` is Debian's alone; `tutorial` is the classic tutorial's.
"""

from __future__ import annotations

import asyncio

import pytest

from contentfilter.config import from_mapping
from contentfilter.errors import ConfigError
from contentfilter.mime import DecoderLimits
from contentfilter.model import ContentsCategory, Envelope, Recipient
from contentfilter.rfc5322 import read_message
from scanners import load_settings
from scanners.banned import (
    DEBIAN_RULES,
    DEFAULT_RULES,
    PRESETS,
    TUTORIAL_RULES,
    BannedRule,
    BannedScanner,
    BannedSettings,
)
from tests.support import mimegen as g

PE = g.tiny_pe()
TEXT = b"just some text\r\n"
# the first bytes of a Windows shortcut (MS-SHLLINK: header size 0x4C and the link CLSID)
LNK = bytes.fromhex("4c0000000114020000000000c000000000000046") + bytes(60)


def is_banned(raw: bytes, preset: str) -> bool:
    settings = BannedSettings(preset=preset)  # type: ignore[arg-type]
    scanner = BannedScanner("banned", settings, DecoderLimits())
    envelope = Envelope("alice@sender.example", (Recipient("bob@recipient.example"),))
    result = asyncio.run(scanner.scan(read_message("1-01", "m1", envelope, raw)))
    return any(f.category is ContentsCategory.BANNED for f in result.findings)


def attached(data: bytes, name: str, content_type: str = "application/octet-stream") -> bytes:
    return g.with_attachments(g.attachment(data, name, content_type))


def zipped(data: bytes, name: str) -> bytes:
    return attached(g.zip_archive({name: data}), "files.zip", "application/zip")


def fragment(content_type: str) -> bytes:
    return g.with_attachments(g.entity([f"Content-Type: {content_type}"], b"From: a\r\n\r\nx\r\n"))


def tnef_with(name: str, data: bytes) -> bytes:
    return attached(g.tnef([(name, data)]), "winmail.dat", "application/ms-tnef")


# (message, banned by default, by debian, by tutorial)
CASES = {
    "invoice.exe": (attached(PE, "invoice.exe"), True, True, True),
    "program named .txt": (attached(PE, "report.txt", "text/plain"), True, True, True),
    "exe inside a zip": (zipped(PE, "setup.exe"), True, True, False),
    "exe inside a tar.gz": (
        attached(g.tar_gz({"setup.exe": PE}), "files.tar.gz", "application/gzip"),
        True,
        True,
        False,
    ),
    "double extension": (attached(PE, "invoice.pdf.scr"), True, True, True),
    "TNEF with a text file": (tnef_with("notes.txt", TEXT), False, False, True),
    "TNEF with an exe": (tnef_with("setup.exe", PE), True, True, True),
    "message/partial": (fragment('message/partial; id="x"; number=1; total=2'), False, False, True),
    "message/external-body": (
        fragment('message/external-body; access-type="URL"; URL="http://example.org/x"'),
        False,
        False,
        True,
    ),
    "shortcut named .pdf": (attached(LNK, "document.pdf"), True, False, False),
    "report.pdf": (
        attached(b"%PDF-1.4\n%%EOF\n", "report.pdf", "application/pdf"),
        False,
        False,
        False,
    ),
    "letter.docx": (zipped(TEXT, "letter.docx"), False, False, False),
    "sheet.xlsx": (attached(TEXT, "sheet.xlsx"), False, False, False),
    "photo.jpg in a zip": (
        zipped(b"\xff\xd8\xff\xe0" + bytes(40), "photo.jpg"),
        False,
        False,
        False,
    ),
    "readme.txt in a zip": (zipped(TEXT, "readme.txt"), False, False, False),
    "notes.json": (attached(TEXT, "notes.json"), False, False, False),
    "plain text mail": (g.message(g.text()), False, False, False),
}


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("preset", ["default", "debian", "tutorial"])
def test_what_each_preset_bans(case: str, preset: str) -> None:
    raw, *expected = CASES[case]
    column = ["default", "debian", "tutorial"].index(preset)
    assert is_banned(raw, preset) is expected[column]


ADDED = [
    *["js", "jse", "vbe", "wsf", "wsh", "wsc", "hta", "sct", "ps1"],  # scripts
    *["iso", "img", "vhd", "vhdx"],  # disk images
    *["one", "onepkg", "lnk"],  # OneNote, shortcuts
    *["docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "potm", "ppam", "ppsm", "sldm", "xll"],
    *["msi", "msp", "msix", "appx", "appinstaller", "chm", "reg"],
]


@pytest.mark.parametrize("extension", ADDED)
@pytest.mark.parametrize("shape", ["attached", "in a zip"])
def test_the_added_carriers_are_banned_by_default_not_by_debian(extension: str, shape: str) -> None:
    name = f"Invoice 2026.{extension.upper() if shape == 'in a zip' else extension}"
    raw = attached(TEXT, name) if shape == "attached" else zipped(TEXT, name)
    assert (is_banned(raw, "default"), is_banned(raw, "debian")) == (True, False)


@pytest.mark.parametrize("name", ["invoice.json", "photo.images", "phone.jsx", "x.one.txt", "js"])
def test_the_added_rules_look_at_the_whole_extension(name: str) -> None:
    assert not is_banned(attached(TEXT, name), "default")


# --- choosing a preset -------------------------------------------------------------------


def test_the_default_is_debian_then_the_additions() -> None:
    assert BannedSettings().rule_table == DEFAULT_RULES
    assert DEFAULT_RULES[: len(DEBIAN_RULES)] == DEBIAN_RULES
    assert not any(not rule.banned for rule in DEFAULT_RULES)  # no allow: archives are opened
    assert len(DEBIAN_RULES) == 5 and len(TUTORIAL_RULES) == 9


@pytest.mark.parametrize(
    ("section", "rules"),
    [
        ({}, DEFAULT_RULES),
        ({"preset": "debian"}, DEBIAN_RULES),
        ({"preset": "tutorial"}, TUTORIAL_RULES),
        ({"rules": ["^x$"]}, (BannedRule("^x$"),)),
        ({"rules": []}, ()),  # no rules: nothing is banned
    ],
)
def test_preset_or_rules_from_the_config(section: dict[str, object], rules: object) -> None:
    loaded = load_settings(from_mapping({"scanners": {"banned": section}}).scanners)
    assert loaded["banned"].rule_table == rules  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("section", "key", "reason"),
    [
        ({"preset": "strict"}, "scanners.banned.preset", "must be one of"),
        ({"preset": "debian", "rules": []}, "scanners.banned", "either `preset` or `rules`"),
    ],
)
def test_bad_preset_choices_are_config_errors(
    section: dict[str, object], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(from_mapping({"scanners": {"banned": section}}).scanners)
    assert caught.value.key == key and reason in str(caught.value)


def test_every_preset_is_listed() -> None:
    assert set(PRESETS) == {"default", "debian", "tutorial"}
