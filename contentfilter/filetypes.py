"""File types by content: libmagic's description -> amavisd-new's short types.

amavisd-new runs file(1) on every part and maps its description to short types
through `$map_full_type_to_short_type_re` (first match wins; a description may
give several types, e.g. `exe` and `exe-ms`). Banned-file rules such as
`^\\.(exe-ms|dll)$` are written against those short types, so we keep the
same names. The table below follows amavisd-new 2.13's order and results, and
also recognises the wording of current libmagic (5.4x), which amavisd-new's
table misses in places ("HTML document, ASCII text", "XZ compressed data",
"PE32 executable (DLL)"): the additions are marked.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass

import magic

# libmagic looks at most this far into a file for the types we care about
# (ISO 9660 has its signature at 32 KiB); parts are typed from this head.
HEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class FileType:
    """What a part is by content: libmagic's text and amavisd-new's short types."""

    description: str  # amavisd-new's "type_long", e.g. "PE32 executable (GUI) ..."
    short_types: tuple[str, ...]  # amavisd-new's "type_short", e.g. ("exe", "exe-ms")

    @property
    def primary(self) -> str:
        return self.short_types[0]


def _rules(*pairs: tuple[str, str]) -> tuple[tuple[re.Pattern[str], tuple[str, ...]], ...]:
    """Compile (regex, "type[,type...]") pairs; a leading (?i) makes a rule ignore case."""
    return tuple((re.compile(pattern), tuple(types.split(","))) for pattern, types in pairs)


_SHORT_TYPES = _rules(
    (r"^empty$", "empty"),
    (r"^directory$", "dir"),
    (r"^(can't (stat|read)|cannot open|ERROR:)", "dat"),  # file(1) diagnostics
    (r"^data$", "dat"),
    (r"^ISO-8859.*\btext\b", "txt"),
    (r"^Non-ISO.*ASCII\b.*\btext\b", "txt"),
    (r"(?i)^Unicode\b.*\btext\b", "txt"),
    (r"(?i)^UTF.* Unicode text\b", "txt"),
    (r"^'diff' output text\b", "txt"),
    (r"^GNU message catalog\b", "mo"),
    (r"^PGP message [Ss]ignature\b", "pgp,pgp.asc"),
    (r"^PGP message.*[Ee]ncrypted\b", "pgp,pgp.enc"),
    (r"^PGP message$", "pgp,pgp.enc"),
    (r"^(PGP|GPG) encrypted data\b", "pgp,pgp.enc"),
    (r"^PGP public key\b", "pgp,pgp.asc"),
    (r"^PGP armored\b", "pgp,pgp.asc"),
    (r"^PGP\b", "pgp"),
    (r"^(ASCII|smtp|RFC 822) mail text\b", "txt"),
    (r"^JPEG image data\b", "image,jpg"),
    (r"^GIF image data\b", "image,gif"),
    (r"^PNG image data\b", "image,png"),
    (r"^TIFF image data\b", "image,tif"),
    (r"^PCX\b.*\bimage data\b", "image,pcx"),
    (r"^PC bitmap\b", "image,bmp"),
    (r"^SVG Scalable Vector Graphics image\b", "image,svg"),
    (r"^MP2\b", "audio,mpa,mp2"),
    (r"^MP3\b|\bMPEG ADTS, layer III\b", "audio,mpa,mp3"),
    (r"^ISO Media, MPEG v4 system, 3GPP\b", "audio,mpa,3gpp"),
    (r"^ISO Media, MPEG v4 system\b", "audio,mpa,m4a,m4b"),
    (r"^FLAC audio bitstream data\b", "audio,flac"),
    (r"^Ogg data, FLAC audio\b", "audio,oga"),
    (r"^Ogg data\b", "audio,ogg"),
    (r"^MPEG video stream data\b", "movie,mpv"),
    (r"^MPEG\b", "movie,mpg"),
    (r"^Matroska data\b", "movie,mkv"),
    (r"^Microsoft ASF\b", "movie,wmv"),
    (r"^RIFF\b.*\bAVI\b", "movie,avi"),
    (r"^RIFF\b.*\banimated cursor\b", "movie,ani"),
    (r"^RIFF\b.*\bWAVE audio\b", "audio,wav"),
    (r"^Macromedia Flash data\b", "swf"),
    (r"^HTML document\b", "html"),  # amavisd-new: "HTML document text" only
    (r"^XML\b.*\bdocument\b", "xml"),  # amavisd-new: "XML document text" only
    (r"^exported SGML document\b", "sgml"),
    (r"^PostScript document\b", "ps"),
    (r"^PDF document\b", "pdf"),
    (r"^Rich Text Format data\b", "rtf"),
    (r"(?i)^Microsoft (Office Document|Word|Installer)\b", "doc"),
    (r"(?i)^Composite Document File V2 Document\b", "cdf-ms"),  # OLE2: doc, xls, msi...
    (r"(?i)^(ms-)?windows meta(file|font)\b", "wmf"),
    (r"^MS Windows HtmlHelp Data\b", "chm"),  # addition
    (r"^MS Windows shortcut\b", "lnk"),  # addition
    (r"^LaTeX\b.*\bdocument text\b", "lat"),
    (r"^TeX DVI file\b", "dvi"),
    (r"\bdocument text\b", "txt"),
    (r"^compiled Java class data\b", "java"),
    (r"^MS Windows 95 Internet shortcut text\b", "url"),
    (r"^Compressed Google KML Document\b", "kmz"),
    (r"^frozen\b", "F"),
    (r"^gzip compressed\b", "gz"),
    (r"^bzip compressed\b", "bz"),
    (r"^bzip2 compressed\b", "bz2"),
    (r"(?i)^xz compressed\b", "xz"),
    (r"(?i)^lzma compressed\b", "lzma"),
    (r"^lrz compressed\b", "lrz"),
    (r"^lzop compressed\b", "lzo"),
    (r"^LZ4 compressed\b", "lz4"),
    (r"^compress'd", "Z"),
    (r"(?i)^Zip archive\b", "zip"),
    (r"(?i)^7-zip archive\b", "7z"),
    (r"(?i)^RAR archive\b", "rar"),
    (r"(?i)^LHa.*\barchive\b", "lha"),
    (r"(?i)^ARC archive\b", "arc"),
    (r"(?i)^ARJ archive\b", "arj"),
    (r"(?i)^ACE archive\b", "ace"),
    (r"(?i)^Zoo archive\b", "zoo"),
    (r"(?i)^(\S+\s+)?tar archive\b", "tar"),
    (r"(?i)^(\S+\s+)?cpio archive\b", "cpio"),
    (r"(?i)^StuffIt Archive\b", "sit"),
    (r"(?i)^Debian binary package\b", "deb"),
    (r"(?i)^current ar archive\b", "a"),
    (r"^RPM\b", "rpm"),
    (r"(?i)^(Transport Neutral Encapsulation Format|TNEF)\b", "tnef"),
    (r"(?i)^Microsoft Cabinet (file|archive)\b", "cab"),
    (r"^InstallShield Cabinet file\b", "installshield"),
    (r"(?i)^ISO 9660 CD-ROM filesystem\b", "iso"),
    (r"(?i)^(uuencoded|xxencoded)\b", "uue"),
    (r"(?i)^binhex\b", "hqx"),
    (r"(?i)^(ASCII|text)\b", "asc"),
    (r"(?i)^Emacs.*byte-compiled Lisp data", "asc"),  # BinHex with an empty line
    (r"\bscript\b.* text executable\b", "txt"),
    (r"^PE32\+? executable \(DLL\)", "exe,dll"),  # addition: current libmagic's DLLs
    (r"^MS Windows\b.*\bDLL\b", "exe,dll"),
    (r"\bexecutable for MS Windows\b.*\bDLL\b", "exe,dll"),
    (r"^MS-DOS executable \(built-in\)", "asc"),  # any file starting with "LZ"
    (r"^(MS-)?DOS executable\b.*\bDLL\b", "exe,dll"),
    (r"^MS Windows\b.*\bexecutable\b", "exe,exe-ms"),
    (r"\bexecutable\b.*\bfor MS Windows\b", "exe,exe-ms"),
    (r"^(COM executable for DOS|DOS executable \(COM\))", "asc"),
    (r"^(MS-)?DOS executable\b(?!.*\(COM\))", "exe,exe-ms"),
    (r"^PA-RISC.*\bexecutable\b", "exe,exe-unix"),
    (r"^ELF .*\bexecutable\b", "exe,exe-unix"),
    (r"^COFF format .*\bexecutable\b", "exe,exe-unix"),
    (r"^executable \(RISC System\b", "exe,exe-unix"),
    (r"^VMS\b.*\bexecutable\b", "exe,exe-vms"),
    (r"(?i)\bexecutable\b", "exe"),
    (r"(?i)\bshared object, ", "so"),
    (r"(?i)\brelocatable, ", "o"),
    (r"(?i)\btext\b", "asc"),
    (r"^Zstandard compressed\b", "zst"),
)


def short_types(description: str) -> tuple[str, ...]:
    """amavisd-new's short types for a libmagic description ("dat" when nothing fits)."""
    for pattern, types in _SHORT_TYPES:
        if pattern.search(description):
            return types
    return ("dat",)


class _Magic:
    """One libmagic handle for the process, opened on first use, with a small cache.

    Loading the magic database takes tens of milliseconds, so it is done once;
    python-magic serialises calls on a handle with its own lock, which makes the
    handle safe to share between decoder threads. A call costs 0.5-1 ms even for
    three bytes of text, so answers are remembered by content digest: the same
    logo, signature or empty part recurs in mail all day (and a message with
    3,000 identical parts costs one call, not 3,000).
    """

    CACHE_SIZE = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handle: magic.Magic | None = None
        self._cache: dict[bytes, str] = {}

    def describe(self, head: bytes) -> str:
        key = hashlib.blake2b(head, digest_size=16).digest()
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            if self._handle is None:
                self._handle = magic.Magic()
            handle = self._handle
        try:
            description = str(handle.from_buffer(head))
        except magic.MagicException as error:  # treated as file(1) diagnostics are
            description = f"ERROR: {error}"
        with self._lock:
            if len(self._cache) >= self.CACHE_SIZE:
                del self._cache[next(iter(self._cache))]  # the oldest
            self._cache[key] = description
        return description


_MAGIC = _Magic()


def detect(head: bytes) -> FileType:
    """The type of a part from its first bytes (at most HEAD_BYTES are looked at)."""
    if not head:
        return FileType("empty", ("empty",))
    head = head[:HEAD_BYTES]
    if looks_like_text(head):
        # libmagic's text tests cost ~1 ms per KiB; every type that tells text apart
        # (HTML, scripts, PostScript, RTF...) is recognised from the first bytes.
        head = head[:TEXT_HEAD_BYTES]
    description = _MAGIC.describe(head)
    return FileType(description, short_types(description))


TEXT_HEAD_BYTES = 1024
# Bytes that occur in text: printable ASCII, TAB, LF, FF, CR, ESC and 8-bit (charsets).
_TEXT_BYTES = bytes([9, 10, 12, 13, 27, *range(32, 127), *range(128, 256)])


def looks_like_text(head: bytes) -> bool:
    """No control bytes or NULs in the first 4 KiB: no binary format starts like that."""
    return not head[:4096].translate(None, _TEXT_BYTES)
