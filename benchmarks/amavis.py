"""A private amavisd-new from Debian's package, for side-by-side runs.

Debian's own defaults are loaded first (/etc/amavis/conf.d/01-debian,
20-debian_defaults, 25-amavis_helpers, 30-template_localization: destinies,
quarantine, banned rules, spam levels, the body-size limit for SpamAssassin, the
BerkeleyDB cache, the AM.PDP socket), then only what a private, offline
instance needs is overridden: its own $MYHOME/$TEMPBASE/$db_home, pid and lock
files, a loopback listener on a free port, delivery to the benchmark sink, log
to a file, and the scanners of the mode:

    a: @bypass_virus_checks_maps and @bypass_spam_checks_maps = (1)
       (decoding and banned-file checks still run: that is amavisd-new)
    b: clamd by its zINSTREAM client (the same clamd as everyone), spam bypassed
    c: clamd as in b, plus SpamAssassin:
         spamd   -> Amavis::SpamControl::SpamdClient to the shared spamd (default)
         embedded -> Debian's default, SpamAssassin inside each amavisd child

SpamdClient has spamd's address hard-wired (127.0.0.1:783); the generated config
wraps Amavis::IO::RW->new to send that address to the shared spamd's port.

amavisd runs in the foreground as root and drops to $daemon_user 'amavis'.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import SmtpDaemon, free_port, smtp_daemon

DEBIAN_CONF = Path("/etc/amavis/conf.d")
DAEMON_USER = "amavis"
# Debian's conf.d files, less 05-domain_id/05-node_id (we set the names) and
# 15-av_scanners/15-content_filter_mode/50-user (we set scanners and bypasses).
DEBIAN_FILES = ("01-debian", "20-debian_defaults", "25-amavis_helpers", "30-template_localization")
# amavisd-new hashes quarantine files into one subdirectory per first character of
# the mail_id and races creating them under load: make them up front.
MAIL_ID_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass(frozen=True)
class AmavisSettings:
    """What differs between the benchmark's amavisd-new instances."""

    mode: str  # a, b or c
    sink_port: int
    clamd: str  # clamd's unix socket path, or its TCP port
    spamd_port: int
    spam: str = "spamd"  # or "embedded"
    max_servers: int | None = None  # None: Debian's default (2)


def config_text(settings: AmavisSettings, home: Path, port: int) -> str:
    """The amavisd.conf for one instance."""
    lines = [
        "use strict;",
        f"$MYHOME = '{home}';",
        "$mydomain = 'example.com';",
        "$myhostname = 'amavis.example.com';",
        "@local_domains_acl = ( '.example.com' );",
        # Debian's defaults, with $MYHOME already ours (20-debian_defaults uses it).
        "include_config_files("
        + ", ".join(f"'{DEBIAN_CONF / name}'" for name in DEBIAN_FILES)
        + ");",
        f"$daemon_user = '{DAEMON_USER}'; $daemon_group = '{DAEMON_USER}';",
        '$TEMPBASE = "$MYHOME/tmp";',
        '$db_home = "$MYHOME/db";',
        '$helpers_home = "$MYHOME/var";',
        '$QUARANTINEDIR = "$MYHOME/virusmails";',
        '$pid_file = "$MYHOME/amavisd.pid";',
        '$lock_file = "$MYHOME/amavisd.lock";',
        '$unix_socketname = "$MYHOME/amavisd.sock";',  # 25-amavis_helpers' AM.PDP socket
        "$inet_socket_bind = '127.0.0.1';",
        f"$inet_socket_port = {port};",
        "@inet_acl = qw(127.0.0.1);",
        f"$forward_method = 'smtp:[127.0.0.1]:{settings.sink_port}';",
        "$notify_method = $forward_method;",
        "$DO_SYSLOG = 0;",
        '$LOGFILE = "$MYHOME/amavis.log";',
        "$log_level = 0;",
        # Offline: no network tests in SpamAssassin, nothing else that looks things up.
        "$sa_local_tests_only = 1;",
        "$enable_dkim_verification = 0;",
        "$enable_dkim_signing = 0;",
        "$os_fingerprint_method = undef;",
        "@av_scanners_backup = ();",
        "@av_scanners = (['ClamAV-clamd', \\&ask_daemon,",
        f"  ['{{}}/*', ['clamd:{_clamd_endpoint(settings.clamd)}']],",
        "  qr/\\bOK$/m, qr/\\bFOUND$/m, qr/^.*?: (?!Infected Archive)(.*) FOUND$/m ]);",
    ]
    if settings.max_servers is not None:
        lines.append(f"$max_servers = {settings.max_servers};")
    if settings.mode == "a":
        lines += ["@bypass_virus_checks_maps = (1);", "@bypass_spam_checks_maps = (1);"]
    elif settings.mode == "b":
        lines += ["@bypass_spam_checks_maps = (1);"]
    elif settings.spam == "spamd":
        lines += _spamd_client(settings.spamd_port)
    lines.append("1;")
    return "\n".join(lines) + "\n"


def _spamd_client(spamd_port: int) -> list[str]:
    return [
        "@spam_scanners = ( ['SpamdClient', 'Amavis::SpamControl::SpamdClient'] );",
        "require Amavis::IO::RW;",
        "{ no warnings 'redefine';",
        "  my $connect = \\&Amavis::IO::RW::new;",
        "  *Amavis::IO::RW::new = sub {",
        "    my($class, $specs, @rest) = @_;",
        "    my @list = ref $specs ? @$specs : ($specs);",
        "    if (grep { $_ eq '127.0.0.1:783' } @list) {",
        f"      $specs = ['127.0.0.1:{spamd_port}'];",
        "    }",
        "    $connect->($class, $specs, @rest);",
        "  };",
        "}",
    ]


def _prepare_home(home: Path) -> None:
    if home.exists():
        shutil.rmtree(home)
    for sub in ("tmp", "db", "var", "virusmails"):
        (home / sub).mkdir(parents=True)
    for character in MAIL_ID_CHARACTERS:
        (home / "virusmails" / character).mkdir()
    for path in [home, *home.rglob("*")]:
        shutil.chown(path, DAEMON_USER, DAEMON_USER)


@contextlib.contextmanager
def start_amavis(
    workdir: Path, settings: AmavisSettings, timeout: float = 180.0
) -> Iterator[SmtpDaemon]:
    """amavisd-new in the foreground on a free port; stopped on exit."""
    home = workdir / f"amavis-{settings.mode}"
    _prepare_home(home)
    port = free_port()
    conf = workdir / f"amavisd-{settings.mode}.conf"
    conf.write_text(config_text(settings, home, port))
    argv = ["/usr/sbin/amavisd", "-c", str(conf), "foreground"]
    log = workdir / f"amavisd-{settings.mode}.stderr"
    with smtp_daemon("amavisd-new", argv, port, log, timeout, cwd=home, forks=True) as amavis:
        yield amavis


def _clamd_endpoint(clamd: str) -> str:
    """amavisd-new's clamd: protocol takes a socket path or host:port."""
    return clamd if clamd.startswith("/") else f"127.0.0.1:{clamd}"
