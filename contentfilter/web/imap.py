"""Admin login against the site's IMAP server (the users' mail passwords): the server
says whether the password is right, we keep nothing of it.

Only the logins listed in `web.imap.admins` are tried; the connection is TLS
(`tls`, or `starttls` before the password is sent) unless the server is on loopback
and `plain` is configured. Any failure (refused, timeout, bad certificate) is a failed
login, logged.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import logging
import ssl

from contentfilter.errors import ConfigError
from contentfilter.web.settings import ImapLogin

log = logging.getLogger("contentfilter.web")


@functools.lru_cache(maxsize=4)
def tls_context(settings: ImapLogin) -> ssl.SSLContext:
    """What the server's certificate is checked with: the CAs of `ca_file`, or the
    system's, and its name against `server`. Called at start-up, so a bad file stops
    the page there, naming the key."""
    try:
        return ssl.create_default_context(cafile=settings.ca_file or None)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError("web.imap.ca_file", f"cannot load CA certificates: {reason}") from None


def verify(settings: ImapLogin, name: str, password: str) -> bool:
    """Whether the IMAP server takes `name` and `password` (blocking: run in a thread)."""
    if settings.server is None or name not in settings.admins or not password:
        return False
    try:
        client = _connect(settings)
    except ssl.SSLCertVerificationError as error:
        log.warning(
            "IMAP login for %s: the certificate of %s is not trusted (%s); web.imap.ca_file"
            " names the CA that signs it",
            name,
            settings.server,
            error.verify_message,
        )
        return False
    except (OSError, imaplib.IMAP4.error) as error:
        log.warning("IMAP login for %s: no connection to %s: %s", name, settings.server, error)
        return False
    try:
        client.login(name, password)
        return True
    except imaplib.IMAP4.error:
        return False
    except (OSError, ValueError) as error:  # ValueError: a password that is not ASCII
        log.warning("IMAP login for %s: %s", name, error)
        return False
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()


def _connect(settings: ImapLogin) -> imaplib.IMAP4:
    """A connection ready for LOGIN: TLS from the start, or after STARTTLS (a server
    that does not offer it is an error: the password never goes in clear)."""
    assert settings.server is not None
    host, port = settings.server.host, settings.server.port
    if settings.security == "tls":
        context = tls_context(settings)
        return imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=settings.timeout)
    client = imaplib.IMAP4(host, port, timeout=settings.timeout)
    if settings.security == "starttls":
        try:
            client.starttls(tls_context(settings))
        except BaseException:
            with contextlib.suppress(OSError):  # a failed handshake closed it already
                client.shutdown()
            raise
    return client
