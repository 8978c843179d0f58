"""The bytes of one decoded part: kept in memory, spooled to disk, or only hashed.

Only parts that will be decoded further (archives, TNEF, BinHex...) need their
bytes once they have been typed; everything else is hashed and counted while it
streams past, so a gigabyte of zeros costs CPU time but no memory. Kept bytes
stay in memory up to `IN_MEMORY_LIMIT` and then move to an unnamed temporary
file (O_TMPFILE on Linux) inside the decoder's private directory.

When the message has a spool directory (the files clamd is to scan), every
archive member is instead written to a named file there as it streams past;
`walker.examine` then keeps or deletes that file once it knows what the part is.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import IO

import libarchive

from contentfilter.filetypes import HEAD_BYTES, FileType, detect

IN_MEMORY_LIMIT = 8 * 1024 * 1024


class Content:
    """A part's size, digest and type by content, and its bytes when they were kept."""

    def __init__(
        self,
        size: int,
        digest: str,
        file_type: FileType,
        data: bytes | None = None,
        file: IO[bytes] | None = None,
        path: str | None = None,
    ) -> None:
        self.size = size
        self.digest = digest
        self.file_type = file_type
        self._data = data
        self._file = file
        self.path = path  # a named spool file holding the bytes, if any

    @classmethod
    def from_bytes(cls, data: bytes) -> Content:
        """Content already in memory (a decoded MIME part); always kept."""
        return cls(len(data), hashlib.sha256(data).hexdigest(), detect(data[:HEAD_BYTES]), data)

    @property
    def kept(self) -> bool:
        return self._data is not None or self._file is not None

    def read_all(self) -> bytes:
        """The whole content; only for kept parts, which are capped in size."""
        if self._data is not None:
            return self._data
        if self._file is None:
            raise ValueError("the bytes of this part were not kept")
        self._file.seek(0)
        return self._file.read()

    @contextmanager
    def archive(self, format_name: str) -> Iterator[libarchive.read.ArchiveRead]:
        """Open the content with libarchive (which raises libarchive.ArchiveError)."""
        if self._data is not None:
            with libarchive.memory_reader(self._data, format_name=format_name) as archive:
                yield archive
        elif self._file is not None:
            self._file.seek(0)
            with libarchive.fd_reader(self._file.fileno(), format_name=format_name) as archive:
                yield archive
        else:
            raise ValueError("the bytes of this part were not kept")

    def release(self) -> None:
        """Drop the bytes (closing an unnamed spool file deletes it; a named one stays)."""
        if self._file is not None:
            self._file.close()
        self._file = None
        self._data = None

    def delete_file(self) -> None:
        """Delete the named spool file, if any."""
        if self.path is not None:
            _unlink(self.path)
            self.path = None


SpoolFile = Callable[[], tuple[str, IO[bytes]]]  # a new named spool file: (path, open file)


class Collector:
    """Builds a Content from blocks: hashes all of them, keeps them if `wanted`.

    Whether to keep is decided from the type of the first HEAD_BYTES; blocks
    seen before that are held until the decision. `directory` is asked for the
    spool directory only when one is needed. With `spool_file`, every block goes
    to that named file instead and the content is always kept there.
    """

    def __init__(
        self,
        wanted: Callable[[FileType], bool],
        directory: Callable[[], str],
        spool_file: SpoolFile | None = None,
    ) -> None:
        self._wanted = wanted
        self._directory = directory
        self._hash = hashlib.sha256()
        self._head = bytearray()
        self._pending: list[bytes] = []
        self._file_type: FileType | None = None
        self._keep = False
        self._memory = io.BytesIO()
        self._file: IO[bytes] | None = None
        self._path: str | None = None
        if spool_file is not None:
            self._path, self._file = spool_file()
        self.size = 0

    def add(self, block: bytes) -> None:
        self.size += len(block)
        self._hash.update(block)
        if self._path is not None:
            assert self._file is not None
            self._file.write(block)
            self._head += block[: HEAD_BYTES - len(self._head)]
        elif self._file_type is None:
            self._pending.append(block)
            self._head += block[: HEAD_BYTES - len(self._head)]
            if len(self._head) >= HEAD_BYTES:
                self._decide()
        elif self._keep:
            self._store(block)

    def finish(self) -> Content:
        if self._path is not None:
            assert self._file is not None
            self._file.flush()
            self._file.seek(0)
            file_type = detect(bytes(self._head))
            content = Content(
                self.size, self._hash.hexdigest(), file_type, file=self._file, path=self._path
            )
            self._file = self._path = None
            return content
        if self._file_type is None:
            self._decide()
        assert self._file_type is not None
        data = self._memory.getvalue() if self._keep and self._file is None else None
        content = Content(self.size, self._hash.hexdigest(), self._file_type, data, self._file)
        self._file = None
        return content

    def abandon(self) -> Content:
        """Reading stopped at a limit: what is known so far, without the bytes or digest."""
        file_type = self._file_type or detect(bytes(self._head))
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            _unlink(self._path)
            self._path = None
        self._pending = []
        self._memory = io.BytesIO()
        return Content(self.size, "", file_type)

    def _decide(self) -> None:
        self._file_type = detect(bytes(self._head))
        self._keep = self._wanted(self._file_type)
        pending, self._pending = self._pending, []
        if self._keep:
            for block in pending:
                self._store(block)

    def _store(self, block: bytes) -> None:
        if self._file is not None:
            self._file.write(block)
            return
        self._memory.write(block)
        if self._memory.tell() > IN_MEMORY_LIMIT:
            # closed by Content.release() or Collector.abandon(), not by a with block
            self._file = tempfile.TemporaryFile(dir=self._directory())  # noqa: SIM115
            self._file.write(self._memory.getbuffer())
            self._memory = io.BytesIO()


def _unlink(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)
