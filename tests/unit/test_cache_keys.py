"""Each scanner's cache key covers what its verdict depends on, through the pipeline.

The same body under another top-level header is scanned again and gets its own
verdict; an identical message is served from the cache; a changed rule or
setting misses.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import pytest

from contentfilter import config
from contentfilter.cache import ResultCache, fingerprint, key
from contentfilter.decode import format_tree, workers
from contentfilter.mime import DecoderLimits, decode
from contentfilter.model import (
    ContentsCategory,
    DecodedMessage,
    Envelope,
    Message,
    Recipient,
    Scanner,
)
from contentfilter.pipeline import Pipeline
from contentfilter.rfc5322 import read_message
from scanners.banned import (
    DEBIAN_RULES,
    TUTORIAL_RULES,
    BannedRule,
    BannedScanner,
    BannedSettings,
    mime_view,
)
from scanners.clamav import ClamAVScanner, ClamAVSettings
from scanners.spamassassin import SpamAssassinScanner, SpamAssassinSettings
from tests.support import evasions
from tests.support import mimegen as g
from tests.unit.test_pipeline import FakeNextHop

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
DECODER_CASES = Path(__file__).resolve().parent / "decoder_cases"
PE = g.tiny_pe()


def mail(raw: bytes, sender: str = "alice@sender.example") -> Message:
    return read_message("1-01", "m1", Envelope(sender, (Recipient("bob@example.com"),)), raw)


def single_part(filename: str, received: str = "mx.example.org") -> bytes:
    """A message that is one base64 attachment: its name is in the top-level header."""
    encoded = base64.encodebytes(PE).replace(b"\n", b"\r\n")
    header = (
        f"Received: from {received}\r\n"
        "From: alice@sender.example\r\nTo: bob@example.com\r\nSubject: report\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: application/octet-stream; name="{filename}"\r\n'
        f'Content-Disposition: attachment; filename="{filename}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return header.encode() + encoded


def two_readings(boundary: str) -> bytes:
    """One body, two boundaries in it: the top-level header picks which parts exist."""
    encoded = base64.encodebytes(PE).replace(b"\n", b"\r\n")
    body = (
        b"--AAA\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--BBB\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="setup.exe"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--BBB--\r\n--AAA--\r\n"
    )
    header = (
        "From: alice@sender.example\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n"
    )
    return header.encode() + body


NAME_RULES = (BannedRule(r".\.exe$", match="name"),)


def banned_pipeline(
    cache: ResultCache,
    rules: Sequence[BannedRule] = NAME_RULES,
    limits: DecoderLimits | None = None,
) -> tuple[Pipeline, BannedScanner]:
    limits = limits or DecoderLimits()
    scanner = BannedScanner("banned", BannedSettings(rules=tuple(rules)), limits)
    cfg = config.from_mapping({"scanners": {}})
    return Pipeline(cfg, [scanner], FakeNextHop(), cache), scanner


async def banned_verdict(pipeline: Pipeline, raw: bytes) -> tuple[list[str], bool]:
    """(BANNED details, served from the cache) for one message through the pipeline."""
    outcome = await pipeline.handle(mail(raw))
    [result] = outcome.results
    details = [f.detail for f in result.findings if f.category is ContentsCategory.BANNED]
    return details, result.cached


@pytest.fixture
def cache() -> ResultCache:
    return ResultCache(ttl=600, max_entries=100)


async def test_same_body_named_exe_after_pdf_is_scanned_again_and_banned(
    cache: ResultCache,
) -> None:
    pipeline, _ = banned_pipeline(cache)
    assert await banned_verdict(pipeline, single_part("report.pdf")) == ([], False)
    details, cached = await banned_verdict(pipeline, single_part("report.exe"))
    assert not cached
    assert details and "report.exe" in details[0]


async def test_same_body_under_another_boundary_gets_its_own_verdict(cache: ResultCache) -> None:
    pipeline, _ = banned_pipeline(cache)
    assert await banned_verdict(pipeline, two_readings("AAA")) == ([], False)
    details, cached = await banned_verdict(pipeline, two_readings("BBB"))
    assert (bool(details), cached) == (True, False)
    # and the other way round: a banned verdict is not served to the clean reading
    pipeline, _ = banned_pipeline(ResultCache(ttl=600, max_entries=100))
    assert (await banned_verdict(pipeline, two_readings("BBB")))[0]
    assert await banned_verdict(pipeline, two_readings("AAA")) == ([], False)


async def test_an_identical_message_is_served_from_the_cache(cache: ResultCache) -> None:
    pipeline, _ = banned_pipeline(cache)
    first = await banned_verdict(pipeline, single_part("report.exe"))
    again = await banned_verdict(pipeline, single_part("report.exe"))
    assert again == (first[0], True)


async def test_fields_the_decoder_never_reads_share_the_verdict(cache: ResultCache) -> None:
    pipeline, _ = banned_pipeline(cache)
    first = await banned_verdict(pipeline, single_part("report.exe", received="a.example"))
    other = await banned_verdict(pipeline, single_part("report.exe", received="b.example"))
    assert first[0] and other == (first[0], True)


@pytest.mark.parametrize(
    ("rules", "limits"),
    [
        (TUTORIAL_RULES, None),  # a changed rule set
        (NAME_RULES, DecoderLimits(max_depth=3)),  # a changed decoder limit
    ],
)
async def test_a_changed_rule_or_limit_misses(
    cache: ResultCache, rules: Sequence[BannedRule], limits: DecoderLimits | None
) -> None:
    old, _ = banned_pipeline(cache)
    await banned_verdict(old, single_part("report.pdf"))
    new, _ = banned_pipeline(cache, rules, limits)
    assert (await banned_verdict(new, single_part("report.pdf")))[1] is False


async def test_a_banned_verdict_does_not_survive_a_rule_that_allows_it(
    cache: ResultCache,
) -> None:
    strict, _ = banned_pipeline(cache)
    assert (await banned_verdict(strict, single_part("report.exe")))[0]
    lenient, _ = banned_pipeline(cache, (BannedRule(r".\.pdf$", match="name"),))
    assert await banned_verdict(lenient, single_part("report.exe")) == ([], False)


# --- the keys themselves ------------------------------------------------------------------


def test_key_inputs_are_a_sequence_not_a_concatenation() -> None:
    assert key("ab", "c") != key("a", "bc")
    assert key(b"x") == key("x")
    assert fingerprint(DecoderLimits()) != fingerprint(DecoderLimits(max_files=10))


def clamav(**settings: object) -> ClamAVScanner:
    return ClamAVScanner("clamav", ClamAVSettings(**settings))  # type: ignore[arg-type]


RAW = b"From: a@example.org\r\nContent-Type: text/plain\r\n\r\nbody\r\n"


@pytest.mark.parametrize(
    ("other", "settings", "same"),
    [
        (RAW, {}, True),
        (b"Received: from x\r\n" + RAW, {}, False),  # clamd reads every byte
        (RAW.replace(b"text/plain", b"text/html"), {}, False),
        (RAW, {"max_size": 1000}, False),
        (RAW, {"servers": ("/run/other.ctl",)}, False),
    ],
)
def test_clamav_key_is_the_whole_message_and_its_settings(
    other: bytes, settings: dict[str, object], same: bool
) -> None:
    assert (clamav().cache_key(mail(RAW)) == clamav(**settings).cache_key(mail(other))) is same


@pytest.mark.parametrize(
    ("other", "sender", "settings", "same"),
    [
        (RAW, "a@example.org", {}, True),
        (RAW, "b@example.org", {}, False),  # spamd is handed Return-Path: <sender>
        (b"Received: from x\r\n" + RAW, "a@example.org", {}, False),
        (RAW, "a@example.org", {"user": "amavis"}, False),
    ],
)
def test_spamassassin_key_is_what_spamd_is_handed_and_the_settings(
    other: bytes, sender: str, settings: dict[str, object], same: bool
) -> None:
    def spamd(**kwargs: object) -> SpamAssassinScanner:
        return SpamAssassinScanner("spamassassin", SpamAssassinSettings(**kwargs))  # type: ignore[arg-type]

    first = spamd().cache_key(mail(RAW, "a@example.org"))
    assert (first == spamd(**settings).cache_key(mail(other, sender))) is same


def test_spamassassin_does_not_key_what_it_does_not_scan() -> None:
    scanner = SpamAssassinScanner("spamassassin", SpamAssassinSettings(max_size=10))
    assert scanner.cache_key(mail(RAW)) is None


# --- what the banned key reads of the header -------------------------------------------


@pytest.mark.parametrize(
    ("raw", "view"),
    [
        (b"To: b\r\nContent-Type: text/plain\r\n\r\nx", b"Content-Type: text/plain\r\n\r\nx"),
        # continuation lines go with their field, kept or dropped
        (
            b"Received: a\r\n b\r\nCONTENT-TYPE: multipart/mixed;\r\n\tboundary=x\r\n\r\n",
            b"CONTENT-TYPE: multipart/mixed;\r\n\tboundary=x\r\n\r\n",
        ),
        # duplicates and order stay; MIME-Version and every Content-* field stay
        (
            b"Content-Type: a/b\r\nX: 1\r\nMIME-Version: 1.0\r\nContent-Type: c/d\r\n"
            b"Content-Transfer-Encoding: base64\r\nContent-Disposition: inline\r\n\n",
            b"Content-Type: a/b\r\nMIME-Version: 1.0\r\nContent-Type: c/d\r\n"
            b"Content-Transfer-Encoding: base64\r\nContent-Disposition: inline\r\n\n",
        ),
        # a line that is no field starts the body for the decoder: kept, with all after it
        (b"To: b\r\nnot a field\r\nTo: c\r\n\r\nx", b"not a field\r\nTo: c\r\n\r\nx"),
        (b"To: b\r\nContent-Type : x/y\r\n\r\n", b"Content-Type : x/y\r\n\r\n"),
        (b" leading continuation\r\nTo: b\r\n\r\n", b" leading continuation\r\n\r\n"),
        # the body is kept byte for byte, header-like lines included
        (b"To: b\r\n\r\nTo: c\r\n", b"\r\nTo: c\r\n"),
        (b"", b""),
    ],
)
def test_mime_view(raw: bytes, view: bytes) -> None:
    assert mime_view(raw) == view


def eml_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.eml"))


@pytest.mark.parametrize("path", eml_files(), ids=lambda p: p.name)
def test_the_decoder_sees_the_same_in_the_mime_view(path: Path) -> None:
    """Guard for `mime_view`: if the decoder starts to read another field, this fails."""
    raw = path.read_bytes()
    limits = DecoderLimits()
    full, view = decode(raw, limits), decode(mime_view(raw), limits)
    assert (format_tree(view), view.problems) == (format_tree(full), full.problems)


def generated_mail() -> dict[str, bytes]:
    cases = {e.name: e.build() for e in [*evasions.ALL, *evasions.FILE_NAMES]}
    cases |= {p.name: p.read_bytes() for p in sorted(DECODER_CASES.glob("*.eml"))}
    return g.samples() | cases


def test_the_decoder_sees_the_same_in_the_mime_view_of_generated_mail() -> None:
    """The samples, every MIME evasion case and the decoder's regression cases."""
    limits = DecoderLimits()
    differ = []
    for name, raw in generated_mail().items():
        full, view = decode(raw, limits), decode(mime_view(raw), limits)
        if (format_tree(view), view.problems) != (format_tree(full), full.problems):
            differ.append(name)
    assert differ == []


def test_every_scanner_says_what_its_result_depends_on() -> None:
    banned = BannedScanner("banned", BannedSettings(rules=DEBIAN_RULES), DecoderLimits())
    for scanner in (banned, clamav()):
        assert isinstance(scanner, Scanner)
        assert scanner.cache_key(mail(RAW)) != scanner.cache_key(mail(RAW + b"x"))


async def test_a_verdict_from_a_decode_cut_short_is_not_cached(cache: ResultCache) -> None:
    """A worker crash or time limit is not a property of the message: the next delivery
    attempt decodes it again instead of inheriting the UNCHECKED verdict."""
    pipeline, _ = banned_pipeline(cache)
    real_decode = pipeline.decode
    crashes = [True]

    async def decode_crashing_once(message: Message, spool: object = None) -> DecodedMessage:
        if crashes.pop() if crashes else False:
            return workers.failed("Decoder crashed (signal 11)", None)
        return await real_decode(message)

    pipeline.decode = decode_crashing_once  # type: ignore[method-assign]
    first = await pipeline.handle(mail(single_part("report.exe")))
    assert [f.category for f in first.results[0].findings] == [ContentsCategory.UNCHECKED]
    details, cached = await banned_verdict(pipeline, single_part("report.exe"))
    assert details and "report.exe" in details[0]
    assert not cached
