"""SpamAssassin through spamd: one request per message, with aiospamc.

Which request: the cheapest that gives what the headers need. Every spamd verb
answers with the `Spam:` header (score and required score); the rules that hit
come from
- REPORT (`rule_scores: true`, the default): the report's table, with each rule's
  score, for amavisd-new's `tests=[GTUBE=1000, ...]` in X-Spam-Status;
- SYMBOLS (`rule_scores: false`): the rule names only, `tests=[GTUBE, ...]`. spamd
  skips rendering the report (its template, descriptions, content preview) and we
  skip reading it; what that saves spamd is measured by `benchmarks/spamd_verbs.py`
  (BENCHMARKS.md: small next to the rules themselves).
PROCESS and HEADERS cost about what SYMBOLS does but return the whole message or
header section, whose X-Spam-Status layout is the site's `add_header` template:
nothing to gain over SYMBOLS, and more to parse.

What spamd 4.0 returns, and so how precise our numbers are:
- the total score and the required score come from the `Spam:` response header
  (`Spam: True ; 1001.3 / 5.0`), which spamd prints with one decimal;
- the per-rule scores come from the report's table (` 2.7 MISSING_DATE  ...`),
  which SpamAssassin prints with one decimal below 10 points and as a whole
  number from 10 up (`1000 GTUBE`); tiny scores read as 0.0 or -0.0. The
  rounded rule scores need not add up to the rounded total. No spamd verb gives
  more: SYMBOLS and the X-Spam-Status header of HEADERS/PROCESS name the rules
  without scores, and only HEADERS/PROCESS carry `autolearn=`, so with REPORT
  or SYMBOLS `SpamReport.autolearn` stays None (spamd logs it in its own
  `result:` line);
- a custom `report` template without the table leaves `SpamReport.tests` empty.

aiospamc (and loguru, which it logs through) is imported when the first request
is made, not with this module: a one-shot `pipe` or `spawn` process loads the
settings and builds the scanner without paying for it until spamd is asked.

What spamd is handed: the message as received, with `Return-Path: <sender>` on
top, always. SpamAssassin takes the envelope sender from the topmost
Return-Path when no Received line is above it (PerMsgStatus::get_envelope_from),
and a Return-Path already in the message was written by whoever composed it
(Postfix drops Return-Path on arrival: message_drop_headers). The line goes to
spamd only, never into the relayed message. No X-Envelope-To is added: it would
only feed the whitelist_to family of settings, and would hand spamd the full
recipient list of every message.

Messages larger than `max_size` are not sent (spamc's and amavisd-new's
behaviour): the result says `skipped`, and the log says why.

The cache key is the copy spamd is handed (the whole message and the envelope
sender on top) with the settings: header rules (Received, DKIM, SPF) score the
header, so only an identical transaction gets a cached score (Postfix hands one
queued message with many recipients over in several identical transactions).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contentfilter import cache
from contentfilter.addresses import HostPort
from contentfilter.errors import (
    ScannerError,
    ScannerProtocolError,
    ScannerTimeout,
    ScannerUnavailable,
)
from contentfilter.model import FailureAction, Message, ScanResult, SpamReport
from contentfilter.schema import require_positive
from scanners.base import ScannerSettings

log = logging.getLogger("contentfilter.scanners.spamassassin")


def _spamc() -> Any:
    """aiospamc, imported on first use (the module docstring says why)."""
    import aiospamc  # type: ignore[import-untyped]
    import aiospamc.exceptions  # type: ignore[import-untyped]
    import aiospamc.frontend  # type: ignore[import-untyped]
    import aiospamc.requests  # type: ignore[import-untyped]
    import aiospamc.responses  # type: ignore[import-untyped]
    from loguru import logger as loguru_logger

    # aiospamc logs every request through loguru, whose default sink is stderr. It
    # disables itself on import; say so again here so that stays true for us.
    loguru_logger.disable("aiospamc")
    return aiospamc


SPAMC_MAX_SIZE = 512_000  # spamc's default -s limit, in bytes
_USER = re.compile(r"[!-~]+")  # printable ASCII, no spaces: it becomes a spamd header


@dataclass(frozen=True)
class SpamAssassinSettings(ScannerSettings):
    """The `scanners.spamassassin` section.

    `server`: spamd's `host:port`, or a unix socket path (starting with "/").
    `max_size`: larger messages are not sent to spamd (bytes).
    `user`: the spamd `User` header, for per-user preferences; None: spamd's default.
    `rule_scores`: ask for each rule's score (REPORT) for `tests=[RULE=score]`; false:
    the rule names only (SYMBOLS), which spares spamd the report.
    """

    on_failure: FailureAction = FailureAction.PASS
    server: str = "127.0.0.1:783"
    connect_timeout: float = 5.0  # seconds to connect to spamd
    max_size: int = SPAMC_MAX_SIZE
    user: str | None = None
    rule_scores: bool = True

    @property
    def verb(self) -> str:
        """The spamd request that gives what the settings ask for, and no more."""
        return "REPORT" if self.rule_scores else "SYMBOLS"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.server.startswith("/"):
            try:
                HostPort.parse(self.server)
            except ValueError as error:
                raise ValueError(f"server: {error} (or a unix socket path)") from None
        require_positive(self, "connect_timeout", "max_size")
        if self.user is not None and not _USER.fullmatch(self.user):
            raise ValueError(f"user must be printable ASCII without spaces (got {self.user!r})")


# --- spamd's answer -------------------------------------------------------------------

_TABLE_START = re.compile(r"^-+ -+ -+\s*$")  # "---- ------------ -------------"
_RULE_LINE = re.compile(r"^ {0,4}(-?\d+(?:\.\d+)?) ([A-Za-z0-9_]+)(?: |$)")


def parse_rule_table(text: str) -> tuple[tuple[str, float], ...]:
    """The (rule, points) rows of SpamAssassin's report table, in report order.

    Description continuation lines are indented by 28 spaces, so they never
    look like a row.
    """
    lines = text.splitlines()
    start = next((n + 1 for n, line in enumerate(lines) if _TABLE_START.match(line)), None)
    if start is None:
        return ()
    rows = (_RULE_LINE.match(line) for line in lines[start:])
    return tuple((row[2], float(row[1])) for row in rows if row)


_SYMBOL = re.compile(r"[A-Za-z0-9_]+")


def parse_symbols(text: str) -> tuple[tuple[str, None], ...]:
    """The rule names of a SYMBOLS answer (`GTUBE,RCVD_ILLEGAL_IP`), without scores."""
    names = (name.strip() for name in text.split(","))
    return tuple((name, None) for name in names if _SYMBOL.fullmatch(name))


def spam_report(response: Any, verb: str = "REPORT") -> SpamReport:
    """Our SpamReport from an aiospamc Response to REPORT or SYMBOLS; ValueError if
    unusable."""
    spam = response.headers.get("Spam")
    score = getattr(spam, "score", None)
    required = getattr(spam, "threshold", None)
    if not isinstance(score, float) or not isinstance(required, float):
        raise ValueError(f"no usable Spam header in spamd's reply (got {spam!r})")
    body = bytes(response.body).decode("utf-8", errors="replace")
    tests = parse_symbols(body) if verb == "SYMBOLS" else parse_rule_table(body)
    return SpamReport(score=score, required=required, tests=tests)


# --- what spamd gets ------------------------------------------------------------------


def spamd_copy(message: Message) -> bytes:
    """The bytes sent to spamd: the message with the envelope sender on top."""
    sender = message.envelope.mail_from
    if any(char in sender for char in "\r\n<>"):  # cannot be written as one header line
        return message.raw
    return b"Return-Path: <" + sender.encode("utf-8", errors="replace") + b">\r\n" + message.raw


# --- errors ---------------------------------------------------------------------------

# spamd's status codes (sysexits.h) -> our errors. Not listed: ScannerProtocolError.
_STATUS_ERRORS: dict[int, type[ScannerError]] = {
    69: ScannerUnavailable,  # EX_UNAVAILABLE
    71: ScannerUnavailable,  # EX_OSERR: e.g. cannot fork
    74: ScannerUnavailable,  # EX_IOERR
    75: ScannerUnavailable,  # EX_TEMPFAIL
    79: ScannerTimeout,  # EX_TIMEOUT: spamd's own time limit
}


def _converted(name: str, server: str, error: Exception) -> ScannerError:
    """aiospamc's and the socket layer's exceptions as ours (one table, one place)."""
    where = f"spamd {server}"
    aiospamc = _spamc()
    if isinstance(error, aiospamc.responses.ResponseException):
        kind = _STATUS_ERRORS.get(int(error.code), ScannerProtocolError)
        return kind(name, f"{where} answered {error.code} {error}")
    if isinstance(error, aiospamc.exceptions.ClientTimeoutException | TimeoutError):
        return ScannerTimeout(name, f"{where}: no answer in time")
    if isinstance(error, aiospamc.exceptions.AIOSpamcConnectionFailed):
        cause = error.__cause__
        if isinstance(cause, OSError) and cause.errno:
            return ScannerUnavailable(name, f"{where}: {os.strerror(cause.errno)}")
        return ScannerUnavailable(name, f"{where}: {cause or 'connection failed'}")
    if isinstance(error, OSError):
        return ScannerUnavailable(name, f"{where}: connection lost ({error})")
    if isinstance(error, aiospamc.exceptions.BadResponse) and error.args == (b"",):
        return ScannerUnavailable(name, f"{where}: closed the connection without a reply")
    if isinstance(error, aiospamc.exceptions.BadResponse) and error.args:
        return ScannerProtocolError(name, f"{where}: unparseable reply {error.args[0]!r:.120}")
    return ScannerProtocolError(name, f"{where}: unusable reply ({type(error).__name__})")


# --- the scanner ----------------------------------------------------------------------


class SpamAssassinScanner:
    """Asks spamd for a REPORT (or SYMBOLS) on each message no larger than `max_size`."""

    needs_parts = False

    def __init__(self, name: str, settings: SpamAssassinSettings) -> None:
        self.name = name
        self.timeout = settings.timeout
        self.on_failure = settings.on_failure
        self.settings = settings
        self._client: Any = None  # made for the first request
        self._fingerprint = cache.fingerprint(settings)

    def _spamd(self) -> Any:
        """One aiospamc client for the scanner's life: its frontend functions build a
        client, and with it an SSL context (~100 ms of CPU), on every call."""
        if self._client is None:
            aiospamc = _spamc()
            settings = self.settings
            builder = aiospamc.frontend.FrontendClientBuilder()
            if settings.server.startswith("/"):
                builder = builder.with_connection(socket_path=Path(settings.server))
            else:
                endpoint = HostPort.parse(settings.server)
                builder = builder.with_connection(endpoint.host, endpoint.port)
            timeout = aiospamc.Timeout(total=settings.timeout, connection=settings.connect_timeout)
            self._client = builder.set_timeout(timeout).build()
        return self._client

    def cache_key(self, message: Message) -> str | None:
        """What spamd is handed (`spamd_copy`: sender and message) and the settings (user...)."""
        if message.size > self.settings.max_size:
            return None  # not sent to spamd
        return cache.key(self._fingerprint, message.envelope.mail_from, message.digest)

    async def scan(self, message: Message) -> ScanResult:
        started = time.perf_counter()
        if message.size > self.settings.max_size:
            reason = f"size {message.size} > limit {self.settings.max_size}"
            log.info("%s: %s not asked: %s", message.log_id, self.name, reason)
            return ScanResult(self.name, skipped=reason, elapsed=time.perf_counter() - started)
        response = await self._request(spamd_copy(message))
        try:
            result = spam_report(response, self.settings.verb)
        except ValueError as error:
            raise ScannerProtocolError(
                self.name, f"spamd {self.settings.server}: {error}"
            ) from None
        elapsed = time.perf_counter() - started
        log.debug(
            "%s: spamd %s %.3f s: score %.1f/%.1f %s",
            message.log_id, self.settings.server, elapsed, result.score, result.required,
            ",".join(name for name, _ in result.tests),
        )  # fmt: skip
        return ScanResult(self.name, spam=result, elapsed=elapsed)

    async def close(self) -> None:
        """Nothing to release: aiospamc opens one connection per request."""

    async def _request(self, data: bytes) -> Any:
        client = self._spamd()
        request = _spamc().requests.Request(self.settings.verb, body=data)
        if self.settings.user:
            request.headers.user = self.settings.user
        try:
            return await client.request(request)
        except Exception as error:  # aiospamc's, OSError, TimeoutError, a parser surprise
            raise _converted(self.name, self.settings.server, error) from error
