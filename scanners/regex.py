"""Header and body rules from the config, in the manner of Postfix header_checks.

    scanners:
      local_rules:
        type: regex
        rules:
          - {header: Subject, pattern: 'invoice.*\\.exe', category: banned, detail: 'exe invoice'}
          - {header: X-Mailer, pattern: '^BulkMailer', category: spam}
          - {body: 'wire transfer.*urgent', category: spam, detail: 'advance-fee text'}

A header rule matches the pattern (Python `re`, searched anywhere, case-insensitive
unless `ignore_case: false`) against the value of every field of that name, after
unfolding (RFC 5322 2.2.3) and decoding encoded words (RFC 2047), so
`=?UTF-8?B?...?=` subjects match their text. A body rule searches the body as
sent, bytes read as Latin-1 (one character per byte, no MIME decoding: base64
parts stay base64, as in Postfix body_checks), up to `max_body_size` bytes.

Each rule that matches adds one finding of its category; rules are independent.
Patterns run on the event loop, so the body cap also bounds what a slow pattern
can cost. Results are not cached: running the rules costs less than a lookup.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from contentfilter.model import ContentsCategory, Finding, HeaderSection, Message, ScanResult
from contentfilter.rfc5322 import decode_encoded_words, field_value, parse_header, text_of
from scanners.base import ScannerSettings

log = logging.getLogger("contentfilter.scanners.regex")

Category = Literal["bad_header", "spam", "banned", "virus", "unchecked"]
CATEGORIES: dict[str, ContentsCategory] = {
    "bad_header": ContentsCategory.BAD_HEADER,
    "spam": ContentsCategory.SPAM,
    "banned": ContentsCategory.BANNED,
    "virus": ContentsCategory.VIRUS,
    "unchecked": ContentsCategory.UNCHECKED,
}
POSTFIX_BODY_CHECKS_SIZE_LIMIT = 51200  # Postfix body_checks_size_limit default, bytes
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 2.2: printable ASCII except ":"


@dataclass(frozen=True)
class RegexRule:
    """One rule: `header` with `pattern`, or `body` holding the pattern itself."""

    category: Category
    header: str | None = None
    pattern: str | None = None
    body: str | None = None
    detail: str = ""  # what the finding says; default: the rule itself
    ignore_case: bool = True

    def __post_init__(self) -> None:
        if (self.header is None) == (self.body is None):
            raise ValueError("a rule needs either `header` (with `pattern`) or `body`")
        if self.header is not None:
            if not _FIELD_NAME.fullmatch(self.header):
                raise ValueError(f"header: not a header field name: {self.header!r}")
            if self.pattern is None:
                raise ValueError(f"the rule for header {self.header} needs a `pattern`")
        elif self.pattern is not None:
            raise ValueError("a body rule has its pattern in `body`: drop `pattern`")
        try:
            self.compile()
        except re.error as error:
            raise ValueError(f"{self.describe()}: bad regular expression: {error}") from None

    @property
    def regex(self) -> str:
        source = self.pattern if self.header is not None else self.body
        assert source is not None
        return source

    def compile(self) -> re.Pattern[str]:
        return re.compile(self.regex, re.IGNORECASE if self.ignore_case else 0)

    def describe(self) -> str:
        """The rule as the log and the default finding show it: `Subject /pattern/`."""
        where = self.header if self.header is not None else "body"
        return f"{where} /{self.regex}/"

    def to_config(self) -> dict[str, object]:
        """The rule as written in YAML, unset keys left out (for `check-config`)."""
        keys = ("header", "pattern", "body", "category", "detail", "ignore_case")
        plain = {key: getattr(self, key) for key in keys}
        plain = {key: value for key, value in plain.items() if value not in (None, "")}
        if self.ignore_case:
            del plain["ignore_case"]
        return plain


@dataclass(frozen=True)
class RegexSettings(ScannerSettings):
    """The section of a `type: regex` scanner."""

    rules: tuple[RegexRule, ...] = ()
    max_body_size: int = POSTFIX_BODY_CHECKS_SIZE_LIMIT  # bytes of body that body rules see

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_body_size < 0:
            raise ValueError(f"max_body_size must not be negative (got {self.max_body_size})")


# --- reading the header ---------------------------------------------------------------


def header_fields(raw: bytes, section: HeaderSection | None = None) -> Iterator[tuple[str, str]]:
    """(name, value) of each header field: unfolded, RFC 2047-decoded, stripped.

    `section` is `raw`'s header section when already parsed.
    """
    for field in (section or parse_header(raw)).fields:
        if field.name:
            value = text_of(field_value(raw, field))
            yield field.name.decode("latin-1"), decode_encoded_words(value)


# --- the scanner ----------------------------------------------------------------------


class RegexScanner:
    """Runs the configured rules over each message's header and body."""

    needs_parts = False

    def __init__(self, name: str, settings: RegexSettings) -> None:
        self.name = name
        self.timeout = settings.timeout
        self.on_failure = settings.on_failure
        self.settings = settings
        self.rules = tuple((rule, rule.compile()) for rule in settings.rules)

    def cache_key(self, message: Message) -> str | None:
        """Not cached: header and body rules: cheaper to run than to look up."""
        return None

    async def scan(self, message: Message) -> ScanResult:
        started = time.perf_counter()
        findings = tuple(self.findings(message))
        return ScanResult(self.name, findings, elapsed=time.perf_counter() - started)

    def findings(self, message: Message) -> Iterator[Finding]:
        """One finding per matching rule, in rule order."""
        fields: dict[str, list[str]] = {}
        for name, value in header_fields(message.raw, message.header):
            fields.setdefault(name.lower(), []).append(value)
        start = message.header_end
        body = message.raw[start : start + self.settings.max_body_size].decode("latin-1")
        for rule, regex in self.rules:
            texts = [body] if rule.header is None else fields.get(rule.header.lower(), [])
            if any(regex.search(text) for text in texts):
                log.debug("%s: %s rule %s matched", message.log_id, self.name, rule.describe())
                detail = rule.detail or rule.describe()
                yield Finding(CATEGORIES[rule.category], detail, self.name)

    async def close(self) -> None:
        """Nothing to release."""
