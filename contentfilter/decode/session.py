"""The state of decoding one message: the part tree being built and what is left of the limits."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import IO

from contentfilter.decode import spool
from contentfilter.decode.content import Content, SpoolFile
from contentfilter.decoder_settings import DecoderLimits
from contentfilter.model import ExtractedFile, Part

MAX_PROBLEMS = 20  # more would only repeat themselves in the log line


@dataclass(slots=True)
class Node:
    """A part while it is being decoded; frozen into a `Part` at the end."""

    part_id: str
    level: tuple[int, ...]
    declared_type: str | None = None
    names: list[str] = field(default_factory=list)
    size: int = 0
    digest: str = ""
    file_type: str = ""
    short_types: tuple[str, ...] = ()
    attributes: str = ""
    children: list[Node] = field(default_factory=list)
    undecoded: bool = False  # decoding stopped at a limit or at damage inside it
    members_started: int = 0  # members read from it so far (names partial spool files)

    def add_names(self, *names: str) -> None:
        for name in names:
            # amavisd-new turns tabs and newlines into spaces: one part, one log line
            name = " ".join(name.replace("\0", "").splitlines()).replace("\t", " ")
            if name and name not in self.names:
                self.names.append(name)

    def add_attribute(self, letters: str) -> None:
        for letter in letters:
            if letter not in self.attributes:
                self.attributes += letter

    def set_content(self, content: Content) -> None:
        self.size = content.size
        self.digest = content.digest
        self.file_type = content.file_type.description
        self.short_types = content.file_type.short_types

    @property
    def where(self) -> str:
        """How problems name the part: `p003 (invoice.zip)`."""
        return f"{self.part_id} ({self.names[0]})" if self.names else self.part_id

    def freeze(self) -> Part:
        return Part(
            part_id=self.part_id,
            level=self.level,
            declared_type=self.declared_type,
            detected_type=self.short_types[0] if self.short_types else None,
            names=tuple(self.names),
            size=self.size,
            digest=self.digest,
            children=tuple(child.freeze() for child in self.children),
            detected_types=self.short_types,
            file_type=self.file_type,
            attributes=self.attributes,
        )


@dataclass(slots=True)
class Member:
    """One thing a decoder found inside a part: an archive member, a TNEF attachment..."""

    names: tuple[str, ...] = ()
    content: Content | None = None  # None: could not be read (encrypted, over a limit)
    declared_type: str | None = None
    attributes: str = ""  # amavisd-new's letters: U undecipherable, C encrypted
    problem: str | None = None  # why it could not be checked; the part is named after it


Members = Generator[Member, None, None]  # what a decoder yields


class Session:
    """Limits left, problems found and the private spool directory of one decode.

    With `spool` (the path of this message's spool directory, made here with the
    first file), the bytes of every leaf part and of every part whose decoding
    stopped are written there for the virus scanners (`extracted`), within the
    message's quota.
    """

    def __init__(self, limits: DecoderLimits, message_size: int, spool: str | None = None) -> None:
        self.limits = limits
        self.spool = spool
        self.extracted: list[ExtractedFile] = []
        self.spooled_bytes = 0
        self.quota = limits.quota(message_size)
        self.quota_left = self.quota
        self.files = 0
        self._last_id = 0
        self.problems: list[str] = []
        self._dropped = 0
        self.files_exhausted = False
        self.quota_exhausted = False
        self._directory: str | None = None
        self._spool_made = False

    def new_root(self) -> Node:
        self.files = self._last_id = 1
        return Node("p001", (1,))

    def new_child(self, parent: Node) -> Node | None:
        """A new part under `parent`, or None when `max_files` is used up."""
        if not self.count_file(parent):
            return None
        self._last_id += 1
        child = Node(f"p{self._last_id:03d}", (*parent.level, len(parent.children) + 1))
        parent.children.append(child)
        return child

    def count_file(self, parent: Node) -> bool:
        """Count one more file (directories in archives count too, as in amavisd-new)."""
        if self.files >= self.limits.max_files:
            if not self.files_exhausted:
                self.files_exhausted = True
                self.problem(f"Maximum number of files ({self.limits.max_files}) exceeded", parent)
            return False
        self.files += 1
        return True

    def charge(self, nbytes: int, node: Node) -> bool:
        """Take `nbytes` from the quota; False (and a problem) when it does not cover them."""
        if nbytes > self.quota_left:
            if not self.quota_exhausted:
                self.quota_exhausted = True
                self.problem(f"Exceeded storage quota ({self.quota} bytes)", node)
            return False
        self.quota_left -= nbytes
        return True

    def problem(self, reason: str, node: Node | None = None) -> None:
        """Record why the message is UNCHECKED; a part named is one not fully decoded."""
        if node is not None:
            node.undecoded = True
        text = f"{reason}: {node.where}" if node is not None else reason
        if text in self.problems:
            return
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self._dropped += 1

    def final_problems(self) -> tuple[str, ...]:
        extra = [f"... and {self._dropped} more problems"] if self._dropped else []
        return (*self.problems, *extra)

    @property
    def directory(self) -> str:
        """A private (0700) directory for spool files, made on first use."""
        if self.spool is not None:
            return self._spool_directory(self.spool)
        if self._directory is None:
            self._directory = tempfile.mkdtemp(
                prefix="contentfilter-decode-", dir=self.limits.temp_directory or None
            )
        return self._directory

    def spool_file(self, container: Node) -> SpoolFile | None:
        """Where the next member read from `container` is written, when spooling."""
        if self.spool is None:
            return None
        container.members_started += 1
        name = f"{container.part_id}.{container.members_started}-partial"
        directory = self.spool
        path = os.path.join(directory, name)

        def open_file() -> tuple[str, IO[bytes]]:
            self._spool_directory(directory)
            return path, os.fdopen(spool.create_file(path), "w+b")

        return open_file

    def extract(self, node: Node, content: Content) -> None:
        """Keep the bytes of a leaf or of a part not fully decoded for the virus scanners."""
        reason = "undecoded" if node.undecoded else "" if node.children else "leaf"
        if not reason or self.spool is None or node.part_id == "p001" or not content.kept:
            content.delete_file()  # the message itself is scanned as it came
            return
        if self.spooled_bytes + content.size > self.quota:
            content.delete_file()
            self.problem(f"Exceeded storage quota ({self.quota} bytes)", node)
            return
        path = os.path.join(
            self._spool_directory(self.spool), spool.file_name(node.part_id, reason)
        )
        if content.path is not None:
            os.rename(content.path, path)
            content.path = None
        else:
            with os.fdopen(spool.create_file(path), "wb") as file:
                file.write(content.read_all())
        self.spooled_bytes += content.size
        self.extracted.append(ExtractedFile(node.part_id, path, content.size, reason))

    def _spool_directory(self, path: str) -> str:
        """The message's spool directory, made (0700) when the first file goes there."""
        if not self._spool_made:
            spool.make_directory(path)
            self._spool_made = True
        return path

    def close(self) -> None:
        if self._directory is not None:  # not the message's spool: the pipeline removes it
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
