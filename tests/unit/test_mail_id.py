"""mail_ids are typed as command arguments (`contentfilter quarantine show ID`)."""

from __future__ import annotations

import re

import pytest

from contentfilter import model


def test_a_mail_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter(["-starts-dash", "Ab3_-xYz9Q0k"])
    monkeypatch.setattr("contentfilter.model.secrets.token_urlsafe", lambda _n: next(drawn))
    assert model.new_mail_id() == "Ab3_-xYz9Q0k"


def test_mail_ids_are_twelve_url_safe_characters() -> None:
    ids = {model.new_mail_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{11}", i) for i in ids)
