"""The records that flow through the filter: frozen values, no I/O.

Envelope + raw bytes -> Message -> (decoded parts) -> ScanResult per scanner
-> Verdict per recipient -> Outcome -> SMTP reply.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from enum import Enum, IntEnum
from functools import cached_property
from typing import Protocol, runtime_checkable


class ContentsCategory(IntEnum):
    """amavisd-new's contents categories; a higher value is a higher priority (CC_*)."""

    CLEAN = 1
    MTA = 2
    OVERSIZED = 3
    BAD_HEADER = 4
    SPAMMY = 5
    SPAM = 6
    UNCHECKED = 7
    BANNED = 8
    VIRUS = 9

    @property
    def log_name(self) -> str:
        """The word amavisd-new writes in its log line (mailgraph reads it)."""
        return _LOG_NAMES[self]

    @property
    def config_name(self) -> str:
        return self.name.lower()


_LOG_NAMES = {
    ContentsCategory.CLEAN: "CLEAN",
    ContentsCategory.MTA: "MTA-BLOCKED",
    ContentsCategory.OVERSIZED: "OVERSIZED",
    ContentsCategory.BAD_HEADER: "BAD-HEADER",
    ContentsCategory.SPAMMY: "SPAMMY",
    ContentsCategory.SPAM: "SPAM",
    ContentsCategory.UNCHECKED: "UNCHECKED",
    ContentsCategory.BANNED: "BANNED",
    ContentsCategory.VIRUS: "INFECTED",
}


class Destiny(Enum):
    """What happens to a recipient's copy (amavisd-new's D_* constants)."""

    PASS = "pass"
    DISCARD = "discard"
    BOUNCE = "bounce"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


class FailureAction(Enum):
    """What a scanner failure (down, timeout, garbage reply) does to the message."""

    TEMPFAIL = "tempfail"  # 451: Postfix keeps the message and retries
    UNCHECKED = "unchecked"  # the message becomes UNCHECKED and its destiny applies
    PASS = "pass"  # the check is skipped, logged (spamd down: amavisd-new's default)


@dataclass(frozen=True, slots=True)
class Recipient:
    """One envelope recipient with the DSN parameters of its RCPT TO (RFC 3461)."""

    address: str
    notify: str | None = None
    orcpt: str | None = None

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()

    def rcpt_options(self) -> list[str]:
        options = []
        if self.notify:
            options.append(f"NOTIFY={self.notify}")
        if self.orcpt:
            options.append(f"ORCPT={self.orcpt}")
        return options


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope as Postfix handed it over, XFORWARD attributes included."""

    mail_from: str
    recipients: tuple[Recipient, ...]
    body: str | None = None  # BODY=7BIT|8BITMIME
    smtputf8: bool = False
    ret: str | None = None  # DSN RET=FULL|HDRS
    envid: str | None = None  # DSN ENVID=
    size: int | None = None
    xforward: tuple[tuple[str, str], ...] = ()
    client_address: str = ""  # the peer that talks to us (usually Postfix)
    listener: str = ""  # "host:port" of the listener that took the message

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError("an envelope needs at least one recipient")

    def mail_options(self) -> list[str]:
        options = []
        if self.body:
            options.append(f"BODY={self.body}")
        if self.smtputf8:
            options.append("SMTPUTF8")
        if self.ret:
            options.append(f"RET={self.ret}")
        if self.envid:
            options.append(f"ENVID={self.envid}")
        return options

    def xforward_value(self, attribute: str) -> str | None:
        for name, value in self.xforward:
            if name == attribute:
                return value
        return None

    @property
    def original_client(self) -> str:
        """The client address Postfix saw (XFORWARD ADDR), else our peer."""
        return self.xforward_value("ADDR") or self.client_address


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One field of a raw header section: its name and byte span, continuation included.

    A section that starts with whitespace has a first "field" without a name (b""):
    those lines continue nothing (RFC 5322 section 2.2.3), but they are part of the
    header section and stay one unit, so nothing we add can change its meaning.
    """

    name: bytes
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class HeaderSection:
    """Where a message's header fields are (`contentfilter.rfc5322` reads them)."""

    fields: tuple[HeaderField, ...]
    fields_end: int  # just after the last field
    end: int  # the first body byte: after the empty line, when there is one

    def __post_init__(self) -> None:
        if not 0 <= self.fields_end <= self.end:
            raise ValueError("a header section ends after its fields")

    def named(self, name: bytes) -> Iterator[HeaderField]:
        """The fields called `name` (any case), in order."""
        wanted = name.lower()
        return (field for field in self.fields if field.name.lower() == wanted)


def new_mail_id() -> str:
    """A fresh mail_id: 12 characters of [A-Za-z0-9_-], 72 random bits, never starting
    with "-" (it is typed as a command argument: `contentfilter quarantine show ID`)."""
    while True:
        mail_id = secrets.token_urlsafe(9)
        if not mail_id.startswith("-"):
            return mail_id


@dataclass(frozen=True, eq=False)
class Message:
    """One message as received: its ids, envelope, the exact bytes of DATA and where its
    header fields are (parsed once: `contentfilter.rfc5322.read_message`)."""

    log_id: str  # amavisd-new style "12345-01", used in replies and the log line
    mail_id: str  # unique across hosts, for the quarantine and headers
    envelope: Envelope
    raw: bytes
    header: HeaderSection
    parts: DecodedMessage | None = None

    def __post_init__(self) -> None:
        if self.header.end > len(self.raw):
            raise ValueError("the header section ends past the message")

    @property
    def header_end(self) -> int:
        """Offset of the first body byte (after the empty line ending the header)."""
        return self.header.end

    @cached_property
    def digest(self) -> str:
        """BLAKE2b of the whole message, computed once: the scanners' cache keys build on it."""
        return hashlib.blake2b(self.raw, digest_size=32).hexdigest()

    @property
    def header_bytes(self) -> bytes:
        return self.raw[: self.header.end]

    @property
    def size(self) -> int:
        return len(self.raw)


# --- decoded parts (filled in by contentfilter.mime) ---------------------------------


@dataclass(frozen=True, slots=True)
class Part:
    """One node of the decoded message: a MIME part or an archive member."""

    part_id: str  # amavisd-new style "p003"
    level: tuple[int, ...]  # position in the tree, amavisd-new's L=1/2/1
    declared_type: str | None = None  # Content-Type as declared
    detected_type: str | None = None  # short type by content: "exe", "zip", "pdf" ...
    names: tuple[str, ...] = ()  # every file name the part goes by
    size: int = 0
    digest: str = ""
    children: tuple[Part, ...] = ()
    detected_types: tuple[str, ...] = ()  # every short type: ("exe", "exe-ms"), amavisd-new's T=
    file_type: str = ""  # libmagic's description of the content (amavisd-new's type_long)
    attributes: str = ""  # amavisd-new's A= letters: U undecipherable, C encrypted

    def walk(self) -> Iterator[Part]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True, slots=True)
class ExtractedFile:
    """Bytes the decoder took out of the message, kept so the virus scanners see them too.

    `path` is a file in the message's private spool directory (removed when the
    message is done). `reason` says why it is kept: "leaf" for a decoded part with
    nothing further inside, "undecoded" for a part the decoder stopped at (depth,
    quota, damage), which clamd then opens with its own full recursion budget.
    """

    part_id: str
    path: str
    size: int
    reason: str = "leaf"


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    """The part tree of a message and any reasons it could not be fully decoded."""

    root: Part
    problems: tuple[str, ...] = ()  # each makes the message UNCHECKED
    extracted: tuple[ExtractedFile, ...] = ()  # what the decoder saw, for clamd
    # Decoding stopped by something outside the message (a worker crash, OOM kill or
    # time limit): what scanners conclude from these parts must not be cached.
    cut_short: bool = False

    def walk(self) -> Iterator[Part]:
        return self.root.walk()


# --- scan results ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a scanner found that puts the message in a contents category."""

    category: ContentsCategory
    detail: str  # virus name, banned part, reason the message is unchecked ...
    scanner: str = ""


@dataclass(frozen=True, slots=True)
class SpamReport:
    """SpamAssassin's opinion, as spamd returned it."""

    score: float
    required: float
    tests: tuple[tuple[str, float | None], ...] = ()  # (rule, its score; None: not asked)
    autolearn: str | None = None


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What one scanner said of one message."""

    scanner: str
    findings: tuple[Finding, ...] = ()
    spam: SpamReport | None = None
    elapsed: float = 0.0  # seconds spent in this scanner
    skipped: str | None = None  # why the scanner did not look (too big, unavailable...)
    cached: bool = False

    def with_timing(self, elapsed: float, cached: bool = False) -> ScanResult:
        return ScanResult(self.scanner, self.findings, self.spam, elapsed, self.skipped, cached)


@runtime_checkable
class Scanner(Protocol):
    """A content check. Implementations live in the top-level `scanners` package.

    `scan` returns findings or raises `errors.ScannerError`; the pipeline applies the
    scanner's `on_failure` to errors and its `timeout` to the whole call.
    """

    name: str
    timeout: float
    on_failure: FailureAction
    needs_parts: bool  # True: gets message.parts filled in by the decoder

    def cache_key(self, message: Message) -> str | None:
        """A digest of everything the result for `message` depends on (see contentfilter.cache).

        Every byte the scanner reads and a fingerprint of its settings; None: do not cache.
        """
        ...

    async def scan(self, message: Message) -> ScanResult: ...

    async def close(self) -> None: ...


@runtime_checkable
class PartsScanner(Scanner, Protocol):
    """A scanner that starts on the raw message at once and takes the decoded parts when
    the decoder is done (clamd scans the raw message while the decoder works)."""

    async def scan_with_parts(
        self, message: Message, parts: Awaitable[DecodedMessage | None]
    ) -> ScanResult:
        """`parts` gives the decoded message, or None if decoding failed."""
        ...


# --- decisions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DsnDecision:
    """Whether the sender gets a DSN when a recipient's copy is refused or bounced."""

    send: bool = True
    reason: str = ""  # why not (null sender, a virus that fakes it, the spam cutoff)

    def __post_init__(self) -> None:
        if self.send == bool(self.reason):
            raise ValueError("a DSN decision gives a reason exactly when it suppresses the DSN")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one recipient, with the rule that made it (for logs)."""

    recipient: Recipient
    category: ContentsCategory  # the deciding category
    destiny: Destiny
    reason: str  # e.g. "INFECTED: Eicar-Test-Signature"
    header_lines: tuple[bytes, ...] = ()  # header lines to add, CRLF-terminated
    subject_tag: str = ""  # prefix for the Subject ("" = untouched)
    remove_spam_headers: bool = False  # strip X-Spam-* coming from outside
    rule: str = ""  # name of the policy rule that fired
    details: tuple[str, ...] = ()  # of the deciding category: virus names, banned part...
    dsn: DsnDecision = DsnDecision()  # for the sender, if this copy is not delivered
    quarantined: bool = False  # a copy is kept in the quarantine (contentfilter.quarantine.keep)

    def edits_key(self) -> tuple[tuple[bytes, ...], str, bool]:
        """Recipients whose copies need the same edits are relayed together."""
        return (self.header_lines, self.subject_tag, self.remove_spam_headers)


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: code, enhanced status code and text."""

    code: int
    status: str  # enhanced status code "2.0.0"
    text: str

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"SMTP code out of range: {self.code}")

    @property
    def is_success(self) -> bool:
        return self.code < 400

    @property
    def is_tempfail(self) -> bool:
        return 400 <= self.code < 500


class Action(Enum):
    """What was done with one recipient's copy; the value is amavisd-new's log word."""

    RELAYED = "Relayed"  # the next hop accepted it
    DISCARDED = "Discarded"  # dropped on purpose, answered 2xx, nobody told
    BOUNCED = "Bounced"  # answered 2xx, we sent the sender a DSN
    REJECTED = "Rejected"  # answered 5xx (by policy, or the next hop refused it)
    TEMPFAILED = "TempFailed"  # answered 4xx: Postfix keeps it and retries
    QUARANTINED = "Quarantined"  # kept in the quarantine, not delivered


_ACTION_CODES = {
    Action.RELAYED: range(200, 300),
    Action.DISCARDED: range(200, 300),
    Action.BOUNCED: range(200, 300),
    Action.QUARANTINED: range(200, 300),
    Action.REJECTED: range(500, 600),
    Action.TEMPFAILED: range(400, 500),
}


@dataclass(frozen=True, slots=True)
class Disposition:
    """What happened to one recipient: the record the reply, log line and DSN come from.

    `verdict` is None when no decision was reached (a scanner that must tempfail, an
    internal fault). `queue_id` is the next hop's queue id for a relayed copy;
    `by_next_hop` says the next hop refused the copy or did not take it.
    """

    recipient: Recipient
    verdict: Verdict | None
    action: Action
    reply: Reply
    queue_id: str | None = None
    quarantine_id: str | None = None
    by_next_hop: bool = False

    def __post_init__(self) -> None:
        if self.reply.code not in _ACTION_CODES[self.action]:
            raise ValueError(f"{self.action.name} answered {self.reply.code}")
        if self.verdict is not None and self.verdict.recipient != self.recipient:
            raise ValueError("a disposition's verdict is for another recipient")
        if self.queue_id is not None and self.action is not Action.RELAYED:
            raise ValueError("only a relayed copy has a next-hop queue id")
        if self.by_next_hop and self.action not in (Action.REJECTED, Action.TEMPFAILED):
            raise ValueError("the next hop can only refuse or tempfail a copy")


@dataclass(frozen=True)
class Outcome:
    """Everything that happened to one message: one disposition per envelope recipient."""

    message: Message
    results: tuple[ScanResult, ...]
    dispositions: tuple[Disposition, ...]
    elapsed: float = 0.0

    def __post_init__(self) -> None:
        recipients = tuple(d.recipient for d in self.dispositions)
        if recipients != self.message.envelope.recipients:
            raise ValueError("an outcome has one disposition per envelope recipient, in order")

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        return tuple(d.verdict for d in self.dispositions if d.verdict is not None)

    @property
    def queued_as(self) -> tuple[str, ...]:
        """The next hop's queue ids, one per transaction that it accepted."""
        return tuple(dict.fromkeys(d.queue_id for d in self.dispositions if d.queue_id))
