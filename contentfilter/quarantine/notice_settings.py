"""The `notices:` section: who is told about quarantined mail, how, and the signed links.

notices:
  sender: postmaster@example.com     # From: of every notice (default postmaster@hostname)
  smtp: 127.0.0.1:10025              # where notices go (default: the next hop)
  templates: /etc/contentfilter/notices   # default: the shipped ones
  admin:                             # amavisd-new's virus_admin / banned_admin
    virus: [postmaster@example.com]
    banned: [postmaster@example.com]
  recipients:
    frequency: daily                 # off, immediate, hourly, daily, weekly
    categories: [spam, virus, banned]
    per_recipient: {ceo@example.com: off, "@lists.example.com": weekly}
  links:
    public_url: https://quarantine.example.com   # the web page; <public_url>/t/<token>
    key_file: /etc/contentfilter/link.key        # or key: "...", 32 bytes at least
    ttl: 604800                                  # seconds a link stays valid
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from contentfilter.quarantine.tokens import MIN_KEY_BYTES

Frequency = Literal["off", "immediate", "hourly", "daily", "weekly"]
FREQUENCY_SECONDS = {"hourly": 3600, "daily": 86400, "weekly": 7 * 86400}
MAX_KEY_FILE_BYTES = 4096


@dataclass(frozen=True)
class LinkSettings:
    """Links in notices: signed with `key` (or the contents of `key_file`), read at start-up."""

    public_url: str = ""  # empty: notices carry no links
    key: str = field(default="", repr=False)
    key_file: str = ""
    ttl: float = 7 * 86400.0
    secret: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        url = self.public_url
        if url and (not url.startswith(("https://", "http://")) or any(c.isspace() for c in url)):
            raise ValueError("public_url: expected an http:// or https:// address")
        if self.key and self.key_file:
            raise ValueError("give key or key_file, not both")
        if self.ttl <= 0:
            raise ValueError(f"ttl must be positive (got {self.ttl})")
        secret = self.key.encode("utf-8") if self.key else _read_key(self.key_file)
        if (self.key or self.key_file) and len(secret) < MIN_KEY_BYTES:
            which = "key" if self.key else f"key_file {self.key_file}"
            raise ValueError(f"{which}: a link key needs at least {MIN_KEY_BYTES} bytes")
        if url and not secret:
            raise ValueError("public_url needs key or key_file to sign the links")
        object.__setattr__(self, "secret", secret)

    @property
    def enabled(self) -> bool:
        return bool(self.public_url and self.secret)

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/")

    def to_config(self) -> dict[str, object]:
        """As check-config prints it: never the key itself."""
        return {
            "public_url": self.public_url,
            "key": "(hidden)" if self.key else "",
            "key_file": self.key_file,
            "ttl": self.ttl,
        }


def _read_key(path: str) -> bytes:
    if not path:
        return b""
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise ValueError(f"key_file: cannot read {path}: {error.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ValueError(f"key_file: {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    return data.strip()


@dataclass(frozen=True)
class AdminNoticeSettings:
    """amavisd-new's virus_admin and banned_admin: who hears of each quarantined one."""

    virus: tuple[str, ...] = ()
    banned: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for address in (*self.virus, *self.banned):
            if "@" not in address or any(c.isspace() or c in "<>" for c in address):
                raise ValueError(f"not a mail address: {address!r}")

    def for_category(self, category: str) -> tuple[str, ...]:
        return {"virus": self.virus, "banned": self.banned}.get(category, ())


@dataclass(frozen=True)
class RecipientNoticeSettings:
    """Telling recipients what was held for them: at once, or in a digest."""

    frequency: Frequency = "off"
    categories: tuple[str, ...] = ("spam", "virus", "banned")
    per_recipient: dict[str, Frequency] = field(default_factory=dict)  # address or @domain

    def frequency_for(self, recipient: str) -> Frequency:
        """The recipient's own setting, else their domain's, else `frequency`."""
        lowered = {key.lower(): value for key, value in self.per_recipient.items()}
        address = recipient.lower()
        domain = "@" + address.rpartition("@")[2]
        return lowered.get(address, lowered.get(domain, self.frequency))


@dataclass(frozen=True)
class NoticeSettings:
    """The whole `notices:` section; every kind of notice is off unless configured."""

    sender: str = ""  # the From: of notices; default postmaster@<server.hostname>
    smtp: str = ""  # HOST:PORT; default the next hop
    templates: str = ""  # a directory; default the shipped templates
    admin: AdminNoticeSettings = AdminNoticeSettings()
    recipients: RecipientNoticeSettings = RecipientNoticeSettings()
    links: LinkSettings = LinkSettings()

    def __post_init__(self) -> None:
        if self.sender and ("@" not in self.sender or any(c.isspace() for c in self.sender)):
            raise ValueError(f"sender: not a mail address: {self.sender!r}")
        if self.templates and not Path(self.templates).is_dir():
            raise ValueError(f"templates: {self.templates} is not a directory")
        if self.smtp:
            from contentfilter.addresses import HostPort

            HostPort.parse(self.smtp)
