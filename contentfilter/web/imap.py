"""Admin login against the site's IMAP server (the users' mail passwords): the server
says whether the password is right, we keep nothing of it.

Only the logins listed in `web.imap.admins` are tried; the connection is TLS
(`tls`, or `starttls` before the password is sent) unless the server is on loopback
and `plain` is configured. Any failure (refused, timeout, bad certificate) is a failed
login, logged.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import ssl

from contentfilter.web.settings import ImapLogin

log = logging.getLogger("contentfilter.web")


def verify(settings: ImapLogin, name: str, password: str) -> bool:
    """Whether the IMAP server takes `name` and `password` (blocking: run in a thread)."""
    if settings.server is None or name not in settings.admins or not password:
        return False
    host, port = settings.server.host, settings.server.port
    try:
        if settings.security == "tls":
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                host, port, ssl_context=ssl.create_default_context(), timeout=settings.timeout
            )
        else:
            client = imaplib.IMAP4(host, port, timeout=settings.timeout)
            if settings.security == "starttls":
                client.starttls(ssl.create_default_context())
    except (OSError, imaplib.IMAP4.error) as error:
        log.warning("IMAP login for %s: cannot reach %s: %s", name, settings.server, error)
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
