"""A private fuglu 1.7 (from PyPI, in its own venv), for side-by-side runs.

fuglu is installed by benchmarks/run into a cache directory
(`~/.cache/contentfilter-bench/fuglu-venv`, built with Debian's /usr/bin/python3),
never into the project's venv. Each instance gets its own configuration
directory under the work directory, an SMTP listener on a free loopback port and
the benchmark sink as its outgoing host, so it does the same work as the others:

    a: no plugins (fuglu's SMTP in, reinjection out)
    b: its ClamAV plugin (ClamavPlugin), on the shared clamd's TCP port
    c: ClamAV as in b, plus its SpamAssassin plugin (SAPlugin) on the shared spamd,
       with the same size limit as contentfilter's (512,000 bytes) and no per-user
       preferences (contentfilter sends no spamd User either)

Everything that would reach out is off: no version check, no bounces (a virus is
deleted: fuglu's default virus action, like amavisd-new's D_DISCARD), no
prependers or appenders, the log in the work directory. It runs in the
foreground (`python -m fuglu -f`) with its default thread backend.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import SmtpDaemon, free_port, smtp_daemon

VERSION = "1.7.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "contentfilter-bench"
VENV = CACHE / "fuglu-venv"
SPAMD_MAX_SIZE = 512_000  # contentfilter's spamassassin.max_size default (spamc's -s)


@dataclass(frozen=True)
class FugluSettings:
    """What differs between the benchmark's fuglu instances."""

    mode: str  # a, b or c
    sink_port: int
    clamd: str  # clamd's unix socket path, or its TCP port (the plugin's `port`)
    spamd_port: int


def python() -> Path:
    """fuglu's interpreter; FileNotFoundError when benchmarks/run has not installed it."""
    interpreter = VENV / "bin" / "python"
    if not interpreter.exists():
        raise FileNotFoundError(f"fuglu not installed in {VENV} (benchmarks/run installs it)")
    return interpreter


def config_text(settings: FugluSettings, home: Path, port: int) -> str:
    """fuglu.conf for one instance: the keys of fuglu's fuglu.conf.dist that matter here."""
    plugins = {"a": "", "b": "clamav", "c": "clamav,spamassassin"}[settings.mode]
    return f"""\
[main]
identifier=bench
daemonize=0
user=
group=
plugindir=
plugins={plugins}
prependers=
appenders=
bindaddress=127.0.0.1
incomingport={port}
outgoinghost=127.0.0.1
outgoingport={settings.sink_port}
tempdir={home / "tmp"}
trashdir=
disablebounces=1
controlport={home / "control.sock"}
versioncheck=0
mrtgdir=

[performance]
backend=thread

[virus]
defaultvirusaction=DELETE

[spam]
defaultlowspamaction=DUNNO
defaulthighspamaction=DUNNO

[ClamavPlugin]
host=127.0.0.1
port={settings.clamd}
timeout=30
maxsize=22000000
problemaction=DEFER

[SAPlugin]
host=127.0.0.1
port={settings.spamd_port}
timeout=30
maxsize={SPAMD_MAX_SIZE}
strip_oversize=0
peruserconfig=False
problemaction=DEFER
"""


def logging_text(home: Path) -> str:
    """A logging.conf that writes fuglu's log to the work directory (INFO)."""
    return f"""\
[loggers]
keys=root

[handlers]
keys=logfile

[formatters]
keys=plain

[logger_root]
level=INFO
handlers=logfile

[handler_logfile]
class=FileHandler
level=NOTSET
formatter=plain
args=({str(home / "fuglu.log")!r},)

[formatter_plain]
format=%(asctime)s %(name)s %(levelname)s %(message)s
"""


@contextlib.contextmanager
def start_fuglu(
    workdir: Path, settings: FugluSettings, timeout: float = 120.0
) -> Iterator[SmtpDaemon]:
    """fuglu in the foreground on a free port; stopped on exit."""
    home = workdir / f"fuglu-{settings.mode}"
    for sub in ("tmp", "conf.d"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = home / "fuglu.conf"
    conf.write_text(config_text(settings, home, port))
    logging_conf = home / "logging.conf"
    logging_conf.write_text(logging_text(home))
    argv = [
        str(python()),
        "-m",
        "fuglu",
        "--foreground",
        "--config",
        str(conf),
        "--configdir",
        str(home / "conf.d"),
        "--logconfig",
        str(logging_conf),
        "--pidfile",
        str(home / "fuglu.pid"),
        "--baseloglevel",
        "INFO",
    ]
    stderr_path = home / "fuglu.stderr"
    with smtp_daemon("fuglu", argv, port, stderr_path, timeout, cwd=home, forks=True) as fuglu:
        yield fuglu
