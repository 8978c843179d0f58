"""amavisd-new's header fields, and the one function that edits a message. Pure.

The formats follow amavisd-new 2.13 (`Amavis.pm`, `add_forwarding_header_edits_per_recip`,
and `Amavis::Out::EditHeader::hdr`): the same field order, the same number formatting
and the same folding (a fold is a CRLF inserted before existing whitespace, so the
continuation line starts with that space, RFC 5322 section 2.2.3).

`apply_edits` prepends the header lines and touches nothing but the header section:
the body is never re-serialised, so DKIM body hashes and signatures over the body
survive.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise

from contentfilter.model import ContentsCategory, HeaderSection
from contentfilter.rfc5322 import decoded_text, parse_header, unfold

CRLF = b"\r\n"
LINE_LIMIT = 78  # RFC 5322 section 2.1.1: lines SHOULD be no longer than 78 characters
SPAM_LEVEL_CAP = 64  # amavisd-new caps the X-Spam-Level bar at 64 characters
SPAM_LEVEL_CHAR = "*"  # amavisd-new's $sa_spam_level_char

_VALID_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
# RFC 2047 section 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
_ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[QqBb]\?[^?\s]*\?=")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# RFC 2047 section 5 (3): characters that may stay literal in a "Q" encoded-word
_Q_LITERAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_PREFIX, _Q_SUFFIX = "=?UTF-8?Q?", "?="
_ENCODED_WORD_MAX = 75  # RFC 2047 section 2
# The fields this filter writes and so removes from mail it tags (amavisd-new's
# @headers_to_be_removed in add_forwarding_header_edits_per_recip); other X-Spam-*
# fields (X-Spam-Summary, X-Spam-Processed ...) are someone else's and stay.
OWN_SPAM_FIELDS = frozenset(
    {
        b"x-spam-status",
        b"x-spam-level",
        b"x-spam-flag",
        b"x-spam-score",
        b"x-spam-report",
        b"x-spam-checker-version",
        b"x-spam-tests",
    }
)


# --- numbers --------------------------------------------------------------------------


def format_score(score: float) -> str:
    """A score as amavisd-new writes it: `0+sprintf("%.3f")` (1007.457, 6.31, 2, -0.1, 0)."""
    rounded = float(f"{score:.3f}")
    return perl_number(rounded)


def perl_number(value: float) -> str:
    """Perl's default stringification of a number (`%.15g`, and never `-0`).

    amavisd-new prints the tag levels and SpamAssassin prints rule scores this way,
    without rounding: `tagged_above=2 required=6.31`, `GTUBE=1000`.
    """
    if value == 0:
        return "0"
    return f"{value:.15g}"


def spam_level(score: float) -> str:
    """The X-Spam-Level bar: one star per whole point, at most 64, empty below 1.

    Negative scores give an empty bar, as in amavisd-new.
    """
    length = min(score, SPAM_LEVEL_CAP)
    return "" if length < 1 else SPAM_LEVEL_CHAR * int(length)


# --- building header fields -----------------------------------------------------------


def header_line(name: str, value: str) -> bytes:
    """One complete header field, folded at whitespace when longer than 78, CRLF-ended.

    Non-ASCII words become RFC 2047 encoded-words (section 5 (1)); line breaks and
    control characters in the value are neutralised so a value can never start a new
    field (header injection through a file or virus name).
    """
    # keep the first encoded-word on the first line, after "Name: "
    body = _encode_unstructured(_sanitize(value), LINE_LIMIT - len(_checked_name(name)) - 2)
    # amavisd-new puts a space after the colon only before a value that lacks one
    text = f"{_checked_name(name)}:" + (" " if body[:1] not in ("", " ", "\t") else "") + body
    return fold(text)


def fold(text: str) -> bytes:
    """A complete `Name: value` line folded at whitespace if longer than 78, CRLF-ended.

    This is amavisd-new's unstructured folding; unfolding (RFC 5322 section 2.2.3)
    gives back `text` exactly. `text` must be free of line breaks.
    """
    if len(text) <= LINE_LIMIT:
        return text.encode("utf-8") + CRLF
    return _join_folded(_pack(_whitespace_chunks(text)))


def structured_line(name: str, pieces: Sequence[str]) -> bytes:
    """A header field that may be folded only between `pieces` (amavisd-new's `\\n` marks).

    Pieces are joined by one space; each continuation line starts with that space.
    """
    if not pieces:
        raise ValueError("a structured header field needs at least one piece")
    first = f"{_checked_name(name)}: {_sanitize(pieces[0])}"
    chunks = [first, *(" " + _sanitize(piece) for piece in pieces[1:])]
    return _join_folded(_pack(chunks))


def spam_headers(
    *,
    score: float,
    tagged_above: float | None,
    required: float,
    is_spammy: bool,
    tests: Sequence[tuple[str, float | None]],
    autolearn: str | None,
) -> tuple[bytes, ...]:
    """X-Spam-Flag, X-Spam-Score, X-Spam-Level and X-Spam-Status, in amavisd-new's order.

    `tagged_above` is the tag level (the field is left out when None, as amavisd-new
    does), `required` the tag2 level, `is_spammy` whether the score reached it. Tests
    are sorted by name as SpamAssassin's _TESTSSCORES_ sorts them; no tests hit gives
    `tests=[none]`; a test without its score (None) is written as its name alone.
    `autolearn` is SpamAssassin's _AUTOLEARN_ value as is (SA 3.4 says e.g.
    `no autolearn_force=no`); None gives `unavailable`.
    """
    return (
        header_line("X-Spam-Flag", "YES" if is_spammy else "NO"),
        header_line("X-Spam-Score", format_score(score)),
        header_line("X-Spam-Level", spam_level(score)),
        structured_line(
            "X-Spam-Status",
            _spam_status_pieces(score, tagged_above, required, is_spammy, tests, autolearn),
        ),
    )


def _spam_status_pieces(
    score: float,
    tagged_above: float | None,
    required: float,
    is_spammy: bool,
    tests: Sequence[tuple[str, float | None]],
    autolearn: str | None,
) -> list[str]:
    pieces = ["Yes," if is_spammy else "No,", f"score={format_score(score)}"]
    if tagged_above is not None:
        pieces.append(f"tagged_above={perl_number(tagged_above)}")
    pieces.append(f"required={perl_number(required)}")
    # SpamAssassin sorts with Perl's `sort`: by code point, as Python sorts str
    names = [test_text(name, points) for name, points in sorted(tests, key=_rule_name)] or ["none"]
    names[0] = "tests=[" + names[0]
    names = [f"{entry}," for entry in names[:-1]] + [names[-1] + "]"]
    return [*pieces, *names, f"autolearn={autolearn or 'unavailable'}"]


def _rule_name(test: tuple[str, float | None]) -> str:
    return test[0]


def test_text(name: str, points: float | None) -> str:
    """`GTUBE=1000`, or `GTUBE` when spamd was not asked for the rules' scores."""
    return name if points is None else f"{name}={perl_number(points)}"


def virus_scanned_header(text: str) -> bytes:
    """`X-Virus-Scanned: <text>`, e.g. "Debian amavis at mail.example.com"."""
    return header_line("X-Virus-Scanned", text)


def alert_text(category: ContentsCategory, details: Sequence[str]) -> str:
    """amavisd-new's X-Amavis-Alert text for a virus, a banned part or a bad header.

    VIRUS lists every virus name; BANNED and BAD_HEADER name only the first detail,
    as amavisd-new does. Other categories have no alert: ValueError.
    """
    first = details[0] if details else ""
    if category is ContentsCategory.VIRUS:
        return "INFECTED, message contains virus: " + ", ".join(details)
    if category is ContentsCategory.BANNED:
        return "BANNED, message contains " + first
    if category is ContentsCategory.BAD_HEADER:
        return "BAD HEADER SECTION, " + first
    raise ValueError(f"amavisd-new writes no X-Amavis-Alert for {category.name}")


def alert_header(text: str) -> bytes:
    """`X-Amavis-Alert: <text>` (see `alert_text`)."""
    return header_line("X-Amavis-Alert", text)


def expand_subject_tag(tag: str, score: float | None, required: float | None) -> str:
    """Expand `_SCORE_` and `_REQD_` in a subject tag as amavisd-new does.

    A missing score counts as 0 and a missing required level gives `-` (amavisd-new's
    behaviour); other macros (`_YESNO_`, `_HOSTNAME_`...) are left as written.
    """
    values = {
        "_SCORE_": format_score(score or 0.0),
        "_REQD_": "-" if required is None else format_score(required),
    }
    return re.sub(r"_(?:SCORE|REQD)_", lambda match: values[match.group(0)], tag)


def _checked_name(name: str) -> str:
    if not _VALID_NAME.fullmatch(name):
        raise ValueError(f"not a header field name: {name!r}")
    return name


def _sanitize(value: str) -> str:
    return _CONTROL.sub("?", _LINE_BREAK.sub(" ", value))


# --- RFC 2047 encoded-words -----------------------------------------------------------


def encoded_words(text: str, first_length: int = _ENCODED_WORD_MAX) -> list[str]:
    """`text` as UTF-8 "Q" encoded-words of at most 75 characters (RFC 2047 section 2).

    The first word is at most `first_length` long (at least room for one character).
    A character is never split across two words (section 5); the words are meant to
    be joined by a space, which decoders ignore between encoded-words (section 6.2).
    """
    overhead = len(_Q_PREFIX) + len(_Q_SUFFIX)
    room = min(first_length, _ENCODED_WORD_MAX) - overhead
    words: list[str] = []
    current = ""
    for character in text:
        encoded = _q_encode(character)
        if current and len(current) + len(encoded) > room:
            room = _ENCODED_WORD_MAX - overhead
            words.append(_Q_PREFIX + current + _Q_SUFFIX)
            current = ""
        current += encoded
    if current:
        words.append(_Q_PREFIX + current + _Q_SUFFIX)
    return words


def _q_encode(character: str) -> str:
    if character in _Q_LITERAL:
        return character
    if character == " ":
        return "_"  # RFC 2047 section 4.2 (2)
    return "".join(f"={byte:02X}" for byte in character.encode("utf-8"))


def _encode_unstructured(value: str, first_length: int = _ENCODED_WORD_MAX) -> str:
    """Encode each run of non-ASCII words; ASCII words and their spacing stay as written.

    An encoded-word at the very start is at most `first_length` long.
    """
    if value.isascii():
        return value
    tokens = re.split(r"([ \t]+)", value)  # words at even indexes, whitespace at odd
    output: list[str] = []
    index = 0
    while index < len(tokens):
        if tokens[index].isascii():
            output.append(tokens[index])
            index += 1
            continue
        end = index
        while end + 2 < len(tokens) and not tokens[end + 2].isascii():
            end += 2  # whitespace between two encoded words is part of the run
        limit = first_length if index == 0 else _ENCODED_WORD_MAX
        output.append(" ".join(encoded_words("".join(tokens[index : end + 1]), limit)))
        index = end + 1
    return "".join(output)


# --- folding --------------------------------------------------------------------------


def _whitespace_chunks(text: str) -> list[str]:
    """Unbreakable chunks: each but the first starts with the one whitespace before a word."""
    cuts = [i for i in range(1, len(text) - 1) if text[i] in " \t" and text[i + 1] not in " \t"]
    bounds = [0, *cuts, len(text)]
    return [text[start:end] for start, end in pairwise(bounds) if end > start]


def _pack(chunks: Sequence[str]) -> list[str]:
    """amavisd-new's `wrap_string`: fill lines up to 78 columns, chunk by chunk.

    A chunk that does not fit starts a new line; when only its trailing whitespace
    overflows, the word stays and the extra whitespace moves on to the next line. A
    chunk too long on its own gets a line of its own (RFC 5322 section 2.2.3 allows
    folding only at whitespace).
    """
    pending = list(chunks)
    lines: list[str] = []
    current = ""
    while pending:
        chunk = pending.pop(0)
        blank = not current.strip(" \t")
        if _width(current + chunk) <= LINE_LIMIT or (not pending and blank):
            current += chunk
            continue
        solid = chunk.rstrip(" \t")
        if pending and (_width(current + solid) <= LINE_LIMIT or blank):
            current += solid
            tail = chunk[len(solid) :]
            while tail and _width(current + tail[0]) <= LINE_LIMIT:
                current, tail = current + tail[0], tail[1:]
            if tail:
                pending[0] = tail + pending[0]
            continue
        lines.append(current)
        current = ""
        pending.insert(0, chunk)
    if current.strip(" \t"):
        lines.append(current)
    return lines


def _width(text: str) -> int:
    """Display width, a TAB reaching the next multiple of 8 (amavisd-new's count)."""
    width = 0
    for character in text:
        width = width + 8 - width % 8 if character == "\t" else width + 1
    return width


def _join_folded(lines: Sequence[str]) -> bytes:
    return CRLF.join(line.encode("utf-8") for line in lines) + CRLF


# --- editing a message ----------------------------------------------------------------


def apply_edits(
    raw: bytes,
    header_lines: Sequence[bytes],
    subject_tag: str,
    remove_spam_headers: bool,
    section: HeaderSection | None = None,
) -> bytes:
    """The message with `header_lines` added and the Subject tagged.

    This is the only function that changes a message. `header_lines` must each be a
    complete CRLF-terminated field (from `header_line` and friends); they go at the
    very top, as amavisd-new puts them, unless the section starts with whitespace:
    then a line put above would continue our last field, so ours go below the last
    field instead. With `remove_spam_headers`, the X-Spam-* fields this filter
    writes (`OWN_SPAM_FIELDS`) already in the header section go. Every other byte,
    the body above all, is kept as it was. `section` is `raw`'s, when already parsed.
    """
    for line in header_lines:
        if not line.endswith(CRLF):
            raise ValueError(f"a header line must end in CRLF: {line!r}")
    section = section or parse_header(raw)
    fields, fields_end = section.fields, section.fields_end
    tag = _sanitize(subject_tag) if subject_tag.strip(" \t") else ""
    added = list(header_lines)
    if tag and not any(field.name.lower() == b"subject" for field in fields):
        added.append(header_line("Subject", tag.rstrip(" \t")))
    kept: list[bytes] = []
    for field in fields:
        name = field.name.lower()
        if remove_spam_headers and name in OWN_SPAM_FIELDS:
            continue
        text = raw[field.start : field.end]
        kept.append(tag_subject(text, tag) if tag and name == b"subject" else text)
    body = memoryview(raw)[fields_end:]  # not a copy: a large message is copied once
    if fields and not fields[0].name:
        return b"".join([*kept, *_ended(kept), *added, body])
    return b"".join([*added, *kept, body])


def _ended(kept: Sequence[bytes]) -> list[bytes]:
    """A line break after the last kept field if it has none (a message without body)."""
    return [] if not kept or kept[-1].endswith(b"\n") else [CRLF]


def tag_subject(field: bytes, tag: str) -> bytes:
    """Insert `tag` into one raw Subject field, right after `Subject:` and its whitespace.

    The rest of the field is kept byte for byte. A subject that already starts with
    the tag is left alone: amavisd-new removes the tag wherever it occurs and puts it
    in front once, so the result is the same, and our way the field is not rewritten.
    """
    colon = field.index(b":") + 1
    insert_at = colon
    while insert_at < len(field) and field[insert_at] in b" \t":
        insert_at += 1
    value = unfold(field[colon:]).strip(b" \t\r\n")
    if _starts_with_tag(value, tag):
        return field
    first_line = field[insert_at:].split(b"\n", 1)[0].rstrip(b"\r")
    inserted = _tag_text(tag, value, same_line=bool(first_line.strip(b" \t")))
    space = b"" if insert_at > colon else b" "
    return field[:insert_at] + space + inserted.encode("ascii") + field[insert_at:]


def _tag_text(tag: str, value: bytes, *, same_line: bool) -> str:
    """The tag as it goes in front of `value`, a plain or RFC 2047-encoded subject.

    An ASCII tag stays plain text; a non-ASCII tag becomes encoded-words. RFC 2047
    section 5 (1): an encoded-word must be set off by whitespace; section 6.2:
    whitespace between two encoded-words is dropped on display, so before an
    encoded-word the tag's own trailing space goes inside the tag's encoding.
    """
    core = tag.rstrip(" \t")
    tail = tag[len(core) :]
    before_encoded_word = bool(_ENCODED_WORD.match(value))
    if core.isascii():
        if not same_line:
            return core  # the folding whitespace of the next line separates them
        return core + (tail or (" " if before_encoded_word else ""))
    own = core + tail if before_encoded_word else core
    encoded = " ".join(encoded_words(own))
    if not same_line:
        return encoded
    return encoded + (" " if before_encoded_word else tail or " ")


def _starts_with_tag(value: bytes, tag: str) -> bool:
    core = tag.rstrip(" \t")
    subject = decoded_text(value)
    return subject == core or subject.startswith(tag)
