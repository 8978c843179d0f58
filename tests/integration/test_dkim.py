"""DKIM signatures survive the filter: it adds header lines, it never re-encodes.

The key pair is made here with openssl; `dkim.verify` gets the public key from a
stub DNS function, so no network is needed.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from tests.support import messages
from tests.support.client import send
from tests.support.daemons import Clamd, FilterFactory, Spamd
from tests.support.sink import CaptureSink

SELECTOR = b"test"
DOMAIN = b"sender.example"
SIGNED_WITH_SUBJECT = [b"from", b"to", b"subject", b"date", b"message-id"]
SIGNED_WITHOUT_SUBJECT = [b"from", b"to", b"date", b"message-id"]


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(private key PEM, public key DER) of a fresh 2048-bit RSA key."""
    directory: Path = tmp_path_factory.mktemp("dkim")
    private = directory / "private.pem"
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            str(private),
        ],
        check=True,
        capture_output=True,
    )
    public_der = subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return private.read_bytes(), public_der


def dns_for(public_der: bytes) -> Callable[..., bytes]:
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        assert name == SELECTOR + b"._domainkey." + DOMAIN + b".", name
        return record

    return lookup


def signed(message: bytes, private_pem: bytes, headers: list[bytes]) -> bytes:
    signature: bytes = dkim.sign(
        message,
        SELECTOR,
        DOMAIN,
        private_pem,
        canonicalize=(b"simple", b"simple"),
        include_headers=headers,
    )
    return signature + message


def relay(process_address: str, sink: CaptureSink, message: bytes) -> bytes:
    replies = send(process_address, message, messages.SENDER, [messages.RECIPIENT])
    assert replies.data.startswith("250 2.0.0 "), replies
    (arrived,) = sink.wait_for(1)
    return arrived.data


def test_signed_clean_message_still_verifies_after_the_filter(
    filter_factory: FilterFactory,
    sink: CaptureSink,
    clamd: Clamd,
    spamd: Spamd,
    key_pair: tuple[bytes, bytes],
) -> None:
    private_pem, public_der = key_pair
    message = signed(messages.clean(), private_pem, SIGNED_WITH_SUBJECT)
    assert dkim.verify(message, dnsfunc=dns_for(public_der))  # the test's own premise
    process = filter_factory(clamd=clamd.address, spamd=spamd.address)
    arrived = relay(process.address, sink, message)
    messages.added_headers(arrived, message)
    assert dkim.verify(arrived, dnsfunc=dns_for(public_der))


def test_spam_tagged_message_verifies_when_subject_was_not_signed(
    filter_factory: FilterFactory,
    sink: CaptureSink,
    clamd: Clamd,
    spamd: Spamd,
    key_pair: tuple[bytes, bytes],
) -> None:
    """The subject tag changes Subject: only signatures that do not cover it survive.

    (amavisd-new has the same limitation; senders that sign Subject lose the
    signature when their mail is tagged as spam.)
    """
    private_pem, public_der = key_pair
    message = signed(messages.gtube(), private_pem, SIGNED_WITHOUT_SUBJECT)
    process = filter_factory(clamd=clamd.address, spamd=spamd.address)
    arrived = relay(process.address, sink, message)
    assert messages.header_value(arrived, "Subject") == "***SPAM*** Test spam mail (GTUBE)"
    assert messages.header_value(arrived, "X-Spam-Flag") == "YES"
    assert dkim.verify(arrived, dnsfunc=dns_for(public_der))
