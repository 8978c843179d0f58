"""A message's private spool directory: the files the decoder extracted, for clamd.

The directory is made by the filter process (0700) before decoding starts and
removed by the pipeline when the message is done, so what a worker wrote before
it crashed can still be listed and scanned. Each file (0600) is named after the
part it holds and why it was kept: `p005-leaf`, `p004-undecoded`; a member that
was still being read is `p004.2-partial` (the second member of p004).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from contentfilter.model import ExtractedFile

REASONS = ("leaf", "undecoded", "partial")


class Spool:
    """The spool directory of one message; `remove()` may be called more than once."""

    def __init__(self, parent: str = "") -> None:
        self.path = tempfile.mkdtemp(prefix="contentfilter-parts-", dir=parent or None)
        self.removed = False

    def listing(self) -> tuple[ExtractedFile, ...]:
        """The files in the directory now, in part order (after a worker died)."""
        found = []
        try:
            names = os.listdir(self.path)
        except OSError:
            return ()
        for name in names:
            part_id, _, reason = name.rpartition("-")
            path = os.path.join(self.path, name)
            if reason not in REASONS or not part_id:
                continue
            try:
                size = os.lstat(path).st_size
            except OSError:
                continue
            found.append(ExtractedFile(part_id.partition(".")[0], path, size, reason))
        return tuple(sorted(found, key=lambda f: (len(f.part_id), f.part_id, f.path)))

    def remove(self) -> None:
        self.removed = True
        shutil.rmtree(self.path, ignore_errors=True)


def file_name(part_id: str, reason: str) -> str:
    return f"{part_id}-{reason}"


def create_file(path: str) -> int:
    """A new file only we can read: O_EXCL, never through a symlink."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
