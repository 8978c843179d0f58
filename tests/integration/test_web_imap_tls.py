"""The web page's IMAP login over TLS (imaps) and STARTTLS, against a private Dovecot
whose certificate is signed by a CA the test made: trusted only when
`web.imap.ca_file` names that CA; otherwise the login fails before the password is
sent, and the log says why."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from contentfilter.config import from_mapping
from contentfilter.web import imap
from contentfilter.web.settings import ImapLogin
from tests.support.certificates import Certificates, make_certificates
from tests.support.dovecot import Dovecot, start_dovecot
from tests.support.net import free_port, wait_until
from tests.support.webpage import Client, start_web

BOSS, PASSWORD = "boss@example.com", "imap password"
PREFIX = "/quarantine"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def dovecot(certificates: Certificates) -> Iterator[Dovecot]:
    with start_dovecot({BOSS: PASSWORD}, certificates) as server:
        yield server


def _settings(address: str, security: str, ca_file: Path | None) -> ImapLogin:
    imap_section = {"server": address, "security": security, "admins": [BOSS]}
    if ca_file is not None:
        imap_section["ca_file"] = str(ca_file)
    return from_mapping({"web": {"imap": imap_section}}).web.imap


def _address(dovecot: Dovecot, security: str) -> str:
    return dovecot.tls_address if security == "tls" else dovecot.address


def _unauthenticated(dovecot: Dovecot) -> int:
    """How many connections Dovecot logged as ended without a login attempt."""
    return dovecot.log.read_text(errors="replace").count("no auth attempts")


def _refused_before_the_password(dovecot: Dovecot, settings: ImapLogin) -> None:
    """The login fails, and Dovecot logs the connection's end with no login attempt."""
    logins, unauthenticated = len(dovecot.logins()), _unauthenticated(dovecot)
    assert not imap.verify(settings, BOSS, PASSWORD)

    def ended() -> bool:
        return _unauthenticated(dovecot) > unauthenticated

    wait_until(ended, "dovecot's log of the refused connection", 30)
    assert len(dovecot.logins()) == logins


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_an_admin_logs_in_over_tls_with_the_ca_of_the_config(
    dovecot: Dovecot, certificates: Certificates, security: str
) -> None:
    settings = _settings(_address(dovecot, security), security, certificates.ca)
    before = len(dovecot.logins())
    assert imap.verify(settings, BOSS, PASSWORD)
    wait_until(lambda: len(dovecot.logins()) > before, "dovecot's log of the login", 30)
    assert ", TLS," in dovecot.logins()[-1] and f"user=<{BOSS}>" in dovecot.logins()[-1]
    assert not imap.verify(settings, BOSS, "wrong password")


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_a_certificate_the_filter_does_not_trust_is_refused_and_logged(
    dovecot: Dovecot, security: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(_address(dovecot, security), security, None)  # the system's CAs
    with caplog.at_level(logging.WARNING, logger="contentfilter.web"):
        _refused_before_the_password(dovecot, settings)
    [line] = caplog.messages
    assert f"IMAP login for {BOSS}: the certificate of {settings.server} is not trusted" in line
    assert "unable to get local issuer certificate" in line and "web.imap.ca_file" in line


def test_starttls_to_a_server_without_it_sends_no_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with start_dovecot({BOSS: PASSWORD}) as plain:  # no certificate: no STARTTLS
        settings = _settings(plain.address, "starttls", None)
        with caplog.at_level(logging.WARNING, logger="contentfilter.web"):
            _refused_before_the_password(plain, settings)
        assert f"no connection to {settings.server}: TLS not supported by server" in caplog.text


@pytest.mark.parametrize("trusted", [True, False], ids=["ca_file", "system CAs"])
def test_the_login_page_over_imaps(
    dovecot: Dovecot, certificates: Certificates, tmp_path: Path, trusted: bool
) -> None:
    port = free_port()
    ca_file = f', ca_file: "{certificates.ca}"' if trusted else ""
    config = tmp_path / "contentfilter.yaml"
    config.write_text(
        f"""
quarantine: {{directory: "{tmp_path / "quarantine"}"}}
notices:
  links: {{public_url: "http://127.0.0.1:{port}{PREFIX}/", key: "{"k" * 40}"}}
web:
  admins_file: "{tmp_path / "admins"}"
  secure_cookies: false
  imap: {{server: "{dovecot.tls_address}", security: tls, admins: [{BOSS}]{ca_file}}}
"""
    )
    with start_web(config, tmp_path, port) as web:
        client = Client(web.base)
        form = client.get(PREFIX + "/admin/login").csrf()
        login = {"csrf": form, "name": BOSS, "password": PASSWORD}
        answer = client.post(PREFIX + "/admin/login", login)
        if trusted:
            assert answer.status == 303 and answer.headers["location"] == PREFIX + "/admin"
        else:
            assert answer.status == 403 and "Wrong name or password" in answer.text
            assert "is not trusted" in web.log.read_text()
