"""A private Dovecot IMAP server (Debian's dovecot-imapd) on a free loopback port, with
its own passwd file: the web page's IMAP login is tested against a real server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port, stop_process, wait_until

DOVECOT = "/usr/sbin/dovecot"


@dataclass
class Dovecot:
    port: int
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _config(directory: Path, port: int) -> str:
    return f"""
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
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
    port = 0
  }}
}}
"""


@contextmanager
def start_dovecot(users: dict[str, str]) -> Iterator[Dovecot]:
    """Dovecot with these users (name -> password) until the block ends."""
    directory = Path(tempfile.mkdtemp(prefix="contentfilter-dovecot-"))
    directory.chmod(0o755)  # its login processes run as dovenull
    port = free_port()
    (directory / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))
    (directory / "passwd").chmod(0o644)
    config = directory / "dovecot.conf"
    config.write_text(_config(directory, port))
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
        yield Dovecot(port, log)
    finally:
        stop_process(process)
        shutil.rmtree(directory, ignore_errors=True)
