"""The `web:` section of the configuration: where the quarantine page listens and who
may log in."""

from __future__ import annotations

from dataclasses import dataclass, field

from contentfilter import schema
from contentfilter.addresses import HostPort, Network


def _loopback() -> tuple[Network, ...]:
    return (Network.from_config("127.0.0.0/8"), Network.from_config("::1/128"))


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

    def __post_init__(self) -> None:
        if not self.admins_file:
            raise ValueError("admins_file: expected a file path")
        schema.require_positive(
            self, "session_ttl", "login_attempts", "token_requests", "rate_window", "page_size"
        )
