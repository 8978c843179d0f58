"""A safe look at a quarantined message: headers as text, the text part, the HTML part
sanitised, the links it holds as text.

The HTML goes through nh3 (the Rust `ammonia` sanitiser) with links and images
removed: nothing the page shows can load anything from elsewhere or run a script, and
the Content-Security-Policy would refuse it anyway. Everything here is bounded: a
message is hostile bytes.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import Message
from html.parser import HTMLParser

import nh3

MAX_HEADERS = 64 * 1024  # characters of the header section shown
MAX_TEXT = 256 * 1024  # characters of a text part shown
MAX_LINKS = 200
# what the sanitised HTML may keep: structure and text, no links, images, forms, media
ALLOWED_TAGS = frozenset(nh3.ALLOWED_TAGS) - {"a", "img", "area", "map"}
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}


@dataclass(frozen=True, slots=True)
class Preview:
    headers: str  # the header section as text
    text: str | None  # the first text/plain part, decoded
    html: str | None  # the first text/html part, sanitised
    links: tuple[str, ...]  # link targets found in the HTML, as text
    images: int  # images the HTML would have loaded (not shown)


def preview(raw: bytes) -> Preview:
    """The preview of a message's bytes; never raises for anything in them."""
    end = _header_end(raw)
    headers = raw[:end].decode("utf-8", "replace")[:MAX_HEADERS]
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    text_part = _first(message, "text/plain")
    html_part = _first(message, "text/html")
    text = _decoded(text_part)[:MAX_TEXT] if text_part is not None else None
    html = links = None
    images = 0
    if html_part is not None:
        source = _decoded(html_part)[: 4 * MAX_TEXT]
        found = _Links()
        found.feed(source)
        found.close()
        html, links, images = sanitise(source), found.links, found.images
    return Preview(_printable(headers), text, html, tuple(links or ()), images)


def sanitise(html: str) -> str:
    """HTML with only harmless tags and attributes left: no script, style, link or image."""
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=set(),
        link_rel=None,
        strip_comments=True,
    )[:MAX_TEXT]


def _header_end(raw: bytes) -> int:
    for separator in (b"\r\n\r\n", b"\n\n"):
        found = raw.find(separator)
        if found >= 0:
            return found
    return len(raw)


def _first(message: Message, content_type: str) -> Message | None:
    for count, part in enumerate(message.walk()):
        if count > 1000:
            break
        if part.get_content_type() == content_type and not part.get_filename():
            return part
    return None


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return payload.decode("latin-1")


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() or c in "\r\n\t" else "\ufffd" for c in text)


class _Links(HTMLParser):
    """Collects link targets and counts images, to show them as text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img" or values.get("background"):
            self.images += 1
        href = values.get("href")
        if tag in ("a", "area") and href and len(self.links) < MAX_LINKS:
            self.links.append(_printable(href.strip())[:500])
