"""`contentfilter status` and `check-config --ping` against the real clamd, spamd and
next hop, and stopped ones."""

from __future__ import annotations

import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from contentfilter.status import describe_version
from tests.support.client import send
from tests.support.daemons import Clamd, FilterFactory, Spamd, filter_command
from tests.support.messages import EICAR, message
from tests.support.net import free_port
from tests.support.sink import CaptureSink


def status(
    *arguments: str, quarantine: str = "{enabled: false}"
) -> subprocess.CompletedProcess[str]:
    """`contentfilter status` with a config whose `quarantine:` section is `quarantine`
    (by default off: the system's quarantine is none of the tests' business)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config:
        config.write(f"quarantine: {quarantine}\n")
        config.flush()
        return subprocess.run(
            [*filter_command(), "status", "-c", config.name, *arguments],
            capture_output=True,
            text=True,
            timeout=120,
        )


def test_everything_up_prints_one_line_each_and_exits_0(
    clamd: Clamd, spamd: Spamd, sink: CaptureSink
) -> None:
    result = status("--clamd", clamd.address, "--spamd", spamd.address, "--next-hop", sink.address)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"clamd {clamd.address}: up: ClamAV ")
    assert lines[1].startswith(f"spamd {spamd.address}: up: SPAMD/")
    assert lines[1].endswith("PONG")
    assert lines[2].startswith(f"next hop {sink.address}: up: 220 ")


def test_a_stopped_clamd_and_a_stopped_next_hop_are_named_and_exit_1(spamd: Spamd) -> None:
    stopped_clamd = f"127.0.0.1:{free_port()}"
    stopped_hop = f"127.0.0.1:{free_port()}"
    result = status("--clamd", stopped_clamd, "--spamd", spamd.address, "--next-hop", stopped_hop)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"clamd {stopped_clamd}: DOWN: connection refused",
        result.stdout.splitlines()[1],
        f"next hop {stopped_hop}: DOWN: connection refused",
    ]
    assert ": up: " in result.stdout.splitlines()[1]


def test_a_stopped_spamd_is_down_but_not_critical_when_mail_passes_without_it(
    clamd: Clamd, sink: CaptureSink
) -> None:
    stopped_spamd = f"127.0.0.1:{free_port()}"
    result = status("--clamd", clamd.address, "--spamd", stopped_spamd, "--next-hop", sink.address)
    assert result.returncode == 0, result.stdout
    assert f"spamd {stopped_spamd}: down (not critical): connection refused" in result.stdout


def test_the_signature_age_comes_from_clamds_version() -> None:
    now = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
    text = describe_version("ClamAV 1.0.7/27470/Sat Nov 29 09:00:00 2026", now)
    assert text == "ClamAV 1.0.7, signatures 27470 from 2026-11-29 09:00, 36 h old"
    assert describe_version("ClamAV 1.0.7", now) == "ClamAV 1.0.7, signature date not reported"


def check_config_ping(
    tmp_path: Path, clamd: str, spamd: str, next_hop: str
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "contentfilter.yaml"
    config.write_text(
        f"next_hop:\n  address: {next_hop!r}\n"
        f"scanners:\n  clamav:\n    servers: [{clamd!r}]\n"
        f"  spamassassin:\n    server: {spamd!r}\n  banned: {{}}\n"
        f"quarantine:\n  directory: {str(tmp_path / 'quarantine')!r}\n"
    )
    return subprocess.run(
        [*filter_command(), "check-config", "-c", str(config), "--ping"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def ping_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(("OK ", "FAIL "))]


def test_check_config_ping_says_ok_for_each_key_when_everything_answers(
    tmp_path: Path, clamd: Clamd, spamd: Spamd, sink: CaptureSink
) -> None:
    result = check_config_ping(tmp_path, clamd.address, spamd.address, sink.address)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"# {tmp_path / 'contentfilter.yaml'}: OK.")
    lines = ping_lines(result)
    assert len(lines) == 4, lines
    assert lines[0].startswith(f"OK scanners.clamav.servers[0]: {clamd.address}: ClamAV ")
    assert lines[1].startswith(f"OK scanners.spamassassin.server: {spamd.address}: SPAMD/")
    assert lines[2] == (
        f"OK quarantine.directory: {tmp_path / 'quarantine'}: empty:"
        " made when the first message is kept"
    )
    assert lines[3].startswith(f"OK next_hop.address: {sink.address}: 220 ")
    assert not (tmp_path / "quarantine").exists()  # checking made nothing


def test_check_config_ping_names_the_key_of_each_stopped_daemon_and_fails(
    tmp_path: Path, clamd: Clamd
) -> None:
    stopped_spamd = f"127.0.0.1:{free_port()}"
    stopped_hop = f"127.0.0.1:{free_port()}"
    result = check_config_ping(tmp_path, clamd.address, stopped_spamd, stopped_hop)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = ping_lines(result)
    assert [lines[1], lines[3]] == [
        f"FAIL scanners.spamassassin.server: {stopped_spamd}: connection refused",
        f"FAIL next_hop.address: {stopped_hop}: connection refused",
    ]
    missing = tmp_path / "no-such-dir" / "clamd.ctl"
    result = check_config_ping(tmp_path, str(missing), stopped_spamd, stopped_hop)
    assert ping_lines(result)[0] == (
        f"FAIL scanners.clamav.servers[0]: {missing}: no such file or directory"
    )


def test_status_counts_what_the_quarantine_holds_and_names_a_store_that_is_down(
    filter_factory: FilterFactory, clamd: Clamd, sink: CaptureSink
) -> None:
    process = filter_factory(clamd=clamd.address)
    reply = send(
        process.address, message("EICAR", EICAR + b"\r\n"), "a@sender.example", ["b@x.test"]
    )
    assert reply.data.startswith("250 "), reply  # discarded, a copy kept
    directory = process.quarantine_directory
    assert directory is not None
    result = status(
        "--clamd",
        "off",
        "--spamd",
        "off",
        "--next-hop",
        sink.address,
        quarantine=f"{{directory: {str(directory)!r}}}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == (
        f"quarantine {directory}: up: 1 messages (virus 1), 1 copies held, 0.0 MB"
    )
    stopped = f"postgresql://contentfilter@127.0.0.1:{free_port()}/quarantine"
    result = status(
        "--clamd",
        "off",
        "--spamd",
        "off",
        "--next-hop",
        sink.address,
        quarantine=f"{{database: {stopped!r}, timeout: 5}}",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stdout.splitlines()[0]
    assert line.startswith(f"quarantine {stopped}: DOWN: "), line
    assert "refused" in line or "111" in line, line
