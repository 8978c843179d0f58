"""A message's private spool directory: the files the decoder extracted, for clamd.

The filter process names the directory (a random name in the decoder's private
temp directory) before decoding starts; the decoder makes it (0700, never one
that exists already) when it writes the first file, so a message that yields
no file (most small mail) costs no directory at all. The pipeline removes it when
the message is done, so what a worker wrote before it crashed can still be listed
and scanned. Each file (0600) is named after the
part it holds and why it was kept: `p005-leaf`, `p004-undecoded`; a member that
was still being read is `p004.2-partial` (the second member of p004).
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile

from contentfilter.model import ExtractedFile

REASONS = ("leaf", "undecoded", "partial")
FEW_FILES = 16  # files the pipeline removes on the event loop (more: in a thread)


class Spool:
    """The spool directory of one message; `remove()` may be called more than once."""

    def __init__(self, parent: str = "") -> None:
        name = f"contentfilter-parts-{secrets.token_hex(12)}"
        self.path = os.path.join(parent or tempfile.gettempdir(), name)
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

    def remove_few(self, most: int = FEW_FILES) -> bool:
        """Remove the directory at once if it holds at most `most` files (True), which
        costs a system call or a few; False (nothing removed) for `remove()` to do."""
        self.removed = True
        try:
            os.rmdir(self.path)  # the usual case: never made, or nothing in it
            return True
        except FileNotFoundError:
            return True
        except OSError:
            pass
        try:
            with os.scandir(self.path) as entries:
                files = [entry.path for entry in entries if entry.is_file(follow_symlinks=False)]
            if len(files) > most:
                return False
            for path in files:
                os.unlink(path)
            os.rmdir(self.path)
        except OSError:  # a directory in it, a race: the thorough way
            return False
        return True


def file_name(part_id: str, reason: str) -> str:
    return f"{part_id}-{reason}"


def make_directory(path: str) -> None:
    """The spool directory, only we can enter. One that exists already is used only if
    it is a private directory of ours (as `Spool` names none, a caller's own)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        found = os.lstat(path)
        if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
            raise
        if stat.S_IMODE(found.st_mode) & 0o077:
            raise


def create_file(path: str) -> int:
    """A new file only we can read: O_EXCL, never through a symlink."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
