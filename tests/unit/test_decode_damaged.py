"""Damaged input that once crashed or hung the decoder, kept as regression cases.

Each file in `decoder_cases/` is a whole message. They are decoded in a child
process so that a crash fails the test instead of killing the test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "decoder_cases"

_DECODE_IN_CHILD = """
import json, sys
from contentfilter.mime import DecoderLimits, decode
decoded = decode(open(sys.argv[1], "rb").read(), DecoderLimits())
print(json.dumps(list(decoded.problems)))
"""


def decode_in_child(path: Path) -> list[str]:
    child = subprocess.run(
        [sys.executable, "-c", _DECODE_IN_CHILD, str(path)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, (child.returncode, child.stderr.decode(errors="replace"))
    problems: list[str] = json.loads(child.stdout)
    return problems


def test_damaged_cab_member_stops_the_archive_and_makes_the_message_unchecked() -> None:
    # clam.cab with two bytes changed: reading its member fails with "Invalid CFDATA",
    # after which libarchive 3.6.2 segfaults if asked for the next header.
    problems = decode_in_child(CASES / "cab-invalid-cfdata.eml")
    assert problems == [
        "Archive member could not be decoded (Invalid CFDATA): p005 (clam.exe)",
        "Archive not read past a damaged member: p004 (setup.cab)",
    ]


@pytest.mark.parametrize("case", sorted(CASES.iterdir()), ids=lambda path: path.name)
def test_regression_case_decodes_without_crashing(case: Path) -> None:
    problems = decode_in_child(case)
    assert all(isinstance(problem, str) for problem in problems)
