"""A private Dovecot IMAP server (Debian's dovecot-imapd) on a free loopback port, with
its own passwd file: the web page's IMAP login is tested against a real server. With
certificates it also offers STARTTLS on that port and IMAP over TLS on a second one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.certificates import Certificates
from tests.support.net import free_port, stop_process, wait_until

DOVECOT = "/usr/sbin/dovecot"


@dataclass
class Dovecot:
    port: int  # IMAP, with STARTTLS when the server has certificates
    log: Path
    tls_port: int = 0  # IMAP over TLS (imaps); 0: none

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tls_address(self) -> str:
        assert self.tls_port, "this Dovecot has no certificate"
        return f"127.0.0.1:{self.tls_port}"

    def logins(self) -> list[str]:
        """The log's lines of successful logins (they say `TLS` for a TLS connection)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if "imap-login: Info: Login: " in line]


def _tls_settings(certificates: Certificates | None) -> str:
    if certificates is None:
        return "ssl = no"
    return f"""ssl = yes
ssl_cert = <{certificates.certificate}
ssl_key = <{certificates.key}
ssl_dh = </usr/share/dovecot/dh.pem"""


def _config(directory: Path, port: int, tls_port: int, certificates: Certificates | None) -> str:
    return f"""
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
protocols = imap
listen = 127.0.0.1
{_tls_settings(certificates)}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {directory}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={directory}/home/%u
}}
mail_location = maildir:{directory}/mail/%u
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
"""


@contextmanager
def start_dovecot(
    users: dict[str, str], certificates: Certificates | None = None
) -> Iterator[Dovecot]:
    """Dovecot with these users (name -> password) until the block ends; with
    `certificates`, STARTTLS and IMAP over TLS with them."""
    directory = Path(tempfile.mkdtemp(prefix="contentfilter-dovecot-"))
    directory.chmod(0o755)  # its login processes run as dovenull
    port, tls_port = free_port(), free_port() if certificates else 0
    (directory / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))
    (directory / "passwd").chmod(0o644)
    config = directory / "dovecot.conf"
    config.write_text(_config(directory, port, tls_port, certificates))
    log = directory / "dovecot.log"
    with open(directory / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)], stdout=stderr, stderr=stderr, start_new_session=True
        )

    def greets() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            return connection.recv(64).startswith(b"* OK")

    try:
        wait_until(greets, "dovecot", 30, process, directory / "stderr.log")
        yield Dovecot(port, log, tls_port)
    finally:
        stop_process(process)
        shutil.rmtree(directory, ignore_errors=True)
