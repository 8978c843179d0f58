"""amavisd-new's bad-header checks: findings in the BAD_HEADER contents category.

The checks of amavisd-new's check_header_validity, in its order of minor categories:
8-bit data, control characters, whitespace-only folded lines, over-long lines, field
syntax, missing required fields, duplicate fields (RFC 5322 sections 2.2 and 3.6).
The default destiny of BAD_HEADER is PASS: the copy gets an X-Amavis-Alert line.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from contentfilter.model import ContentsCategory, FailureAction, Finding, Message, ScanResult
from scanners.base import ScannerSettings

FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
MAX_LINE = 998  # RFC 5322 section 2.1.1, CRLF excluded
CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
EIGHT_BIT = re.compile(rb"[\x80-\xff]")
# RFC 5322 section 3.6: fields that may occur at most once, and those required.
SINGLE = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "subject",
    "message-id",
    "date",
    "in-reply-to",
    "references",
)
REQUIRED = ("from", "date")


@dataclass(frozen=True)
class HeaderCheckSettings(ScannerSettings):
    """`scanners.bad_header`: which checks run (all on, as in amavisd-new)."""

    on_failure: FailureAction = FailureAction.PASS
    allow_8bit_with_smtputf8: bool = True  # RFC 6532: UTF-8 headers are fine under SMTPUTF8
    check_missing: bool = True
    check_duplicates: bool = True


def _lines(header: bytes) -> Iterator[bytes]:
    for line in header.split(b"\r\n"):
        if line:
            yield line


def problems(
    header: bytes, smtputf8: bool = False, settings: HeaderCheckSettings | None = None
) -> list[str]:
    """Every bad-header problem of a header section, amavisd-new's wording."""
    settings = settings or HeaderCheckSettings()
    found: list[str] = []
    names: list[str] = []
    field = ""
    for line in _lines(header):
        if line[:1] in (b" ", b"\t"):
            if not names:  # RFC 5322 section 2.2.3: a fold continues a field
                found.append(f"Header field syntax error: {_shown(line)}")
                continue
            if not line.strip():
                found.append(
                    f"Improper folded header field made up entirely of whitespace: {field}"
                )
        elif FIELD_NAME.match(line):
            field = line.split(b":", 1)[0].strip().decode("ascii", "replace")
            names.append(field.lower())
        else:
            found.append(f"Header field syntax error: {_shown(line)}")
            continue
        if len(line) > MAX_LINE:
            found.append(f"Header line longer than {MAX_LINE} characters: {field}")
        if (match := CONTROL.search(line)) is not None:
            found.append(
                f"Improper use of control character (char {match[0][0]:02X} hex) in "
                f"message header '{field}'"
            )
        if (match := EIGHT_BIT.search(line)) and not (
            smtputf8 and settings.allow_8bit_with_smtputf8
        ):
            found.append(
                f"Non-encoded 8-bit data (char {match[0][0]:02X} hex) in message header '{field}'"
            )
    counts = Counter(names)
    if settings.check_missing:
        found += [
            f'Missing required header field: "{_title(n)}"' for n in REQUIRED if not counts[n]
        ]
    if settings.check_duplicates:
        found += [f'Duplicate header field: "{_title(n)}"' for n in SINGLE if counts[n] > 1]
    return list(dict.fromkeys(found))


def _title(name: str) -> str:
    return (
        "Message-ID" if name == "message-id" else "-".join(p.capitalize() for p in name.split("-"))
    )


def _shown(line: bytes) -> str:
    return line[:40].decode("ascii", "replace")


class HeaderCheckScanner:
    """Checks the header section of the raw message; no I/O."""

    needs_parts = False

    def __init__(self, name: str, settings: HeaderCheckSettings) -> None:
        self.name = name
        self.settings = settings
        self.timeout = settings.timeout
        self.on_failure = settings.on_failure

    def cache_key(self, message: Message) -> None:
        """Not cached: a few regular expressions over the header: cheaper to run than to look up."""
        return None

    async def scan(self, message: Message) -> ScanResult:
        header = message.header_bytes
        found = problems(header, message.envelope.smtputf8, self.settings)
        # amavisd-new reports the first problem (its minor category decides the rest).
        findings = tuple(Finding(ContentsCategory.BAD_HEADER, p, self.name) for p in found[:1])
        return ScanResult(self.name, findings)

    async def close(self) -> None:
        return None
