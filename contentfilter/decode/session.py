"""The state of decoding one message: the part tree being built and what is left of the limits."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Generator
from dataclasses import dataclass, field

from contentfilter.decode.content import Content
from contentfilter.decode.limits import DecoderLimits
from contentfilter.model import Part

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
    """Limits left, problems found and the private spool directory of one decode."""

    def __init__(self, limits: DecoderLimits, message_size: int) -> None:
        self.limits = limits
        self.quota = limits.quota(message_size)
        self.quota_left = self.quota
        self.files = 0
        self._last_id = 0
        self.problems: list[str] = []
        self._dropped = 0
        self.files_exhausted = False
        self.quota_exhausted = False
        self._directory: str | None = None

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
        if self._directory is None:
            self._directory = tempfile.mkdtemp(
                prefix="contentfilter-decode-", dir=self.limits.temp_directory or None
            )
        return self._directory

    def close(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
