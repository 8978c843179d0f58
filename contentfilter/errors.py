"""One exception hierarchy for the whole filter.

Every error the filter raises on purpose derives from `ContentFilterError`. The
mapping from these to SMTP replies lives in one place: `contentfilter.replies`.
An internal fault is never answered with a 5xx: after the queue, a 5xx makes
Postfix bounce good mail.
"""

from __future__ import annotations

import errno

# OSError numbers of a full disk or quota: a tempfail naming the cause, never UNCHECKED
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class ContentFilterError(Exception):
    """Base class of every error the filter raises on purpose."""


class ConfigError(ContentFilterError):
    """A configuration value is missing, misspelt, of the wrong type or out of range."""

    def __init__(self, key: str, reason: str, value: object = None) -> None:
        self.key = key
        self.reason = reason
        self.value = value
        shown = "" if value is None else f" (got {_shortened(repr(value), 80)})"
        where = _shortened(_visible(key), 200) if key else "<top level>"
        super().__init__(f"{where}: {_visible(reason)}{shown}")


def _shortened(text: str, limit: int) -> str:
    """Text as shown in one line of an error message: a huge one is cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _visible(text: str) -> str:
    """Control characters (a line break in a key of a hostile file) shown as escapes."""
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c for c in text)


class ScannerError(ContentFilterError):
    """A scanner could not give an answer for this message."""

    def __init__(self, scanner: str, reason: str) -> None:
        self.scanner = scanner
        self.reason = reason
        super().__init__(f"{scanner}: {reason}")


class ScannerUnavailable(ScannerError, ConnectionError):
    """The scanner's daemon could not be reached (every configured server)."""


class ScannerTimeout(ScannerError, TimeoutError):
    """The scanner did not answer within its timeout."""


class ScannerProtocolError(ScannerError):
    """The scanner answered something we cannot take for a verdict."""


class DecoderUnavailable(ContentFilterError):
    """No decoder worker process could be started: the message is tempfailed."""


class RelayError(ContentFilterError):
    """The next hop did not take the message.

    `code` and `text` are the next hop's own reply where it gave one; `code` is
    None when there was no reply at all (connection refused, timeout, dropped).
    """

    def __init__(self, reason: str, code: int | None = None, text: str = "") -> None:
        self.reason = reason
        self.code = code
        self.text = text
        super().__init__(reason if code is None else f"{reason}: {code} {text}")

    @property
    def is_permanent(self) -> bool:
        return self.code is not None and 500 <= self.code < 600


class NextHopUnavailable(RelayError, ConnectionError):
    """The next hop could not be reached or dropped the connection."""


class NextHopTimeout(RelayError, TimeoutError):
    """The next hop did not answer within the timeout."""


class NextHopRefused(RelayError):
    """The next hop answered a command with 4xx or 5xx."""


class QuarantineError(ContentFilterError):
    """The quarantine store could not keep, find or change something.

    When storing a blocked message fails, the message is tempfailed (unless the
    policy says to go on without the quarantine): it must not be dropped unkept.
    """

    errno: int | None = None  # ENOSPC or EDQUOT when a full disk is the cause


class TokenError(ContentFilterError):
    """A link token cannot be used: `reason` says why, in words a page can show.

    `kind` is one of "malformed", "forged" (bad signature or another key), "expired",
    "wrong-action", "wrong-recipient" and "used" (single use: it was acted on before).
    """

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(reason)


class SessionClosed(ContentFilterError, ConnectionResetError):
    """The filter ended an SMTP session (a client too slow or a line too long).

    The client has been sent the reason; a ConnectionResetError because that is what
    ends a session in aiosmtpd.
    """
