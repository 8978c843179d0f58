"""The `web:` section of the configuration: where the quarantine page listens and who
may log in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from contentfilter import schema
from contentfilter.addresses import HostPort, Network


def _loopback() -> tuple[Network, ...]:
    return (Network.from_config("127.0.0.0/8"), Network.from_config("::1/128"))


@dataclass(frozen=True)
class ImapLogin:
    """Admins who log in with their IMAP password: the site's IMAP server checks it."""

    server: HostPort | None = None  # e.g. 127.0.0.1:143; none: local accounts only
    # starttls (port 143) or tls (imaps, port 993); plain only to a loopback server
    security: Literal["starttls", "tls", "plain"] = "starttls"
    admins: tuple[str, ...] = ()  # the IMAP logins that may use the admin pages
    timeout: float = 10.0
    # PEM file of the CA (or the server's own self-signed certificate) the server's
    # certificate must chain to; empty: the system's CAs
    ca_file: str = ""

    def __post_init__(self) -> None:
        schema.require_positive(self, "timeout")
        if self.ca_file and not self.ca_file.startswith("/"):
            raise ValueError(f"ca_file: expected an absolute path (got {self.ca_file!r})")
        if self.server is not None and not self.admins:
            raise ValueError("admins: name the IMAP logins that may use the admin pages")
        loopback = self.server is not None and self.server.host in ("127.0.0.1", "::1", "localhost")
        if self.security == "plain" and self.server is not None and not loopback:
            raise ValueError("security: plain sends passwords in clear: only to a loopback server")


@dataclass(frozen=True)
class WebSettings:
    """`contentfilter web`: listen address, admin accounts, cookies and rate limits.

    The public URL of the page (links in notices, the path prefix behind a reverse
    proxy) is `notices.links.public_url`, read from there so there is one place for it.
    """

    listen: HostPort = HostPort("127.0.0.1", 10080)
    # local admin accounts: one `name:argon2-hash` a line (`contentfilter web add-admin`)
    admins_file: str = "/etc/contentfilter/web-admins"
    # cookies only over HTTPS; false only for a page reached over plain HTTP on loopback
    secure_cookies: bool = True
    session_ttl: float = 8 * 3600.0  # seconds an admin login lasts
    # X-Forwarded-For / X-Forwarded-Proto are believed only from these peers
    trusted_proxies: tuple[Network, ...] = field(default_factory=_loopback)
    # per client address and window: failed-or-not login attempts, token page requests
    login_attempts: int = 10
    token_requests: int = 60
    rate_window: float = 300.0  # seconds
    page_size: int = 50  # rows per page of search results
    imap: ImapLogin = ImapLogin()

    def __post_init__(self) -> None:
        if not self.admins_file:
            raise ValueError("admins_file: expected a file path")
        schema.require_positive(
            self, "session_ttl", "login_attempts", "token_requests", "rate_window", "page_size"
        )
