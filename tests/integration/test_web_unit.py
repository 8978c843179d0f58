"""The shipped systemd unit of the web page: systemd-analyze accepts it and its
exposure score stays low (systemd need not run: both read the file)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support.daemons import filter_command

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "config" / "contentfilter-web.service"
# 0 is locked down, 10 unprotected; the unit scores 1.4 with systemd 252. What is left
# is what the page needs: IP and Unix sockets, the host's network and users.
MAX_EXPOSURE = 2.0


def _analyze(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    program = shutil.which("systemd-analyze")
    assert program, "systemd-analyze is missing"
    text = UNIT.read_text().replace(
        "/opt/contentfilter/.venv/bin/contentfilter", filter_command()[0]
    )
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/opt/contentfilter", str(REPO)))
    return subprocess.run(
        [program, *arguments, str(unit)], capture_output=True, text=True, timeout=120, check=False
    )


def test_systemd_analyze_verify_accepts_the_web_unit(tmp_path: Path) -> None:
    done = _analyze(tmp_path, "verify")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_web_units_exposure_score_stays_low(tmp_path: Path) -> None:
    done = _analyze(tmp_path, "security", "--offline=true")
    score = re.search(
        r"Overall exposure level for contentfilter-web\.service: ([\d.]+)", done.stdout
    )
    assert score, done.stdout + done.stderr
    assert float(score.group(1)) <= MAX_EXPOSURE


def test_the_web_unit_runs_contentfilter_web_unprivileged() -> None:
    text = UNIT.read_text()
    assert "ExecStart=/opt/contentfilter/.venv/bin/contentfilter web -c " in text
    assert "User=contentfilter" in text and "CapabilityBoundingSet=\n" in text
