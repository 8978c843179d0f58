"""A spool directory on a full disk: a 451 naming the cause, and nothing relayed.

The decoder's spool is put on a tmpfs of 64 KB (the suite runs as root, as CI does);
a message whose attachment does not fit makes the decoder worker hit ENOSPC.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import mimegen as g
from tests.support.client import send
from tests.support.daemons import FilterFactory
from tests.support.sink import CaptureSink


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount_point)],
        check=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_spool_disk_is_a_451_naming_it(
    filter_factory: FilterFactory, sink: CaptureSink, tiny_disk: Path
) -> None:
    config = f"decoder:\n  temp_directory: {tiny_disk}\nscanners:\n  banned: {{}}\n"
    process = filter_factory(config_text=config)
    big = g.with_attachments(g.attachment(b"%PDF-1.4\n" + os.urandom(200_000), "report.pdf"))
    replies = send(process.address, big, "a@example.org", ["b@example.com"])
    assert replies.data.startswith("451 4.3.1 Error in processing, id="), replies
    assert replies.data.endswith("insufficient disk space (No space left on device)")
    small = g.with_attachments(g.attachment(b"%PDF-1.4\n" + b"x" * 1000, "report.pdf"))
    assert send(process.address, small, "a@example.org", ["b@example.com"]).data.startswith(
        "250 2.0.0 "
    )
    assert len(sink.wait_for(1)) == 1
    assert os.listdir(tiny_disk) == []  # the spool directories are gone
