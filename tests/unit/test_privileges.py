"""The private temp directory's checks (run as root by the suite)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from contentfilter import privileges
from contentfilter.errors import ConfigError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")

NOBODY = privileges.Identity("nobody", 65534, "nogroup", 65534)


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    squatted = tmp_path / "tmp"
    squatted.mkdir()
    (squatted / "planted").write_bytes(b"x")
    os.chown(squatted, 65534, 65534)
    with pytest.raises(ConfigError) as refused:
        privileges.prepare_temp_directory(str(squatted), None)
    assert refused.value.key == "decoder.temp_directory"
    assert "belongs to uid 65534, not to the filter's uid 0" in str(refused.value)
    assert (squatted / "planted").exists()  # nothing of theirs is touched


def test_a_directory_of_roots_is_handed_to_the_user_the_daemon_drops_to(tmp_path: Path) -> None:
    made_by_root = tmp_path / "tmp"
    made_by_root.mkdir(mode=0o755)
    assert privileges.prepare_temp_directory(str(made_by_root), NOBODY) == 0
    info = made_by_root.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o700)


def test_a_missing_parent_is_named_with_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        privileges.prepare_temp_directory(str(tmp_path / "no" / "tmp"), None)
    assert str(refused.value).startswith("decoder.temp_directory: cannot create ")
    assert "No such file or directory" in str(refused.value)


@pytest.mark.parametrize(
    ("user", "group", "key", "words"),
    [
        ("root", "", "daemon.user", "is root: the filter refuses to run as root"),
        ("nobody", "root", "daemon.group", "is root's group"),
        ("nobody", "no-such-group-here", "daemon.group", "no such group"),
        ("no-such-user-here", "", "daemon.user", "no such user"),
    ],
)
def test_refusals_name_their_key(user: str, group: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        privileges.target(user, group, allow_root=False)
    assert refused.value.key == key
    assert words in str(refused.value)


def test_allow_root_keeps_root_and_the_default_group_is_the_users_own() -> None:
    assert privileges.target("root", "", allow_root=True) is None
    assert privileges.target("nobody", "", allow_root=False) == NOBODY
