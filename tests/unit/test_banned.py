"""Banned-file rules: the YAML form, amavisd-new's semantics, the scanner's findings."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from contentfilter.config import from_mapping
from contentfilter.errors import ConfigError
from contentfilter.mime import DecoderLimits, decode
from contentfilter.model import (
    ContentsCategory,
    DecodedMessage,
    Envelope,
    FailureAction,
    Part,
    Recipient,
    Scanner,
)
from contentfilter.rfc5322 import read_message
from scanners import Needs, build_scanners, load_settings
from scanners.banned import (
    DEBIAN_RULES,
    DEFAULT_RULES,
    TUTORIAL_RULES,
    BannedRule,
    BannedScanner,
    BannedSettings,
    explain,
    find_banned,
)
from tests.support import mimegen as g

PE = g.tiny_pe()
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
C = ContentsCategory


def scan(raw: bytes, rules: Sequence[BannedRule] = TUTORIAL_RULES) -> list[tuple[C, str]]:
    """(category, detail) of each finding of the banned scanner on this message."""
    scanner = BannedScanner("banned", BannedSettings(rules=tuple(rules)), DecoderLimits())
    envelope = Envelope("alice@sender.example", (Recipient("bob@recipient.example"),))
    result = asyncio.run(scanner.scan(read_message("1-01", "m1", envelope, raw)))
    assert result.scanner == "banned"
    return [(finding.category, finding.detail) for finding in result.findings]


def banned(raw: bytes, rules: Sequence[BannedRule] = TUTORIAL_RULES) -> list[str]:
    return [detail for category, detail in scan(raw, rules) if category is C.BANNED]


def rule(**kwargs: object) -> BannedRule:
    return BannedRule.from_config(kwargs)


# --- the cases of the issue, each a generated message -----------------------------------------


def test_exe_by_name_gives_amavisd_new_reply_text() -> None:
    raw = g.with_attachments(g.attachment(PE, "invoice.exe"))
    assert scan(raw) == [(C.BANNED, "application/octet-stream,.exe,.exe-ms,invoice.exe")]
    assert banned(raw, DEBIAN_RULES) == ["application/octet-stream,.exe,.exe-ms,invoice.exe"]


def test_exe_name_is_enough_whatever_the_content() -> None:
    raw = g.with_attachments(g.attachment(b"plain words\r\n", "INVOICE.EXE", "text/plain"))
    assert banned(raw) == ["text/plain,.asc,INVOICE.EXE"]


@pytest.mark.parametrize(
    ("name", "reason_name"),
    [
        ("invoice.pdf.exe", "invoice.pdf.exe"),
        ("invoice.exe.", "invoice.exe."),  # Windows drops the trailing dot
        ("invoice.exe   ", "invoice.exe   "),
        ("photo.jpg            .scr", "photo.jpg ... .scr"),  # amavisd-new compacts the blanks
    ],
)
def test_double_extensions_and_windows_name_tricks(name: str, reason_name: str) -> None:
    raw = g.with_attachments(g.attachment(b"data", name))
    assert banned(raw) == [f"application/octet-stream,.asc,{reason_name}"]


def test_double_extension_rule_of_the_strict_set() -> None:
    raw = g.with_attachments(g.attachment(b"data", "Rechnung.pdf.com"))
    decoded = decode(raw, DecoderLimits())
    assert explain(decoded, DEBIAN_RULES)[-1] == (
        r"p003: BANNED by rules[0] {ban: '\.[^./]*\.(exe|vbs|pif|scr|bat|cmd|com|cpl|dll)\.?$', "
        "match: name} on 'Rechnung.pdf.com'"
    )


def test_rfc2231_name() -> None:
    disposition = "attachment; filename*0*=utf-8''%E2%82%AC%20rech; filename*1*=nung.exe"
    raw = g.with_attachments(g.attachment(PE, disposition=disposition, type_params=""))
    assert banned(raw) == ["application/octet-stream,.exe,.exe-ms,\u20ac rechnung.exe"]


def test_rfc2047_name_both_forms_in_the_reason() -> None:
    raw = g.with_attachments(g.attachment(b"data", "=?utf-8?B?UmVjaG51bmcuZXhl?="))
    assert banned(raw) == [
        "application/octet-stream,.asc,Rechnung.exe,=?utf-8?B?UmVjaG51bmcuZXhl?="
    ]


def test_pe_content_named_txt_is_banned_by_type() -> None:
    raw = g.with_attachments(g.attachment(PE, "report.txt", "text/plain"))
    assert banned(raw) == ["text/plain,.exe,.exe-ms,report.txt"]
    assert explain(decode(raw, DecoderLimits()), TUTORIAL_RULES)[-1].startswith(
        "p003: BANNED by rules[8] {ban: '^\\.(exe|lha|tnef|cab|dll)$', match: type} on '.exe'"
    )
    assert banned(raw, DEBIAN_RULES) == ["text/plain,.exe,.exe-ms,report.txt"]


def test_real_pe_bytes_named_txt() -> None:
    raw = g.with_attachments(g.attachment(g.CLAM_EXE.read_bytes(), "notes.txt"))
    assert banned(raw) == ["application/octet-stream,.exe,.exe-ms,notes.txt"]


def test_exe_in_zip_in_tar_gz_banned_when_strict_allowed_by_the_tutorial() -> None:
    archive = g.tar_gz({"docs/inner.zip": g.zip_archive({"setup.exe": PE})})
    raw = g.with_attachments(g.attachment(archive, "docs.tar.gz"))
    assert scan(raw) == []
    assert banned(raw, DEBIAN_RULES) == [".exe,.exe-ms,setup.exe"]
    found = find_banned(decode(raw, DecoderLimits()), DEBIAN_RULES)[0]
    assert found.path_description == (
        "P=p001,L=1,M=multipart/mixed"
        " | P=p003,L=1/2,M=application/octet-stream,T=gz,N=docs.tar.gz"
        " | P=p004,L=1/2/1,T=tar,N=docs.tar"
        " | P=p005,L=1/2/1/1,T=zip,N=docs/inner.zip"
        " | P=p006,L=1/2/1/1/1,T=exe,T=exe-ms,N=setup.exe"
    )


def test_encrypted_zip_is_unchecked() -> None:
    raw = g.with_attachments(g.attachment(g.encrypted_zip({"setup.exe": PE}), "secret.zip"))
    assert scan(raw) == [(C.UNCHECKED, "Encrypted archive member: p004 (setup.exe)")]
    # the names of encrypted members are still known: the strict set bans this one
    assert scan(raw, DEBIAN_RULES) == [
        (C.BANNED, "setup.exe,UNDECIPHERABLE"),
        (C.UNCHECKED, "Encrypted archive member: p004 (setup.exe)"),
    ]


def test_zip_bomb_is_unchecked() -> None:
    raw = g.with_attachments(g.attachment(g.zeros_zip(1024**3), "bomb.zip"))
    assert scan(raw) == [
        (C.UNCHECKED, "Member larger than max_member_size (104857600 bytes): p004 (zeros.bin)")
    ]


def test_nested_zip_bomb_is_unchecked() -> None:
    raw = g.with_attachments(g.attachment(g.nested_zip_bomb(), "42.zip"))
    assert [category for category, _ in scan(raw)] == [C.UNCHECKED]


def test_zip_with_50000_entries_is_unchecked() -> None:
    raw = g.with_attachments(g.attachment(g.many_entries_zip(50_000), "many.zip"))
    assert scan(raw) == [(C.UNCHECKED, "Maximum number of files (3000) exceeded: p003 (many.zip)")]


def test_mime_nested_500_levels_is_unchecked() -> None:
    assert scan(g.nested_multiparts(500)) == [
        (C.UNCHECKED, "Maximum MIME nesting depth (40) exceeded: p040")
    ]


def test_corrupt_base64_is_unchecked() -> None:
    entity = g.entity(
        ["Content-Type: application/pdf", "Content-Transfer-Encoding: base64"], b"JVBE*Ri0x\r\n"
    )
    assert scan(g.message(g.multipart(g.text(), entity))) == [
        (C.UNCHECKED, "Damaged base64 (1 characters outside the base64 alphabet): p003")
    ]


def test_missing_closing_boundary_is_unchecked_and_still_checked() -> None:
    raw = g.message(g.multipart(g.text(), g.attachment(PE, "run.exe"), close=False))
    assert scan(raw) == [
        (C.BANNED, "application/octet-stream,.exe,.exe-ms,run.exe"),
        (C.UNCHECKED, "MIME multipart without its closing boundary: p001"),
    ]


def test_banned_attachment_inside_an_attached_message() -> None:
    inner = g.with_attachments(g.attachment(PE, "payload.scr"))
    raw = g.with_attachments(g.rfc822(inner, "fwd.eml"))
    assert banned(raw) == ["application/octet-stream,.exe,.exe-ms,payload.scr"]


def test_tnef_with_an_exe() -> None:
    winmail = g.tnef([("Invoice 2025.exe", PE)])
    raw = g.with_attachments(g.attachment(winmail, "winmail.dat", "application/ms-tnef"))
    assert banned(raw) == [".exe,.exe-ms,Invoice 2025.exe,INVOICE .EXE"]


def test_tnef_is_banned_by_type_in_the_tutorial_set_even_when_harmless() -> None:
    winmail = g.tnef([("notes.txt", b"hello")])
    raw = g.with_attachments(g.attachment(winmail, "winmail.dat", "application/ms-tnef"))
    assert banned(raw) == [".asc,notes.txt,NOTES.TXT"]  # amavisd-new: path contains .tnef
    assert banned(raw, DEBIAN_RULES) == []


def test_message_partial_is_banned_by_mime_type() -> None:
    entity = g.entity(
        ['Content-Type: message/partial; id="x"; number=1; total=2'], b"From: a\r\n\r\nx\r\n"
    )
    assert banned(g.with_attachments(entity)) == ["message/partial"]


def test_clean_message() -> None:
    raw = g.with_attachments(g.attachment(b"%PDF-1.4\n%%EOF\n", "report.pdf", "application/pdf"))
    assert scan(raw) == []


# --- rule semantics --------------------------------------------------------------------------


def _path() -> tuple[Part, ...]:
    root = Part("p001", (1,), "multipart/mixed")
    archive = Part("p002", (1, 1), "application/zip", "zip", ("a.zip",), detected_types=("zip",))
    leaf = Part("p003", (1, 1, 1), None, "exe", ("run.exe",), detected_types=("exe", "exe-ms"))
    return root, archive, leaf


@pytest.mark.parametrize(
    ("spec", "matched"),
    [
        ({"ban": "^\\.zip$", "match": "type"}, ".zip"),  # scope path: containers count
        ({"ban": "^\\.zip$", "match": "type", "scope": "part"}, None),
        ({"ban": "^\\.zip$", "match": "type", "scope": "inside"}, ".zip"),
        ({"ban": "^\\.exe-ms$", "match": "type", "scope": "inside"}, None),
        ({"ban": "^\\.exe-ms$", "match": "type", "scope": "part"}, ".exe-ms"),
        ({"ban": "RUN\\.EXE$", "match": "name"}, "run.exe"),  # names ignore case
        ({"ban": "^\\.EXE$", "match": "type"}, None),  # types do not (.Z is not .z)
        ({"ban": "^APPLICATION/ZIP$", "match": "mime"}, "application/zip"),
        ({"ban": "^application/zip$", "match": "name"}, None),
        ({"ban": "^application/zip$"}, "application/zip"),  # any: amavisd-new's attributes
        ({"ban": "^\\.exe$"}, ".exe"),
        ({"ban": "x.exe$"}, None),
    ],
)
def test_what_a_rule_sees(spec: dict[str, str], matched: str | None) -> None:
    found = rule(**spec).first_match(_path())
    assert (found[1] if found else None) == matched


def test_first_matching_rule_wins() -> None:
    rules = [
        rule(allow="^\\.zip$", match="type", scope="inside"),
        rule(ban="\\.exe$", match="name"),
    ]
    decoded = DecodedMessage(Part("p001", (1,), "multipart/mixed", children=(_nested(),)))
    assert find_banned(decoded, rules) == []
    assert len(find_banned(decoded, rules[::-1])) == 1


def _nested() -> Part:
    _, archive, leaf = _path()
    return Part(
        archive.part_id,
        archive.level,
        archive.declared_type,
        archive.detected_type,
        archive.names,
        children=(leaf,),
        detected_types=archive.detected_types,
    )


def test_rule_comment_heads_the_reason_as_in_amavisd_new() -> None:
    rules = [rule(ban="(?# executable)\\.exe$", match="name")]
    assert banned(g.with_attachments(g.attachment(PE, "x.exe")), rules) == [
        "executable:application/octet-stream,.exe,.exe-ms,x.exe"
    ]


def test_undecipherable_rule_for_amavisd_new_regexes() -> None:
    raw = g.with_attachments(g.attachment(g.encrypted_zip({"a.txt": b"x"}), "a.zip"))
    assert banned(raw, [rule(ban="^UNDECIPHERABLE$")]) == ["a.txt,UNDECIPHERABLE"]


def test_explain_names_the_deciding_rule_for_every_leaf() -> None:
    archive = g.zip_archive({"run.exe": PE})
    raw = g.with_attachments(g.attachment(archive, "a.zip"), g.attachment(PE, "b.exe"))
    assert explain(decode(raw, DecoderLimits()), TUTORIAL_RULES) == [
        "p002: allowed, no rule matches",
        "p004: allowed by rules[5] {allow: '^\\.(zip|rar|arc|arj|zoo)$', match: type,"
        " scope: inside} on '.zip' of p003",
        "p005: BANNED by rules[6] {ban: '.\\.(ade|adp|app|bas|bat|chm|cmd|com|cpl|crt|emf|exe|fxp|"
        "grp|hlp|hta|inf|ins|isp|js|jse|lnk|mda|mdb|mde|mdw|mdt|mdz|msc|msi|msp|mst|ops|pcd|pif|"
        "prg|reg|scr|sct|shb|shs|vb|vbe|vbs|wmf|wsc|wsf|wsh)$', match: name} on 'b.exe'",
    ]


# --- configuration ---------------------------------------------------------------------------


def test_failing_banned_checks_tempfail_by_default() -> None:
    assert BannedSettings().on_failure is FailureAction.TEMPFAIL


def test_rules_from_yaml_forms() -> None:
    config = from_mapping(
        {
            "scanners": {
                "banned": {
                    "rules": [
                        {"ban": "^application/x-msmetafile$", "match": "mime"},
                        {"allow": "^\\.(zip|rar)$", "match": "type", "scope": "inside"},
                        "(?i)\\.exe$",
                    ]
                }
            }
        }
    )
    rules = load_settings(config.scanners)["banned"].rules  # type: ignore[attr-defined]
    assert rules == (
        BannedRule("^application/x-msmetafile$", True, "mime"),
        BannedRule("^\\.(zip|rar)$", False, "type", "inside"),
        BannedRule("(?i)\\.exe$", True, "any"),
    )
    assert [r.to_config() for r in rules] == [
        {"ban": "^application/x-msmetafile$", "match": "mime"},
        {"allow": "^\\.(zip|rar)$", "match": "type", "scope": "inside"},
        {"ban": "(?i)\\.exe$", "match": "any"},
    ]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [{"ban": "a"}, {"ban": "b"}, {"ban": "c"}, {"ban": "(unclosed", "match": "name"}],
            "scanners.banned.rules[3].ban: bad regular expression: missing ), unterminated"
            " subpattern at position 0 (got '(unclosed')",
        ),
        (
            [{"allow": "[z-a]"}],
            "scanners.banned.rules[0].allow: bad regular expression: bad character range z-a",
        ),
        (
            [{"ban": "a", "allow": "b"}],
            "scanners.banned.rules[0]: a rule needs exactly one of `ban` or `allow`",
        ),
        (
            [{"match": "name"}],
            "scanners.banned.rules[0]: a rule needs exactly one of `ban` or `allow`",
        ),
        (
            [{"ban": "a", "match": "filename"}],
            "scanners.banned.rules[0].match: must be one of name, type, mime, any",
        ),
        (
            [{"ban": "a", "scope": "inner"}],
            "scanners.banned.rules[0].scope: must be one of path, part, inside",
        ),
        ([{"ban": "a", "mach": "name"}], "scanners.banned.rules[0].mach: unknown key"),
        ([42], "scanners.banned.rules[0]: expected a mapping"),
    ],
)
def test_bad_rules_are_config_errors_naming_the_rule(rules: list[object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(from_mapping({"scanners": {"banned": {"rules": rules}}}).scanners)
    assert str(raised.value).startswith(message)


def test_decoder_limits_from_config() -> None:
    config = from_mapping({"decoder": {"max_files": 100, "max_depth": 5}})
    assert (config.decoder.max_files, config.decoder.max_depth) == (100, 5)
    with pytest.raises(ConfigError, match=r"^decoder: max_member_size must be at least 1024 bytes"):
        from_mapping({"decoder": {"max_member_size": 10}})
    with pytest.raises(ConfigError, match=r"^decoder\.max_fils: unknown key"):
        from_mapping({"decoder": {"max_fils": 10}})


# --- the scanner -----------------------------------------------------------------------------


def test_registered_and_created_from_config() -> None:
    config = from_mapping({"scanners": {"strict": {"type": "banned", "timeout": 5}}})
    [scanner] = build_scanners(config.scanners, Needs(config.decoder))
    assert isinstance(scanner, Scanner)
    assert (scanner.name, scanner.timeout, scanner.on_failure) == (
        "strict",
        5.0,
        FailureAction.TEMPFAIL,
    )
    assert scanner.needs_parts
    asyncio.run(scanner.close())


def test_scanner_uses_the_parts_the_pipeline_decoded() -> None:
    leaf = Part("p001", (1,), "application/x-msdownload", names=("x.bin",))
    decoded = DecodedMessage(leaf, problems=("something odd",))
    scanner = BannedScanner("banned", BannedSettings(rules=DEBIAN_RULES), DecoderLimits())
    envelope = Envelope("", (Recipient("bob@recipient.example"),))
    message = replace(read_message("1-01", "m1", envelope, b"not even a message"), parts=decoded)
    result = asyncio.run(scanner.scan(message))
    assert [(f.category, f.detail, f.scanner) for f in result.findings] == [
        (C.BANNED, "application/x-msdownload,x.bin", "banned"),
        (C.UNCHECKED, "something odd", "banned"),
    ]


# --- the samples ------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("banned-*.eml")), ids=lambda p: p.name)
def test_banned_samples_are_banned_by_the_default_rules(sample: Path) -> None:
    raw = sample.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert [category for category, _ in scan(raw, DEFAULT_RULES)] == [C.BANNED]
    assert [category for category, _ in scan(raw, TUTORIAL_RULES)] == [C.BANNED]


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("unchecked-*.eml")), ids=lambda p: p.name)
def test_unchecked_samples_are_unchecked(sample: Path) -> None:
    raw = sample.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert {category for category, _ in scan(raw)} == {C.UNCHECKED}
