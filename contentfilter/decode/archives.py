"""Archive members and compressed streams through libarchive, read as streams.

Members are read block by block: each block is counted against the member size
limit and the message's quota before it is hashed, so an archive that expands
to a terabyte stops at the first limit and has cost only that much CPU. A
member's declared size is checked first, which stops honest bombs before any
decompression at all. Members are kept (see `content.Collector`) only when
they will be decoded further.

A compressed single file (`x.tar.gz`, `x.exe.bz2`) is one step, as in
amavisd-new: the decompressed stream becomes a part of its own (`x.tar`, with
the name the suffix implies) that is then decoded as whatever it turns out to be.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import libarchive
from libarchive import ffi

from contentfilter.decode.content import Collector, Content
from contentfilter.decode.session import Member, Members, Node, Session
from contentfilter.filetypes import FileType

BLOCK_SIZE = 64 * 1024

# short types libarchive reads as archives of several members
ARCHIVE_TYPES = frozenset(
    {"zip", "kmz", "7z", "rar", "lha", "tar", "cpio", "cab", "iso", "a", "deb", "rpm"}
)
# short types that are one compressed stream, and how their names change when decompressed
COMPRESSED_TYPES: dict[str, tuple[tuple[str, str], ...]] = {
    "gz": ((".tgz", ".tar"), (".taz", ".tar"), (".gz", ""), (".z", ""), ("-gz", ""), ("_gz", "")),
    "bz2": ((".tbz2", ".tar"), (".tbz", ".tar"), (".bz2", ""), (".bz", "")),
    "bz": ((".bz", ""),),
    "xz": ((".txz", ".tar"), (".xz", "")),
    "lzma": ((".tlz", ".tar"), (".lzma", "")),
    "Z": ((".taz", ".tar"), (".z", "")),
    "zst": ((".tzst", ".tar"), (".zst", "")),
    "lz4": ((".lz4", ""),),
    "lzo": ((".lzo", ""),),
}

_LIB = ctypes.CDLL(ffi.libarchive_path)
_entry_is_encrypted = _LIB.archive_entry_is_encrypted
_entry_is_encrypted.argtypes = [ctypes.c_void_p]
_entry_is_encrypted.restype = ctypes.c_int
_entry_size_is_set = _LIB.archive_entry_size_is_set
_entry_size_is_set.argtypes = [ctypes.c_void_p]
_entry_size_is_set.restype = ctypes.c_int

Wanted = Callable[[FileType], bool]


def archive_members(session: Session, node: Node, content: Content, wanted: Wanted) -> Members:
    """The regular files of an archive, in archive order."""
    try:
        with content.archive("all") as archive:
            for entry in archive:
                if not entry.isreg:  # directories, links, devices: no content to check
                    if not session.count_file(node):
                        return
                    continue
                member, damaged = _member(
                    session, node, archive, entry, (_entry_name(entry),), wanted
                )
                yield member
                if damaged:
                    # libarchive must not be asked for another header after a failed data
                    # read: 3.6.2 crashes in archive_read_next_header2 after a CAB member's
                    # "Invalid CFDATA". What follows in the archive stays unchecked.
                    session.problem("Archive not read past a damaged member", node)
                    return
    except libarchive.ArchiveError as error:
        session.problem(_archive_problem(error), node)


def decompressed(session: Session, node: Node, content: Content, wanted: Wanted) -> Members:
    """The single stream inside a compressed file (gzip, bzip2, xz...)."""
    names = _decompressed_names(node)
    try:
        with content.archive("raw") as archive:
            for entry in archive:
                yield _member(session, node, archive, entry, names, wanted)[0]
                return
    except libarchive.ArchiveError as error:
        session.problem(_archive_problem(error), node)


def _member(
    session: Session,
    node: Node,
    archive: libarchive.read.ArchiveRead,
    entry: libarchive.entry.ArchiveEntry,
    names: tuple[str, ...],
    wanted: Wanted,
) -> tuple[Member, bool]:
    """The member at `entry`, and whether reading it failed (the archive is damaged)."""
    if _entry_is_encrypted(entry._entry_p) > 0:
        return Member(names, attributes="UC", problem="Encrypted archive member"), False
    if session.quota_exhausted:  # the name is still worth a banned-file check
        return Member(names, attributes="U"), False
    limit = min(session.limits.max_member_size, session.quota_left)
    if _entry_size_is_set(entry._entry_p) and entry.size > limit:
        # honest bombs say how big they are: stop before decompressing anything
        return _over_limit(session, node, names, entry.size), False
    collector = Collector(wanted, lambda: session.directory, session.spool_file(node))
    try:
        return _read(session, node, archive, names, collector, limit), False
    except libarchive.ArchiveError as error:
        problem = f"Archive member could not be decoded ({error.msg})"
        return Member(names, collector.abandon(), attributes="U", problem=problem), True


def _read(
    session: Session,
    node: Node,
    archive: libarchive.read.ArchiveRead,
    names: tuple[str, ...],
    collector: Collector,
    limit: int,
) -> Member:
    buffer = ctypes.create_string_buffer(BLOCK_SIZE)
    while True:
        count = ffi.read_data(archive._pointer, buffer, BLOCK_SIZE)
        if count == 0:
            return Member(names, collector.finish())
        if count < 0:  # ARCHIVE_WARN, for which libarchive-c does not raise
            raise libarchive.ArchiveError("damaged data", retcode=count)
        if collector.size + count > limit:
            return _over_limit(session, node, names, collector.size + count, collector)
        session.charge(count, node)
        collector.add(buffer.raw[:count])


def _over_limit(
    session: Session,
    node: Node,
    names: tuple[str, ...],
    size: int,
    collector: Collector | None = None,
) -> Member:
    content = collector.abandon() if collector is not None else None
    if size > session.limits.max_member_size:
        problem = f"Member larger than max_member_size ({session.limits.max_member_size} bytes)"
        return Member(names, content, attributes="U", problem=problem)
    session.charge(size, node)  # records the exhausted quota
    return Member(names, content, attributes="U")


def _entry_name(entry: libarchive.entry.ArchiveEntry) -> str:
    try:
        name = entry.pathname
    except ValueError:  # a wide character beyond U+10FFFF: the name's bytes instead
        name = ffi.entry_pathname(entry._entry_p)
    if isinstance(name, bytes):  # not valid in the archive's or our character set
        return name.decode("utf-8", "replace")
    return str(name or "")


def _decompressed_names(node: Node) -> tuple[str, ...]:
    rules = next((COMPRESSED_TYPES[t] for t in node.short_types if t in COMPRESSED_TYPES), ())
    names = []
    for name in node.names:
        for suffix, replacement in rules:
            if len(name) > len(suffix) and name.lower().endswith(suffix):
                names.append(name[: -len(suffix)] + replacement)
                break
    return tuple(dict.fromkeys(names))


def _archive_problem(error: libarchive.ArchiveError) -> str:
    message = str(error.msg or "unreadable archive")
    lowered = message.lower()
    if "encrypt" in lowered or "passphrase" in lowered:
        return f"Encrypted archive ({message})"
    return f"Archive could not be decoded ({message})"
