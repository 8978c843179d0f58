"""The web page's pure pieces: admin accounts, signed sessions, CSRF, rate limits, the
client address behind a proxy, and the safe preview."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contentfilter.addresses import Network
from contentfilter.errors import ConfigError
from contentfilter.web import admins
from contentfilter.web.preview import preview, sanitise
from contentfilter.web.security import RateLimiter, Session, Signer, client_address

LOOPBACK = (Network.from_config("127.0.0.0/8"),)


def test_admin_password_is_stored_hashed_and_verified(tmp_path: Path) -> None:
    path = tmp_path / "admins"
    admins.set_password(path, "alice", "correct horse")
    text = path.read_text()
    assert text.startswith("alice:$argon2id$") and "correct horse" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert admins.verify(path, "alice", "correct horse")
    assert not admins.verify(path, "alice", "wrong")
    assert not admins.verify(path, "bob", "correct horse")
    assert not admins.verify(path, "alice:x", "correct horse")


def test_changing_a_password_keeps_the_other_accounts(tmp_path: Path) -> None:
    path = tmp_path / "admins"
    admins.set_password(path, "alice", "one")
    admins.set_password(path, "bob", "two")
    admins.set_password(path, "alice", "three")
    assert admins.verify(path, "alice", "three") and not admins.verify(path, "alice", "one")
    assert admins.verify(path, "bob", "two")


@pytest.mark.parametrize("name", ["", "a b", "a:b", "x" * 65, "é"])
def test_bad_admin_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        admins.set_password(tmp_path / "admins", name, "pw")


def test_a_broken_admins_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "admins"
    path.write_text("# comment\nalice:plaintext\n")
    with pytest.raises(ConfigError, match="line 2"):
        admins.verify(path, "alice", "plaintext")


def test_session_cookie_round_trip_and_tampering() -> None:
    signer = Signer()
    session = Session("abc", "alice", 2e9)
    value = signer.dump(session)
    assert signer.load(value) == Session("abc", "alice", 2000000000)
    body, mac = value.split(".")
    assert signer.load(body + "." + mac[:-2] + "AA") is None
    assert Signer().load(value) is None  # another key (a restart)
    assert signer.load(signer.dump(Session("abc", "alice", 1.0))) is None  # expired
    for junk in ("", ".", "a.b.c", "x" * 5000, "e30.AAAA"):
        assert signer.load(junk) is None


def test_csrf_token_is_bound_to_the_session() -> None:
    signer = Signer()
    one, two = Session.anonymous(60), Session.anonymous(60)
    token = signer.csrf_token(one)
    assert signer.csrf_valid(one, token)
    assert not signer.csrf_valid(two, token)
    assert not signer.csrf_valid(one, None) and not signer.csrf_valid(one, "")


def test_rate_limit_counts_per_address() -> None:
    limiter = RateLimiter(3, 3600)
    assert [limiter.allow("192.0.2.1") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("192.0.2.2")


def _scope(peer: str, forwarded: str | None = None) -> dict[str, object]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"client": (peer, 5000), "headers": headers}


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),  # the reverse proxy says who
        ("127.0.0.1", "10.0.0.1, 198.51.100.7", "198.51.100.7"),  # the proxy's own entry
        ("203.0.113.5", "198.51.100.7", "203.0.113.5"),  # not a trusted proxy: ignored
        ("127.0.0.1", "<script>", "127.0.0.1"),
        ("127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_address(_scope(peer, forwarded), LOOPBACK) == expected


HOSTILE_HTML = (
    b"From: spammer@example.net\r\nSubject: Win\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nplain words\r\n"
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<html><head><style>body{background:url(http://tracker.example/bg)}</style>"
    b'<script>document.title="pwned"</script></head>'
    b'<body onload="alert(1)"><p style="color:red">Hello <b>you</b></p>'
    b'<img src="http://tracker.example/pixel.gif"><a href="http://phish.example/login">'
    b"click</a><iframe src=http://evil.example/></iframe>"
    b'<form action="http://evil.example/"><input name=x></form></body></html>\r\n'
    b"--b--\r\n"
)


def test_preview_sanitises_html_and_lists_links_as_text() -> None:
    shown = preview(HOSTILE_HTML)
    assert shown.text is not None and "plain words" in shown.text
    assert shown.html is not None
    for gone in ("script", "onload", "style", "img", "href", "iframe", "form", "http://", "pwned"):
        assert gone not in shown.html
    assert "<b>you</b>" in shown.html and "click" in shown.html
    assert shown.links == ("http://phish.example/login",)
    assert shown.images == 1
    assert shown.headers.startswith("From: spammer@example.net\r\nSubject: Win")


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff\xfe\x00garbage", b"Content-Type: text/html; charset=no-such\r\n\r\n<p>\xe9</p>"],
)
def test_preview_of_hostile_bytes_never_raises(raw: bytes) -> None:
    preview(raw)


def test_sanitise_keeps_tables() -> None:
    assert sanitise('<table><tr><td colspan="2" bgcolor=red>x</td></tr></table>') == (
        '<table><tbody><tr><td colspan="2">x</td></tr></tbody></table>'
    )


def test_the_web_section_refuses_unknown_keys_and_bad_values() -> None:
    from contentfilter.config import from_mapping

    assert from_mapping({"web": {"listen": "127.0.0.1:8080"}}).web.listen.port == 8080
    with pytest.raises(ConfigError, match=r"web\.secure_cookie: unknown key"):
        from_mapping({"web": {"secure_cookie": False}})
    with pytest.raises(ConfigError, match="login_attempts must be positive"):
        from_mapping({"web": {"login_attempts": 0}})


def _request(query: str) -> Any:
    from starlette.requests import Request

    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/admin",
            "headers": [],
            "query_string": query.encode(),
        }
    )


def test_search_form_to_query() -> None:
    from contentfilter.quarantine import State
    from contentfilter.web.admin import query_from

    query = query_from(
        _request(
            "since=2026-11-01&until=2026-11-30&sender=+a@b.example+&state=held"
            "&category=spam&mail_id=&page=3&message_id=%3Cx%40y%3E"
        ),
        50,
    )
    assert query.since == datetime(2026, 11, 1, tzinfo=UTC)
    assert query.until == datetime(2026, 12, 1, tzinfo=UTC)  # the whole last day
    assert (query.sender, query.state, query.category) == ("a@b.example", State.HELD, "spam")
    assert query.mail_id is None and query.message_id == "<x@y>"
    assert (query.limit, query.offset) == (50, 100)
    junk = query_from(_request("since=yesterday&state=nonsense&page=-1&page=0"), 50)
    assert (junk.since, junk.state, junk.offset) == (None, None, 0)


@pytest.mark.parametrize(
    ("imap", "message"),
    [
        ({"server": "127.0.0.1:143"}, "admins: name the IMAP logins"),
        ({"server": "mail.example.com:143", "security": "plain", "admins": ["a"]}, "clear"),
        ({"server": "127.0.0.1:143", "security": "ssl", "admins": ["a"]}, "must be one of"),
        ({"server": "127.0.0.1:993", "ca_file": "ca.pem", "admins": ["a"]}, "absolute path"),
    ],
)
def test_imap_login_settings_are_checked(imap: dict[str, object], message: str) -> None:
    from contentfilter.config import from_mapping

    with pytest.raises(ConfigError, match=message):
        from_mapping({"web": {"imap": imap}})


def test_an_unusable_imap_ca_file_stops_the_page_naming_the_key(tmp_path: Path) -> None:
    from contentfilter.config import from_mapping
    from contentfilter.web import imap

    broken = tmp_path / "ca.pem"
    broken.write_text("not a certificate\n")
    for ca_file in (tmp_path / "missing.pem", broken):
        web = {"imap": {"server": "127.0.0.1:993", "ca_file": str(ca_file), "admins": ["a"]}}
        settings = from_mapping({"web": web}).web.imap
        with pytest.raises(ConfigError, match=r"web\.imap\.ca_file: cannot load CA certificates"):
            imap.tls_context(settings)
