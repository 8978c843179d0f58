"""`contentfilter scan`'s default envelope sender: the one address in From, else <>."""

from __future__ import annotations

import pytest

from contentfilter.cli import _from_address


@pytest.mark.parametrize(
    ("header", "sender"),
    [
        (b"From: Alice Example <alice@example.org>\r\n", "alice@example.org"),
        (b"From: bob@example.com\r\n", "bob@example.com"),
        (b"From: =?UTF-8?Q?J=C3=B6rg?=\r\n <joerg@example.de>\r\n", "joerg@example.de"),
        (b"From: a@example.org, b@example.org\r\n", ""),  # two authors: no single sender
        (b"From: a@example.org\r\nFrom: b@example.org\r\n", ""),  # two From fields
        (b"From: undisclosed\r\n", ""),
        (b"From: <>\r\n", ""),
        (b"From: \x00\xff@\x01\r\n", ""),
        (b"Subject: no From at all\r\n", ""),
    ],
)
def test_default_sender(header: bytes, sender: str) -> None:
    assert _from_address(header + b"\r\nbody\r\n") == sender
