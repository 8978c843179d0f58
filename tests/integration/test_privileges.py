"""`serve` started as root drops to daemon.user after binding, refuses to stay root
unless told to, and keeps every message's files 0600 in its private directory."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from tests.support.client import Replies, send
from tests.support.daemons import Clamd, FilterFactory, Spamd, children, filter_command
from tests.support.messages import eicar_attachment, gtube
from tests.support.net import HangingServer, wait_until
from tests.support.sink import CaptureSink

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")

NOBODY = 65534  # Debian's nobody and nogroup


def ids(pid: int) -> dict[str, list[str]]:
    """The Uid, Gid and Groups lines of /proc/PID/status (real, effective, saved, fs)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {name: fields[name].split() for name in ("Uid", "Gid", "Groups")}


@pytest.fixture
def shared_dir(daemon_dir: Path) -> Path:
    """A directory nobody can reach (the test's tmp_path is root's alone)."""
    path = daemon_dir / f"privileges-{uuid.uuid4().hex}"
    path.mkdir(mode=0o755)
    return path


def test_serve_started_as_root_runs_as_nobody_and_filters_with_the_real_scanners(
    filter_factory: FilterFactory,
    sink: CaptureSink,
    clamd: Clamd,
    spamd: Spamd,
    shared_dir: Path,
) -> None:
    temp, quarantine = shared_dir / "tmp", shared_dir / "quarantine"
    quarantine.mkdir(mode=0o700)
    os.chown(quarantine, NOBODY, NOBODY)  # as setup makes it for the filter's user
    process = filter_factory(
        clamd=clamd.address,
        spamd=spamd.address,
        config_text=f"daemon: {{user: nobody}}\ndecoder: {{temp_directory: '{temp}'}}\n"
        f"quarantine: {{directory: '{quarantine}'}}\n",
        as_root=False,
    )
    # the supervisor keeps root (to bind a new listener below 1024 on a reload) and
    # reads no mail; its worker, which does, is nobody
    [worker] = children(process.process.pid)
    assert ids(worker) == {
        "Uid": [str(NOBODY)] * 4,
        "Gid": [str(NOBODY)] * 4,  # nobody's own group: nogroup
        "Groups": [],  # root's supplementary groups are gone
    }
    infected = send(process.address, eicar_attachment(), "alice@sender.example", ["bob@x.example"])
    assert infected.data.startswith("250 2.7.0 Ok, discarded, id="), infected
    assert "INFECTED: Eicar-Test-Signature" in infected.data
    kept = list(quarantine.rglob("*"))
    assert kept and {f.stat().st_uid for f in kept} == {NOBODY}  # the store is the user's
    decoders = children(worker)
    assert decoders, "the extracted attachment went through a decoder process"
    assert all(ids(pid)["Uid"] == [str(NOBODY)] * 4 for pid in decoders)
    spam = send(process.address, gtube(), "alice@sender.example", ["bob@x.example"])
    assert spam.data.startswith("250 2.0.0 Ok, id="), spam
    [arrived] = sink.wait_for(1)
    assert b"Subject: ***SPAM*** " in arrived.data
    assert stat.S_IMODE(temp.stat().st_mode) == 0o700
    assert (temp.stat().st_uid, temp.stat().st_gid) == (NOBODY, NOBODY)
    assert list(temp.iterdir()) == []  # each message's files went with it
    assert process.stop() == 0


def run_serve(tmp_path: Path, config_text: str, *flags: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "contentfilter.yaml"
    config.write_text(config_text)
    return subprocess.run(
        [*filter_command(), "serve", "-c", str(config), "--metrics", "off", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_root_is_refused_unless_allowed_and_the_message_names_the_flag(tmp_path: Path) -> None:
    done = run_serve(tmp_path, "daemon: {user: root}\nserver: {listen: ['127.0.0.1:1']}\n")
    assert done.returncode == 2
    assert done.stderr.startswith("contentfilter: config error: daemon.user: is root: ")
    assert "serve --allow-root or daemon.allow_root: true" in done.stderr


def test_a_user_that_does_not_exist_is_named_with_its_key(tmp_path: Path) -> None:
    done = run_serve(tmp_path, "daemon: {user: no-such-user-here}\n")
    assert done.returncode == 2
    assert "config error: daemon.user: no such user on this system" in done.stderr
    assert "'no-such-user-here'" in done.stderr


def test_leftovers_in_the_temp_directory_are_removed_at_start(
    filter_factory: FilterFactory, tmp_path: Path
) -> None:
    temp = tmp_path / "private"
    (temp / "contentfilter-parts-old" / "deeper").mkdir(parents=True)
    (temp / "contentfilter-parts-old" / "p002-leaf").write_bytes(b"left by a killed run")
    (temp / "stray-file").write_bytes(b"x")
    outside = tmp_path / "not-ours"
    outside.write_bytes(b"must survive")
    (temp / "link-out").symlink_to(outside)
    temp.chmod(0o755)
    process = filter_factory(extra_args=["--temp-directory", str(temp)])
    assert list(temp.iterdir()) == []
    assert stat.S_IMODE(temp.stat().st_mode) == 0o700
    assert outside.read_bytes() == b"must survive"  # a symlink is removed, not followed
    assert "(3 leftovers removed)" in process.log_text()


def test_a_temp_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    done = run_serve(tmp_path, "", "--allow-root", "--temp-directory", str(tmp_path / "link"))
    assert done.returncode == 2
    assert "config error: decoder.temp_directory: " in done.stderr
    assert "is not a usable directory (a symlink)" in done.stderr


def test_spool_files_are_0600_in_a_0700_directory_and_gone_after_the_message(
    filter_factory: FilterFactory, sink: CaptureSink, tmp_path: Path
) -> None:
    temp = tmp_path / "private"
    config = (
        "scanners:\n  clamav: {servers: ['%s'], timeout: 20, on_failure: unchecked}\n"
        f"decoder: {{temp_directory: '{temp}'}}\n"
    )
    with HangingServer() as hanging:  # holds the message while we look at its files
        process = filter_factory(clamd=None, config_text=config % hanging.address)
        answers: list[Replies] = []
        client = threading.Thread(
            target=lambda: answers.append(
                send(process.address, eicar_attachment(), "alice@x.example", ["bob@x.example"])
            )
        )
        client.start()

        def spooled() -> list[Path]:
            return [f for d in temp.iterdir() for f in d.iterdir()]

        wait_until(lambda: len(spooled()) > 0, "the attachment to be spooled", 30)
        [message_dir] = list(temp.iterdir())
        assert stat.S_IMODE(message_dir.stat().st_mode) == 0o700
        assert {stat.S_IMODE(f.stat().st_mode) for f in spooled()} == {0o600}
        client.join(60)
    assert answers and answers[0].data.startswith("250 2.0.0 Ok, id="), answers
    assert list(temp.iterdir()) == []
    assert process.stop() == 0
    assert len(sink.wait_for(1)) == 1
