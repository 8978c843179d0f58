"""The suite runs on Debian 12's own interpreter, as the admin's filter does."""

from __future__ import annotations

import os
import sys


def test_runs_on_the_system_python() -> None:
    # scripts/test builds .venv from /usr/bin/python3; a venv from another python3
    # (pyenv, a newer 3.11) once hid a bug of Debian's 3.11.2 from the whole suite.
    assert os.path.realpath(sys.executable) == os.path.realpath("/usr/bin/python3")
