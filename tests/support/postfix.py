"""A private Postfix instance wired as in REFERENCE.md, delivering to a test sink.

    client -> smtpd :smtpd_port -> queue -> smtp-amavis -> filter :filter_port
           -> smtpd :reinject_port (content_filter=) -> queue -> smtp -> sink :sink_port

The filter transport, the reinjection listener and content_filter come from the
snippets we ship (config/postfix/), so the tests run them as an admin would.
Own config_directory, queue_directory and data_directory under `workdir`; no chroot;
Postfix's log goes to `workdir/maillog` through postlogd. The system's Postfix
(/etc/postfix) is neither read nor touched.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import StartupError, free_port, smtp_greeting, tail, wait_until

SNIPPETS = Path(__file__).resolve().parents[2] / "config" / "postfix"


def shipped_master_cf(reinject_port: int) -> str:
    """config/postfix/master.cf.snippet as the admin pastes it, adapted to a test.

    Only the listener port changes (10025 -> a free port) and chroot becomes "n"
    (the test instance has no chroot jail); every -o option is used as shipped.
    """
    lines = []
    for line in (SNIPPETS / "master.cf.snippet").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            fields = line.split()
            if fields[0] == "127.0.0.1:10025":
                fields[0] = f"127.0.0.1:{reinject_port}"
            fields[4] = "n"
            line = " ".join(fields)
        lines.append(line)
    return "\n".join(lines) + "\n"


def shipped_main_cf(filter_port: int) -> str:
    """config/postfix/main.cf.snippet with the filter on `filter_port`, not 10024."""
    text = (SNIPPETS / "main.cf.snippet").read_text()
    return text.replace("[127.0.0.1]:10024", f"[127.0.0.1]:{filter_port}")


MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
# The test's "port 25": XFORWARD lets a test pretend to be a remote client.
127.0.0.1:{smtpd_port} inet n   -       n       -       -       smtpd
    -o smtpd_authorized_xforward_hosts=127.0.0.0/8
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue_directory}
data_directory = {data_directory}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_banner = $myhostname ESMTP Postfix (test instance)
relayhost = [127.0.0.1]:{sink_port}
default_transport = smtp
relay_transport = smtp
smtp_send_xforward_command = yes
smtp_host_lookup = native
smtp_tls_security_level = none
smtpd_tls_security_level = none
append_dot_mydomain = no
biff = no
maillog_file = {maillog}
maillog_file_prefixes = {workdir}
# Retry deferred mail quickly so a test sees the effect of a fixed fault.
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
"""


@dataclass
class Postfix:
    """Handle on the private instance; the queue is inspected with postqueue -c."""

    workdir: Path
    config_directory: Path
    smtpd_port: int  # where tests submit mail
    reinject_port: int  # the "10025" listener the filter relays to
    filter_port: int
    sink_port: int

    @property
    def reinject_address(self) -> str:
        return f"127.0.0.1:{self.reinject_port}"

    @property
    def maillog(self) -> Path:
        return self.workdir / "maillog"

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first match of a regex in Postfix's log, waiting for it to appear."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log_text())
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} not in Postfix's log after {timeout}s:\n" + tail(self.maillog, 30)
                )
            time.sleep(0.2)

    def postqueue(self, *args: str) -> str:
        return subprocess.run(
            ["postqueue", "-c", str(self.config_directory), *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def queue(self) -> list[dict[str, object]]:
        """The queue as `postqueue -j` reports it: one dict per message."""
        return [json.loads(line) for line in self.postqueue("-j").splitlines() if line]

    def flush(self) -> None:
        self.postqueue("-f")

    def wait_for_empty_queue(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.queue():
            if time.monotonic() > deadline:
                raise AssertionError("Postfix queue not empty:\n" + self.postqueue("-p"))
            time.sleep(0.2)

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["postfix", "-c", str(self.config_directory), *args],
            capture_output=True,
            text=True,
        )


@dataclass(frozen=True)
class Variant:
    """Another way of plugging in the filter (Postfix's pipe or spawn pattern).

    `content_filter` replaces the shipped main.cf line; `services` (master.cf lines,
    with {filter_port} and {reinject_port}) is added; `pickup_options` go on the
    pickup service (`-o content_filter=` for a filter that reinjects with sendmail).
    """

    content_filter: str | None = None
    services: str = ""
    pickup_options: str = ""


def _write_config(postfix: Postfix, variant: Variant) -> None:
    etc = postfix.config_directory
    etc.mkdir(parents=True, exist_ok=True)
    main_cf = shipped_main_cf(postfix.filter_port)
    if variant.content_filter is not None:
        main_cf = f"content_filter = {variant.content_filter}\n"
    master_cf = MASTER_CF.format(smtpd_port=postfix.smtpd_port)
    if variant.pickup_options:
        master_cf = master_cf.replace(
            "1       pickup\n", f"1       pickup\n    {variant.pickup_options}\n"
        )
    services = variant.services.replace("{filter_port}", str(postfix.filter_port))
    services = services.replace("{reinject_port}", str(postfix.reinject_port))
    (etc / "main.cf").write_text(
        main_cf
        + MAIN_CF.format(
            queue_directory=postfix.workdir / "spool",
            data_directory=postfix.workdir / "data",
            filter_port=postfix.filter_port,
            sink_port=postfix.sink_port,
            maillog=postfix.maillog,
            workdir=postfix.workdir,
        )
    )
    (etc / "master.cf").write_text(master_cf + shipped_master_cf(postfix.reinject_port) + services)


def _greets_with_220(port: int) -> bool:
    return smtp_greeting("127.0.0.1", port).startswith(b"220")


@contextlib.contextmanager
def start_postfix(
    workdir: Path,
    filter_port: int,
    sink_port: int,
    timeout: float = 60.0,
    variant: Variant = Variant(),
) -> Iterator[Postfix]:
    """Start the instance (`postfix -c DIR start`), yield it, `postfix -c DIR stop`.

    `workdir` must be traversable by the postfix user (Postfix daemons drop
    privileges); it is created with mode 0755.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    postfix = Postfix(
        workdir=workdir,
        config_directory=workdir / "etc",
        smtpd_port=free_port(),
        reinject_port=free_port(),
        filter_port=filter_port,
        sink_port=sink_port,
    )
    _write_config(postfix, variant)
    # Postfix creates the queue subdirectories (and data_directory) itself on start,
    # but the queue directory has to exist.
    (workdir / "spool").mkdir(mode=0o755, exist_ok=True)
    started = postfix.postfix("start")
    if started.returncode != 0:
        raise StartupError(
            "postfix start failed:\n" + started.stdout + started.stderr + tail(postfix.maillog)
        )
    try:
        for port in (postfix.smtpd_port, postfix.reinject_port):
            wait_until(
                functools.partial(_greets_with_220, port),
                f"postfix smtpd on port {port}",
                timeout,
                log=postfix.maillog,
            )
        yield postfix
    finally:
        postfix.postfix("stop")
