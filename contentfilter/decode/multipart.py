"""Splitting a multipart body into its parts at delimiter lines (RFC 2046 5.1.1), in place.

Parts are (start, end) offsets into the raw message; nothing is copied. Besides
the strict split, `split_nested` is Thunderbird's (MimeMultipart_check_boundary
in mailnews/mime/src/mimemult.cpp): a delimiter line belongs to the innermost
open multipart that claims it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Thunderbird strips any trailing white space (isspace) before comparing
_STRICT_REST = re.compile(rb"(--)?[ \t\r\x0b\x0c]*(?:\n|$)")
_WHITESPACE = b" \t\r\n\x0b\x0c"


@dataclass(frozen=True)
class Split:
    parts: list[tuple[int, int]]  # (start, end) of each body part
    found: bool  # any delimiter at all
    closed: bool  # the close delimiter was there
    truncated: bool  # more parts than we were willing to list
    close_end: int = -1  # where the line after the close delimiter starts


def split_multipart(raw: bytes, start: int, end: int, boundary: str, limit: int) -> Split:
    """The body parts between delimiter lines `--boundary` (RFC 2046 5.1.1).

    The line break before a delimiter belongs to it; the preamble (before the
    first delimiter) and the epilogue (after the close delimiter) are no parts.
    """
    parts: list[tuple[int, int]] = []
    part_start = None
    found = False
    for line_start, line_end, closing in delimiters(raw, start, end, boundary):
        found = True
        if part_start is not None:
            parts.append((part_start, strip_line_break(raw, part_start, line_start)))
            if len(parts) > limit:
                return Split(parts[:limit], True, False, True)
        if closing:
            return Split(parts, True, True, False, line_end)
        part_start = line_end
    if part_start is not None:
        parts.append((part_start, end))
    return Split(parts[:limit], found, False, len(parts) > limit)


def delimiters(raw: bytes, start: int, end: int, boundary: str) -> Iterator[tuple[int, int, bool]]:
    """(line start, next line start, is the close delimiter) of each delimiter line.

    bytes.find() for the candidates, a regex only to check the rest of their line:
    a regex scan of a 40 MB body costs half a second, find() a few milliseconds.
    """
    dashes = b"--" + boundary.encode("utf-8", "surrogateescape")
    position = start
    while position < end:
        if position == start and raw.startswith(dashes, start, end):
            candidate = start
        else:  # from the newline that ends the previous line: parts may be empty
            newline = raw.find(b"\n" + dashes, max(position - 1, start), end)
            if newline < 0:
                return
            candidate = newline + 1
        match = _STRICT_REST.match(raw, candidate + len(dashes), end)
        if match:
            yield candidate, match.end(), match.group(1) is not None
            position = match.end()
        else:
            position = candidate + len(dashes)


def split_nested(
    raw: bytes,
    start: int,
    end: int,
    boundary: str,
    limit: int,
    inner_boundaries: Callable[[int, int], tuple[str, ...]],
) -> Split:
    """The parts as Thunderbird splits them: a delimiter line that the open inner
    multipart (the current part, if its header makes it one) claims is its own,
    until that inner multipart's close delimiter, even when an enclosing
    multipart uses the same boundary. `inner_boundaries(start, end)` reads the
    header of the part at `start`."""
    ours = boundary.encode("utf-8", "surrogateescape")
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    inner: tuple[bytes, ...] = ()
    found = False
    for line_start, line_end, token in _dash_lines(raw, start, end):
        if token in inner:
            continue  # a separator of the inner multipart
        if any(token == mark + b"--" for mark in inner):
            inner = ()  # the inner multipart is closed: the next line may be ours
            continue
        if token not in (ours, ours + b"--"):
            continue
        found = True
        if part_start is not None:
            parts.append((part_start, strip_line_break(raw, part_start, line_start)))
            if len(parts) > limit:
                return Split(parts[:limit], True, False, True)
        if token != ours:
            return Split(parts, True, True, False, line_end)
        part_start = line_end
        encoded = inner_boundaries(line_end, end)
        inner = tuple(mark.encode("utf-8", "surrogateescape") for mark in encoded)
    if part_start is not None:
        parts.append((part_start, end))
    return Split(parts[:limit], found, False, len(parts) > limit)


def _dash_lines(raw: bytes, start: int, end: int) -> Iterator[tuple[int, int, bytes]]:
    """(line start, next line start, the line after `--` without trailing white space)."""
    if raw.startswith(b"--", start, end):
        position = start
    else:
        position = raw.find(b"\n--", start, end) + 1
        if position == 0:
            return
    while True:
        newline = raw.find(b"\n", position, end)
        line_end = end if newline < 0 else newline + 1
        yield position, line_end, raw[position + 2 : line_end].rstrip(_WHITESPACE)
        following = raw.find(b"\n--", line_end - 1, end) if newline >= 0 else -1
        if following < 0:
            return
        position = following + 1


def strip_line_break(raw: bytes, start: int, end: int) -> int:
    if end > start and raw[end - 1 : end] == b"\n":
        end -= 1
        if end > start and raw[end - 1 : end] == b"\r":
            end -= 1
    return end
