"""Local admin accounts of the web page: a file of `name:argon2-hash` lines.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second
recommended parameter set). The file is written mode 0600 by `contentfilter web
add-admin` and read at every login, so an added account works without a restart.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from contentfilter.errors import ConfigError

NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
MAX_PASSWORD = 1024  # characters; argon2 takes any length, a form field is bounded
_hasher = PasswordHasher()
# verified against when the name is unknown, so that a wrong name costs the same time
_DUMMY_HASH = _hasher.hash("not a password of anyone")


def read_accounts(path: Path) -> dict[str, str]:
    """name -> hash; {} when the file does not exist. ConfigError for a broken line."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError("web.admins_file", f"cannot read {path}: {error}") from None
    accounts = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not NAME.fullmatch(name) or not hashed.startswith("$argon2"):
            raise ConfigError("web.admins_file", f"{path}, line {number}: expected name:$argon2...")
        accounts[name] = hashed
    return accounts


def verify(path: Path, name: str, password: str) -> bool:
    """Whether `password` is the one of the account `name` (same cost either way)."""
    hashed = read_accounts(path).get(name) if NAME.fullmatch(name) else None
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _hasher.verify(hashed or _DUMMY_HASH, password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


def set_password(path: Path, name: str, password: str) -> None:
    """Add the account or change its password; the file is replaced atomically, 0600."""
    if not NAME.fullmatch(name):
        raise ValueError("an admin name is 1-64 letters, digits and . _ @ + -")
    if not password or len(password) > MAX_PASSWORD:
        raise ValueError(f"a password is 1-{MAX_PASSWORD} characters")
    accounts = read_accounts(path)
    accounts[name] = _hasher.hash(password)
    text = "".join(f"{n}:{h}\n" for n, h in sorted(accounts.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
