"""A private clamsmtp (Debian's package) for side-by-side runs in the ClamAV mode.

clamsmtpd is an SMTP proxy: it takes the message, writes it to its temp
directory, asks clamd to SCAN that file (so it needs clamd on the same host, on
its unix socket), and relays clean mail to its OutAddress, here the benchmark
sink. A virus is dropped (its default `Action: drop`), as amavisd-new and
contentfilter discard by default. It has no banned-file or header checks: it
takes part in mode b only.

It runs in the foreground (`-d 0`) as root, with a config file under the work
directory and a free loopback port: the system's clamsmtp service and its
/etc/clamsmtpd.conf are neither used nor started.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.support.net import SmtpDaemon, free_port, smtp_daemon

CLAMSMTPD = Path("/usr/sbin/clamsmtpd")
MAX_CONNECTIONS = 64  # clamsmtpd's default; above every concurrency of the run


def config_text(home: Path, port: int, sink_port: int, clamd_socket: str) -> str:
    return "\n".join(
        [
            f"OutAddress: 127.0.0.1:{sink_port}",
            f"Listen: 127.0.0.1:{port}",
            f"ClamAddress: {clamd_socket}",
            f"TempDirectory: {home / 'tmp'}",
            f"MaxConnections: {MAX_CONNECTIONS}",
            "Action: drop",
            "TimeOut: 180",
            "",
        ]
    )


@contextlib.contextmanager
def start_clamsmtp(
    workdir: Path, sink_port: int, clamd_socket: str, timeout: float = 30.0
) -> Iterator[SmtpDaemon]:
    """clamsmtpd in the foreground on a free port; stopped on exit."""
    home = workdir / "clamsmtp"
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = home / "clamsmtpd.conf"
    conf.write_text(config_text(home, port, sink_port, clamd_socket))
    argv = [str(CLAMSMTPD), "-d", "0", "-f", str(conf), "-p", str(home / "clamsmtpd.pid")]
    with smtp_daemon("clamsmtpd", argv, port, home / "clamsmtpd.log", timeout) as clamsmtp:
        yield clamsmtp
