"""Sessions, CSRF tokens, rate limits, the client's address and the security headers.

The session is a signed cookie (HMAC-SHA256 with a key made at start-up: logins end
when the process restarts), holding a random session id, the admin's name once
logged in, and the expiry. Every form carries a CSRF token derived from the session
id, so a POST from another site (which cannot read our cookie or page) is refused;
the cookie is also SameSite=Strict, HttpOnly and, unless configured off for plain
HTTP on loopback, Secure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contentfilter.addresses import Network

COOKIE = "cf_session"
MAX_COOKIE = 1024  # characters; ours are about 150

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # a token is in the page's URL: it must not leak to another site as Referer
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    admin: str | None
    expires: float  # time.time()

    @classmethod
    def anonymous(cls, ttl: float) -> Session:
        return cls(secrets.token_urlsafe(18), None, time.time() + ttl)


class Signer:
    """Encodes sessions into cookie values and back, and derives CSRF tokens."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def dump(self, session: Session) -> str:
        payload = json.dumps([session.session_id, session.admin, int(session.expires)])
        body = _b64(payload.encode())
        return f"{body}.{_b64(self._mac('session:' + body))}"

    def load(self, value: str | None) -> Session | None:
        """The session in a cookie we signed and that has not expired, else None."""
        if not value or len(value) > MAX_COOKIE or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        if not hmac.compare_digest(_b64(self._mac("session:" + body)), mac):
            return None
        try:
            session_id, admin, expires = json.loads(base64.urlsafe_b64decode(body + "=="))
            session = Session(str(session_id), admin if isinstance(admin, str) else None, expires)
        except (ValueError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac("csrf:" + session.session_id))

    def csrf_valid(self, session: Session, token: object) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token, self.csrf_token(session))

    def _mac(self, text: str) -> bytes:
        return hmac.new(self._key, text.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class RateLimiter:
    """At most `limit` events per client address in a sliding window of `window` seconds.

    Memory is bounded: the least recently seen addresses are forgotten first.
    """

    MAX_ADDRESSES = 10000

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, address: str) -> bool:
        """Count one event for `address`; False when it is over the limit."""
        now = time.monotonic()
        events = self._events.pop(address, None) or deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        allowed = len(events) < self.limit
        if allowed:
            events.append(now)
        self._events[address] = events
        while len(self._events) > self.MAX_ADDRESSES:
            self._events.popitem(last=False)
        return allowed


def client_address(scope: Scope, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer's, or X-Forwarded-For's last entry when the peer
    is a trusted reverse proxy (the proxy appends the address it saw)."""
    client = scope.get("client")
    peer: str = str(client[0]) if client else ""
    if not any(peer in network for network in trusted):
        return peer
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            last = bytes(value).decode("latin-1").split(",")[-1].strip()
            if last and len(last) <= 45 and all(c in "0123456789abcdefABCDEF.:" for c in last):
                return last
    return peer


class SecurityHeaders:
    """ASGI middleware: the security headers on every response; pages are not cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class PathPrefix:
    """ASGI middleware: serve under the public URL's path whether or not the reverse
    proxy strips it (`proxy_pass http://127.0.0.1:10080/;` does, without `/` not)."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.prefix:
            path: str = scope["path"]
            if path == self.prefix or path.startswith(self.prefix + "/"):
                scope = {**scope, "path": path[len(self.prefix) :] or "/", "raw_path": None}
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body must declare its length (411 otherwise; browsers
    always do for forms) and stay within `limit` bytes (413). The HTTP server reads no
    more than the declared length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            headers = dict(scope.get("headers", ()))
            declared = headers.get(b"content-length")
            if declared is None or not declared.isdigit():
                await _refuse(send, 411, b"Length required")
                return
            if int(declared) > self.limit:
                await _refuse(send, 413, b"Request too large")
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, text: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})
