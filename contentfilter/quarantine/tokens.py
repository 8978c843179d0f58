"""Signed, expiring, single-use link tokens for notices: one message, one recipient, one action.

A token is `v1.<payload>.<signature>` in URL-safe base64 without padding. The payload
is a JSON list `[token_id, mail_id, recipient, action, expires]`; the signature is
HMAC-SHA256 (stdlib `hmac`) over `v1.<payload>` with the key from `notices.links`.
Nothing in a token is secret (the recipient may read it); nothing in it can be
changed without the key.

Checking a token (`verify`) does not use it up: the confirmation page shows it as
often as a link previewer fetches it. Using it (`redeem`) is the store's
`claim("token:" + token_id)`, once, from any process or host, at the moment the
action is carried out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from contentfilter.errors import QuarantineError, TokenError
from contentfilter.quarantine import QuarantineStore

VERSION = "v1"
ACTIONS = ("release", "release-allow", "delete", "request-release", "list")
"""release; release and allow the sender; delete; ask an admin to release (viruses,
banned files); a recipient's own list of held mail (mail_id "")."""

MAX_TOKEN_LENGTH = 4096  # a real one is about 200 characters; more is not ours
MIN_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Claim:
    """What a valid token allows: `action` on `mail_id` for `recipient` until `expires`."""

    token_id: str
    mail_id: str
    recipient: str
    action: str
    expires: datetime  # UTC

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")
        if not self.recipient:
            raise ValueError("a token is for one recipient")
        if not self.mail_id and self.action != "list":
            raise ValueError(f"a {self.action} token is for one message")

    @property
    def claim_key(self) -> str:
        """The store key that marks this token used."""
        return "token:" + self.token_id


def issue(
    key: bytes,
    *,
    mail_id: str,
    recipient: str,
    action: str,
    ttl: float,
    now: datetime | None = None,
) -> str:
    """A new token allowing `action` on `mail_id` for `recipient` for `ttl` seconds."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a link key needs at least {MIN_KEY_BYTES} bytes")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    start = now or datetime.now(UTC)
    expires = int((start + timedelta(seconds=ttl)).timestamp())
    claim = Claim(secrets.token_urlsafe(16), mail_id, recipient, action, _utc(expires))
    payload = json.dumps(
        [claim.token_id, mail_id, recipient, action, expires],
        ensure_ascii=True,
        separators=(",", ":"),
    ).encode("ascii")
    signed = f"{VERSION}.{_encode(payload)}"
    return f"{signed}.{_encode(_signature(key, signed))}"


def verify(
    key: bytes,
    token: str,
    *,
    action: str | None = None,
    recipient: str | None = None,
    now: datetime | None = None,
) -> Claim:
    """The claim a token makes, if it is ours, unchanged, unexpired and (when given)
    for `action` and `recipient`; TokenError saying why not. Does not use it up."""
    claim = _claim(_checked_payload(key, token))
    if claim.expires <= (now or datetime.now(UTC)):
        raise TokenError("expired", "this link has expired")
    if action is not None and claim.action != action:
        raise TokenError("wrong-action", f"this link is for {claim.action}, not {action}")
    if recipient is not None and claim.recipient.lower() != recipient.lower():
        raise TokenError("wrong-recipient", "this link is for another recipient")
    return claim


async def redeem(store: QuarantineStore, claim: Claim) -> None:
    """Use the token up (single use), from any process or host; TokenError("used") if it
    was used before. Call it when the action is carried out, not when a page is shown."""
    try:
        first = await store.claim(claim.claim_key, claim.expires)
    except QuarantineError as error:
        raise TokenError("unavailable", f"the quarantine cannot be reached: {error}") from error
    if not first:
        raise TokenError("used", "this link has been used already")


def _checked_payload(key: bytes, token: str) -> bytes:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("malformed", "this is not a link of ours")
    pieces = token.strip().split(".")
    if len(pieces) != 3 or pieces[0] != VERSION:
        raise TokenError("malformed", "this is not a link of ours")
    signed = f"{pieces[0]}.{pieces[1]}"
    try:
        payload = _decode(pieces[1])
        signature = _decode(pieces[2])
    except ValueError:
        raise TokenError("malformed", "this link is damaged") from None
    if not hmac.compare_digest(signature, _signature(key, signed)):
        raise TokenError("forged", "this link is not valid (it was changed or not made here)")
    return payload


def _claim(payload: bytes) -> Claim:
    """The claim in a payload we signed ourselves (so only our own format occurs)."""
    try:
        token_id, mail_id, recipient, action, expires = json.loads(payload)
        if not all(isinstance(v, str) for v in (token_id, mail_id, recipient, action)):
            raise ValueError("not strings")
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise ValueError("not a time")
        return Claim(token_id, mail_id, recipient, action, _utc(expires))
    except (ValueError, TypeError, OverflowError, OSError):
        raise TokenError("malformed", "this link is damaged") from None


def _signature(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("not base64") from error


def _utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
