"""The 44 files of Debian's clamav-testfiles, each attached to a message, through a real clamd.

Every one must come out VIRUS: ClamAV decodes the message itself (MIME, archives,
packers), so this checks that what we stream to clamd is the message intact. The
decoder runs on the same messages and must survive every one of them too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contentfilter.config import from_mapping
from contentfilter.mime import DecoderLimits, decode
from contentfilter.model import ContentsCategory, Envelope, Message, Recipient
from contentfilter.rfc5322 import read_message
from scanners import build_scanners
from tests.support import mimegen as g
from tests.support.daemons import Clamd

TESTFILES = sorted(g.CLAMAV_TESTFILES.iterdir())
# clam_cache_emax.tgz is 8 .tgz nested in each other: inside a message that is 1 + 16
# levels for clamd, past its default MaxRecursion of 17. The test clamd runs with
# `MaxRecursion 30` (README: set it on production clamd too).
VIRUS_CASES = TESTFILES


def test_all_44_testfiles_are_there() -> None:
    assert len(TESTFILES) == 44, "is Debian's clamav-testfiles package installed?"


def _message(path: Path) -> Message:
    raw = g.with_attachments(g.attachment(path.read_bytes(), path.name), subject=path.name)
    envelope = Envelope("alice@sender.example", (Recipient("bob@recipient.example"),))
    return read_message("1-01", path.name, envelope, raw)


@pytest.mark.parametrize("path", VIRUS_CASES, ids=lambda path: path.name)
async def test_testfile_attached_is_a_virus(path: Path, clamd: Clamd) -> None:
    config = from_mapping({"scanners": {"clamav": {"servers": [clamd.address]}}})
    [scanner] = build_scanners({"clamav": config.scanners["clamav"]})
    try:
        result = await scanner.scan(_message(path))
    finally:
        await scanner.close()
    categories = {finding.category for finding in result.findings}
    assert categories == {ContentsCategory.VIRUS}, result


@pytest.mark.parametrize("path", TESTFILES, ids=lambda path: path.name)
def test_testfile_attached_decodes(path: Path) -> None:
    decoded = decode(_message(path).raw, DecoderLimits())
    attached = decoded.root.children[1]
    assert attached.names == (path.name,)
    assert attached.detected_types  # typed by content, whatever it is
