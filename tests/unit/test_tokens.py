"""Link tokens: bound to one message, one recipient and one action; signed; expiring."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from contentfilter import config
from contentfilter.errors import ConfigError, TokenError
from contentfilter.quarantine import tokens

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def made(action: str = "release", recipient: str = "bob@example.com", ttl: float = 3600) -> str:
    return tokens.issue(
        KEY, mail_id="3kQhc2Lx0a9T", recipient=recipient, action=action, ttl=ttl, now=NOW
    )


def test_a_token_says_what_it_allows_until_when() -> None:
    claim = tokens.verify(KEY, made(), action="release", recipient="Bob@Example.com", now=NOW)
    assert (claim.mail_id, claim.recipient, claim.action) == (
        "3kQhc2Lx0a9T",
        "bob@example.com",
        "release",
    )
    assert claim.expires == NOW + timedelta(hours=1)
    assert claim.claim_key == "token:" + claim.token_id


def test_every_token_is_a_new_one() -> None:
    first, second = made(), made()
    assert first != second
    assert (
        tokens.verify(KEY, first, now=NOW).token_id != tokens.verify(KEY, second, now=NOW).token_id
    )


def test_a_token_fits_in_a_link() -> None:
    token = made(recipient="someone.with.a.long.name@subdomain.example.com")
    assert len(token) < 250
    assert all(c.isalnum() or c in "-_." for c in token)


@pytest.mark.parametrize(
    ("seconds_later", "valid"), [(0, True), (3599, True), (3600, False), (86400, False)]
)
def test_expiry(seconds_later: int, valid: bool) -> None:
    when = NOW + timedelta(seconds=seconds_later)
    if valid:
        tokens.verify(KEY, made(), now=when)
        return
    with pytest.raises(TokenError) as caught:
        tokens.verify(KEY, made(), now=when)
    assert caught.value.kind == "expired"
    assert "expired" in str(caught.value)


def test_wrong_action_is_refused() -> None:
    with pytest.raises(TokenError) as caught:
        tokens.verify(KEY, made(action="delete"), action="release", now=NOW)
    assert caught.value.kind == "wrong-action"


def test_wrong_recipient_is_refused() -> None:
    with pytest.raises(TokenError) as caught:
        tokens.verify(KEY, made(), recipient="mallory@example.com", now=NOW)
    assert caught.value.kind == "wrong-recipient"


def _tampered(token: str, change: object) -> str:
    version, payload, signature = token.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert callable(change)
    change(fields)
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return f"{version}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{signature}"


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.__setitem__(2, "mallory@example.com"),  # another recipient
        lambda f: f.__setitem__(3, "delete"),  # another action
        lambda f: f.__setitem__(1, "otherMailId1"),  # another message
        lambda f: f.__setitem__(4, f[4] + 86400 * 365),  # a longer life
    ],
    ids=["recipient", "action", "message", "expiry"],
)
def test_a_changed_token_is_forged(change: object) -> None:
    with pytest.raises(TokenError) as caught:
        tokens.verify(KEY, _tampered(made(), change), now=NOW)
    assert caught.value.kind == "forged"


def test_another_key_is_forged() -> None:
    with pytest.raises(TokenError) as caught:
        tokens.verify(OTHER_KEY, made(), now=NOW)
    assert caught.value.kind == "forged"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v1",
        "v1..",
        "v2.abc.def",
        "v1.abc.d*f",
        "v1.\u00e9\u00e9.aaaa",
        "v1." + "A" * 5000 + ".x",
        "v1.%%%.$$$",
        "../../etc/passwd",
    ],
)
def test_garbage_is_refused_without_a_traceback(token: str) -> None:
    with pytest.raises(TokenError) as caught:
        tokens.verify(KEY, token, now=NOW)
    assert caught.value.kind in ("malformed", "forged")


def test_a_signed_payload_of_the_wrong_shape_is_malformed() -> None:
    # Someone holding the key could sign anything; the reader still never crashes.
    payload = base64.urlsafe_b64encode(b'{"not": "a list"}').rstrip(b"=").decode()
    signed = f"v1.{payload}"
    signature = base64.urlsafe_b64encode(tokens._signature(KEY, signed)).rstrip(b"=").decode()
    with pytest.raises(TokenError) as caught:
        tokens.verify(KEY, f"{signed}.{signature}", now=NOW)
    assert caught.value.kind == "malformed"


def test_issue_refuses_a_short_key_and_unknown_actions() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        tokens.issue(b"short", mail_id="m", recipient="a@b", action="release", ttl=60)
    with pytest.raises(ValueError, match="action"):
        tokens.issue(KEY, mail_id="m", recipient="a@b", action="launch", ttl=60)
    with pytest.raises(ValueError, match="one message"):
        tokens.issue(KEY, mail_id="", recipient="a@b", action="release", ttl=60)
    tokens.issue(KEY, mail_id="", recipient="a@b", action="list", ttl=60)


# --- the key in the config ------------------------------------------------------------


def test_key_file_is_read_at_start_up(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    key_file = tmp_path / "link.key"
    key_file.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    loaded = config.from_mapping(
        {"notices": {"links": {"public_url": "https://q.example", "key_file": str(key_file)}}}
    )
    assert loaded.notices.links.secret == b"0123456789abcdef0123456789abcdef"
    assert loaded.notices.links.enabled
    assert "0123456789abcdef" not in config.dump(loaded)


@pytest.mark.parametrize(
    ("links", "words"),
    [
        ({"public_url": "https://q.example"}, "needs key or key_file"),
        ({"key": "short"}, "at least 32 bytes"),
        ({"key": "x" * 40, "key_file": "/etc/k"}, "not both"),
        ({"key_file": "/nonexistent/link.key"}, "cannot read"),
        ({"public_url": "ftp://q.example", "key": "x" * 40}, "http"),
        ({"ttl": 0}, "ttl"),
        ({"kee": "x"}, "unknown key"),
    ],
)
def test_link_settings_are_checked_naming_the_key(links: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.from_mapping({"notices": {"links": links}})
    assert caught.value.key.startswith("notices.links")
    assert words in str(caught.value)
    assert "x" * 40 not in str(caught.value)
