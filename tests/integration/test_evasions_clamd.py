"""The real clamd sees the EICAR that mail hides where clients and strict parsers disagree.

Each message of `tests/support/evasions.py` is decoded into a spool directory
and handed to the ClamAV scanner with its extracted files, as the pipeline
does. For ten of them the suite's clamd (1.0), given only the raw message,
finds nothing: cte-folded-twice, base64-padding-inside, base64-begin-line,
qp-soft-break-blanks, yenc, boundary-two-fields-clients-last,
boundary-two-parameters, boundary-rfc2231-and-plain, boundary-reused-by-inner,
multipart-odd-type.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from contentfilter.mime import DecoderLimits, decode
from contentfilter.model import ContentsCategory, Envelope, Recipient
from contentfilter.rfc5322 import read_message
from scanners.clamav import ClamAVScanner, ClamAVSettings
from tests.support import evasions
from tests.support.daemons import Clamd


@pytest.mark.parametrize("case", evasions.ALL, ids=str)
async def test_clamd_finds_the_hidden_eicar(
    case: evasions.Evasion, clamd: Clamd, tmp_path: Path
) -> None:
    raw = case.build()
    parts = decode(raw, DecoderLimits(), str(tmp_path))
    envelope = Envelope("alice@sender.example", (Recipient("bob@recipient.example"),))
    scanner = ClamAVScanner("clamav", ClamAVSettings(servers=(str(clamd.socket_path),)))
    result = await scanner.scan(replace(read_message("1-01", "m1", envelope, raw), parts=parts))
    found = [(finding.category, finding.detail) for finding in result.findings]
    assert found == [(ContentsCategory.VIRUS, "Eicar-Test-Signature.UNOFFICIAL")]
