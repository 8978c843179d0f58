"""Who the daemon runs as, and its private temp directory.

`contentfilter serve` started as root (for a listener below port 1024, or by an
init script) binds its listeners, then drops to `daemon.user` and `daemon.group`
with no supplementary groups, before it reads a byte of mail; it refuses to keep
running as root unless told to (`serve --allow-root`, `daemon.allow_root: true`).
Started as another user (systemd's `User=`, setpriv), it stays that user.

Every file the filter writes for a message (the decoder's spool of extracted parts
for clamd, the decoder's overflow files) is 0600 in a per-message directory inside
one private directory (0700, ours), `decoder.temp_directory`. The daemon empties it
at start (what a killed run left); each message's directory goes when the message
is done.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import stat
from dataclasses import dataclass, replace

from contentfilter.config import Config
from contentfilter.errors import ConfigError

log = logging.getLogger("contentfilter")

# `serve`'s private directory when decoder.temp_directory is "" (under systemd's
# PrivateTmp= it is the unit's own /tmp)
DEFAULT_TEMP_DIRECTORY = "/tmp/contentfilter"
TEMP_KEY = "decoder.temp_directory"
ALLOW_ROOT = "serve --allow-root or daemon.allow_root: true"


@dataclass(frozen=True)
class Start:
    """What `prepare` found: the configuration to serve with (its temp directory
    filled in), whom to drop to after binding, and the leftovers it removed."""

    config: Config
    run_as: Identity | None
    leftovers: int

    def drop(self) -> None:
        """Call once the listeners are bound: become `run_as`, and log who we are."""
        drop(self.run_as)
        log.info(
            "running as %s; temp directory %s (%d leftovers removed)",
            *(current(), self.config.decoder.temp_directory, self.leftovers),
        )


def prepare(config: Config) -> Start:
    """Before `serve` binds: whom it will run as (ConfigError naming `daemon.user` or
    `daemon.group`) and its private temp directory made and emptied."""
    daemon = config.daemon
    run_as = target(daemon.user, daemon.group, daemon.allow_root)
    config = with_temp_directory(config)
    leftovers = prepare_temp_directory(config.decoder.temp_directory, run_as)
    return Start(config, run_as, leftovers)


def with_temp_directory(config: Config) -> Config:
    """`config` with serve's temp directory filled in (a reload keeps the same one)."""
    decoder = replace(config.decoder, temp_directory=temp_directory(config.decoder.temp_directory))
    return replace(config, decoder=decoder)


@dataclass(frozen=True)
class Identity:
    """A user and group to run as."""

    user: str
    uid: int
    group: str
    gid: int

    def __str__(self) -> str:
        return f"user {self.user} (uid {self.uid}), group {self.group} (gid {self.gid})"


def target(user: str, group: str, allow_root: bool) -> Identity | None:
    """Whom `serve` is to drop to after binding; None to stay as it was started.

    ConfigError (naming `daemon.user` or `daemon.group`) when the user or group does
    not exist, or is root without `allow_root`.
    """
    if os.geteuid() != 0 or allow_root:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(
            "daemon.user",
            f"no such user on this system (create it: useradd --system --user-group {user};"
            f" or run as root with {ALLOW_ROOT})",
            user,
        ) from None
    gid, group_name = _group(group, entry.pw_gid)
    if entry.pw_uid == 0:
        raise ConfigError(
            "daemon.user",
            f"is root: the filter refuses to run as root unless told to ({ALLOW_ROOT})",
            user,
        )
    if gid == 0:
        raise ConfigError(
            "daemon.group", f"is root's group: refused unless told to ({ALLOW_ROOT})", group_name
        )
    return Identity(entry.pw_name, entry.pw_uid, group_name, gid)


def _group(group: str, primary_gid: int) -> tuple[int, str]:
    if not group:  # the user's own group
        try:
            return primary_gid, grp.getgrgid(primary_gid).gr_name
        except KeyError:
            return primary_gid, str(primary_gid)
    try:
        return grp.getgrnam(group).gr_gid, group
    except KeyError:
        raise ConfigError("daemon.group", "no such group on this system", group) from None


def drop(identity: Identity | None) -> None:
    """Become `identity` for good: supplementary groups cleared, real, effective and
    saved ids set, so that nothing can take root back. None: nothing to do."""
    if identity is None:
        return
    os.setgroups([])
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # cannot happen on Linux; never serve mail if it did
        raise OSError("could not drop root privileges")
    os.environ["HOME"] = pwd.getpwuid(identity.uid).pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = identity.user


def current() -> Identity:
    """Whom this process runs as (for the log)."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return Identity(user, uid, group, gid)


def temp_directory(configured: str) -> str:
    """`serve`'s private directory: the configured one, or DEFAULT_TEMP_DIRECTORY."""
    return configured or DEFAULT_TEMP_DIRECTORY


def prepare_temp_directory(path: str, owner: Identity | None) -> int:
    """Make `path` the daemon's private directory (0700, owned by `owner` or by us)
    and empty it; the number of leftover entries removed.

    The parent must exist. A symlink, or a directory that belongs to someone else
    (another user could have made it in a shared /tmp), is refused with a
    ConfigError naming decoder.temp_directory; run as root, a directory of root's is
    handed over to `owner`.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        raise ConfigError(TEMP_KEY, f"cannot create {path}: {error.strerror}", path) from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        reason = "a symlink" if os.path.islink(path) else error.strerror
        raise ConfigError(TEMP_KEY, f"{path} is not a usable directory ({reason})", path) from None
    try:
        _take(fd, path, owner)
        return _empty(fd, path)
    finally:
        os.close(fd)


def _take(fd: int, path: str, owner: Identity | None) -> None:
    uid = os.geteuid() if owner is None else owner.uid
    found = os.fstat(fd).st_uid
    if found != uid and not (found == 0 and owner is not None):
        raise ConfigError(
            TEMP_KEY,
            f"{path} belongs to uid {found}, not to the filter's uid {uid}: a private directory"
            " must be the filter's own (remove it, or chown it)",
            path,
        )
    if owner is not None:
        os.fchown(fd, owner.uid, owner.gid)
    os.fchmod(fd, 0o700)


def _empty(fd: int, path: str) -> int:
    removed = 0
    for name in os.listdir(fd):
        try:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                shutil.rmtree(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
            removed += 1
        except OSError as error:
            log.warning("cannot remove %s from %s: %s", name, path, error.strerror)
    return removed
