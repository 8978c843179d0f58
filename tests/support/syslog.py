"""A syslog daemon for the tests: a Unix datagram socket whose messages are written to
a file the way rsyslog writes /var/log/mail.log (`Nov 30 21:05:01 host amavis[PID]: ...`)."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

_PRIORITY = re.compile(rb"^<\d{1,3}>")


class SyslogFile:
    """Receives on `socket_path`, appends each message to `log_path` (RFC 3164 style)."""

    def __init__(self, directory: Path, hostname: str = "mx") -> None:
        self.socket_path = directory / "log.sock"
        self.log_path = directory / "mail.log"
        self.hostname = hostname
        self.received = 0
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self.socket_path))
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        with open(self.log_path, "ab") as log:
            while True:
                try:
                    data = self._socket.recv(65536)
                except OSError:
                    return
                text = _PRIORITY.sub(b"", data).rstrip(b"\x00\n")
                stamp = time.strftime("%b %e %H:%M:%S").encode()
                log.write(stamp + b" " + self.hostname.encode() + b" " + text + b"\n")
                log.flush()
                with self._lock:
                    self.received += 1

    def append(self, line: str) -> None:
        """A line from another program (a later Postfix line, say)."""
        with open(self.log_path, "a") as log:
            log.write(line + "\n")

    def lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def close(self) -> None:
        self._socket.close()
