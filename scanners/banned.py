"""Banned attachments: amavisd-new's banned_filename rules over the decoded part tree.

    scanners:
      banned:
        rules:
          - {ban: '^application/x-msmetafile$', match: mime}
          - {allow: '^\\.(zip|rar|arc|arj|zoo)$', match: type, scope: inside}
          - {ban: '.\\.(exe|com|pif|scr|vbs)$', match: name}
          - {ban: '^\\.(exe|lha|tnef|cab|dll)$', match: type}

Semantics are amavisd-new's (`check_for_banned_names`): every leaf of the part
tree is checked with its path, the parts it is inside from the message down to
itself; rules are tried in order and the first rule whose pattern matches
anything on that path decides, `ban` or `allow`; no match means allowed.
That is why `allow` for `.zip` placed before the `.exe` ban lets an .exe inside
a zip through.

A rule's pattern (Python `re`, searched) is tried against
- `match: name`: every file name the part goes by (case-insensitive); a name
  Windows would shorten (`invoice.exe.`, `invoice.exe   `) also as shortened;
- `match: type`: the types found from the content, written as amavisd-new
  writes them, `.exe`, `.exe-ms`, `.zip` (see contentfilter.filetypes);
- `match: mime`: the declared Content-Type (case-insensitive);
- `match: any` (the default): all of them in amavisd-new's form, plus
  `UNDECIPHERABLE` for encrypted parts, so amavisd-new regexes can be pasted
  unchanged (write `(?i)` where amavisd-new had `qr'...'i`).
`scope` says which parts of the path are looked at: `path` (default, as
amavisd-new), `part` (only the leaf itself) or `inside` (only the parts it is
inside: "anything inside a .zip").

The finding is amavisd-new's reply text for the part, its MIME type, types and
names (`application/octet-stream,.exe,.exe-ms,invoice.exe`), preceded by any
`(?#comment)` of the rule as amavisd-new does. `find_banned` gives the whole
path (`P=p001,L=1,M=multipart/mixed | P=p003,...`) and the rule for the log,
and `explain` says for every leaf which rule decided.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import yaml

from contentfilter import cache, schema
from contentfilter.decode import DecoderLimits, decode, describe
from contentfilter.errors import ConfigError
from contentfilter.model import (
    ContentsCategory,
    DecodedMessage,
    Finding,
    Message,
    Part,
    ScanResult,
)
from scanners.base import ScannerSettings

Match = Literal["name", "type", "mime", "any"]
Scope = Literal["path", "part", "inside"]
_Seen = dict[tuple[int, str], "str | None"]
_COMMENT = re.compile(r"\(\?#\s*(.*?)\s*\)")


@dataclass(frozen=True)
class BannedRule:
    """One line of the rule table: a pattern, what it is matched against, ban or allow."""

    pattern: str
    banned: bool = True
    match: Match = "any"
    scope: Scope = "path"
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        flags = re.IGNORECASE if self.match in ("name", "mime") else 0
        try:
            compiled = re.compile(self.pattern, flags)
        except re.error as error:
            raise ValueError(f"bad regular expression: {error}") from None
        object.__setattr__(self, "regex", compiled)

    @classmethod
    def from_config(cls, value: object) -> BannedRule:
        """`{ban|allow: REGEX, match: ..., scope: ...}`, or a bare REGEX meaning `{ban: REGEX}`."""
        if isinstance(value, str):
            value = {"ban": value}
        spec = schema.build(_RuleSpec, value)
        if (spec.ban is None) == (spec.allow is None):
            raise ValueError("a rule needs exactly one of `ban` or `allow` (a regular expression)")
        key, pattern = ("ban", spec.ban) if spec.ban is not None else ("allow", spec.allow)
        assert pattern is not None
        try:
            return cls(pattern, key == "ban", spec.match, spec.scope)
        except ValueError as error:
            raise ConfigError(key, str(error), pattern) from None

    def to_config(self) -> dict[str, str]:
        plain = {"ban" if self.banned else "allow": self.pattern, "match": self.match}
        if self.scope != "path":
            plain["scope"] = self.scope
        return plain

    def describe(self) -> str:
        """The rule as the config writes it, for logs and `contentfilter scan`."""
        pattern = self.pattern.replace("'", "''")  # a YAML single-quoted scalar
        scope = f", scope: {self.scope}" if self.scope != "path" else ""
        return f"{{{'ban' if self.banned else 'allow'}: '{pattern}', match: {self.match}{scope}}}"

    @property
    def comments(self) -> list[str]:
        """amavisd-new's `(?#...)` comments in the pattern: they head the reply text."""
        return _COMMENT.findall(self.pattern)

    def first_match(
        self, path: Sequence[Part], seen: _Seen | None = None
    ) -> tuple[Part, str] | None:
        """The part on the path and its attribute that this rule matches, if any.

        `seen` remembers results per part: leaves in one archive share their path.
        """
        for part in self._scope(path):
            key = (id(self), part.part_id)
            if seen is not None and key in seen:
                value = seen[key]
            else:
                value = next(
                    (v for v in attributes(part, self.match) if self.regex.search(v)), None
                )
                if seen is not None:
                    seen[key] = value
            if value is not None:
                return part, value
        return None

    def _scope(self, path: Sequence[Part]) -> Sequence[Part]:
        if self.scope == "part":
            return path[-1:]
        if self.scope == "inside":
            return path[:-1]
        return path


@dataclass(frozen=True)
class _RuleSpec:
    """A rule as written in YAML (checked strictly by contentfilter.schema)."""

    ban: str | None = None
    allow: str | None = None
    match: Match = "any"
    scope: Scope = "path"


def attributes(part: Part, match: Match) -> list[str]:
    """What a rule with this `match` sees of a part (amavisd-new's order for `any`)."""
    mime = [part.declared_type] if part.declared_type else []
    types = ["." + short for short in _short_types(part)]
    if match == "mime":
        return mime
    if match == "type":
        return types
    if match == "name":
        return _names_as_windows_sees_them(part.names)
    return [*mime, *types, *part.names, *(["UNDECIPHERABLE"] if "U" in part.attributes else [])]


def _short_types(part: Part) -> tuple[str, ...]:
    return part.detected_types or ((part.detected_type,) if part.detected_type else ())


def _names_as_windows_sees_them(names: Sequence[str]) -> list[str]:
    # Windows drops trailing dots and spaces: "invoice.exe . ." runs as invoice.exe
    seen = list(names)
    for name in names:
        shortened = name.rstrip(" .")
        if shortened and shortened not in seen:
            seen.append(shortened)
    return seen


# the presets below are our own text: libyaml reads them in a tenth of PyYAML's time,
# which every start of a one-shot `pipe` or `spawn` process pays
_PRESET_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _rules(text: str) -> tuple[BannedRule, ...]:
    return tuple(BannedRule.from_config(item) for item in yaml.load(text, _PRESET_LOADER))


TUTORIAL_RULES_YAML = r"""
# the tutorial's rules; first match wins, `allow` is amavisd-new's `=> 0`
- {ban: '^application/x-msmetafile$', match: mime}      # Windows metafile MIME type
- {ban: '^\.wmf$', match: type}                          # Windows metafile by content
- {ban: '^message/(partial|external-body)$', match: mime}  # RFC 2046 fragments, references
- {allow: '^\.(Z|gz|bz2)$', match: type, scope: inside}         # anything in Unix-compressed files
- {allow: '^\.(rpm|cpio|tar)$', match: type, scope: inside}     # anything in Unix-type archives
- {allow: '^\.(zip|rar|arc|arj|zoo)$', match: type, scope: inside}  # anything in such archives
- ban: ".\\.(ade|adp|app|bas|bat|chm|cmd|com|cpl|crt|emf|exe|fxp|grp|hlp|hta|inf|ins|isp|js|\
    jse|lnk|mda|mdb|mde|mdw|mdt|mdz|msc|msi|msp|mst|ops|pcd|pif|prg|reg|scr|sct|shb|shs|\
    vb|vbe|vbs|wmf|wsc|wsf|wsh)$"
  match: name                                            # executable and script extensions
- {ban: '.\.(mim|b64|bhx|hqx|xxe|uu|uue)$', match: name}  # encodings WinZip would unpack
- {ban: '^\.(exe|lha|tnef|cab|dll)$', match: type}       # executables and archives by content
"""

DEBIAN_RULES_YAML = r"""
# amavisd-new's default $banned_filename_re as Debian 12 ships it
# (amavisd-new 1:2.13.0-3+deb12u1, /etc/amavis/conf.d/20-debian_defaults; the
# commented lines are commented there too). No `allow` rule: nothing inside an
# archive is let through, an .exe in a .zip is banned.
# - {ban: '^UNDECIPHERABLE$'}                           # encrypted, or contains encrypted parts
- {ban: '\.[^./]*\.(exe|vbs|pif|scr|bat|cmd|com|cpl|dll)\.?$', match: name}  # double extension
- {ban: '\{[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\}?$', match: name}     # Windows class id
- {ban: '^application/(x-msdownload|x-msdos-program|hta)$', match: mime}
# - {ban: '^application/x-msmetafile$', match: mime}     # Windows metafile MIME type
# - {ban: '^\.wmf$', match: type}                         # Windows metafile by content
# - {ban: '^message/(partial|external-body)$', match: mime}
# - {allow: '^\.(Z|gz|bz2)$', match: type, scope: inside}          # anything in Unix-compressed
# - {allow: '^\.(rpm|cpio|tar)$', match: type, scope: inside}      # anything in Unix archives
# - {allow: '^\.(zip|rar|arc|arj|zoo)$', match: type, scope: inside}  # anything in such archives
- {ban: '.\.(exe|vbs|pif|scr|bat|cmd|com|cpl)$', match: name}  # banned extension, basic list
# - ban: ".\\.(ade|adp|app|bas|bat|chm|cmd|com|cpl|crt|emf|exe|fxp|grp|hlp|hta|inf|ins|isp|js|\
#     jse|lnk|mda|mdb|mde|mdw|mdt|mdz|msc|msi|msp|mst|ops|pcd|pif|prg|reg|scr|sct|shb|shs|\
#     vb|vbe|vbs|wmf|wsc|wsf|wsh)$"
#   match: name                                          # banned extension, long list
# - {ban: '.\.(mim|b64|bhx|hqx|xxe|uu|uue)$', match: name}  # WinZip vulnerability
- {ban: '^\.exe-ms$', match: type}                       # Windows executables by content
# - {ban: '^\.(exe|lha|tnef|cab|dll)$', match: type}     # executables and archives by content
"""

ADDED_RULES_YAML = r"""
# Carriers of current malware that Debian's list misses, by file name (any case, inside
# archives too). Each is something Windows opens with one double-click.
# Scripts run by Windows Script Host (wscript), mshta or PowerShell: JavaScript and
# VBScript droppers in zips are the commonest malware attachments since 2016.
- {ban: '.\.(js|jse|vbe|wsf|wsh|wsc|hta|sct|ps1)$', match: name}
# Disk images: Windows mounts them on a double-click and the files inside lose the
# "downloaded from the internet" mark (Mark of the Web), so Office and SmartScreen
# warnings do not apply; the carrier of Qakbot, IcedID and Emotet after 2022.
- {ban: '.\.(iso|img|vhd|vhdx)$', match: name}
# OneNote notebooks: embedded scripts and programs run from a click on a fake
# button; the 2023 replacement for macros.
- {ban: '.\.(one|onepkg)$', match: name}
# Shortcuts: a .lnk runs any command line (PowerShell, mshta) with a document icon;
# by content too, since the name decides nothing for a shortcut inside a disk image.
- {ban: '.\.lnk$', match: name}
- {ban: '^\.lnk$', match: type}
# Office formats that carry macros (the x in docx means no macros), and Excel add-ins
# (.xll, a DLL Excel loads on opening), used since Office blocked macros from mail.
- {ban: '.\.(docm|dotm|xlsm|xltm|xlam|pptm|potm|ppam|ppsm|sldm|xll)$', match: name}
# Installers and help files that run code: Windows Installer packages are OLE2 files,
# not executables by content, so the .exe-ms rule misses them; compiled HTML help
# runs scripts; .reg files change the registry.
- {ban: '.\.(msi|msp|msix|appx|appinstaller|chm|reg)$', match: name}
"""

TUTORIAL_RULES = _rules(TUTORIAL_RULES_YAML)
DEBIAN_RULES = _rules(DEBIAN_RULES_YAML)
DEFAULT_RULES = DEBIAN_RULES + _rules(ADDED_RULES_YAML)
PRESETS = {"default": DEFAULT_RULES, "debian": DEBIAN_RULES, "tutorial": TUTORIAL_RULES}
Preset = Literal["default", "debian", "tutorial"]


@dataclass(frozen=True)
class BannedSettings(ScannerSettings):
    """The `scanners.banned` section: a `preset` rule table or your own `rules`, not both.

    Presets: `default` (Debian 12's amavisd-new rules and today's malware carriers),
    `debian` (Debian 12's alone), `tutorial` (the classic tutorial's: anything inside a
    zip, rar, tar or gzip is allowed; TNEF and message/partial are banned).
    """

    preset: Preset | None = None
    rules: tuple[BannedRule, ...] | None = None  # on_failure stays TEMPFAIL

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset is not None and self.rules is not None:
            raise ValueError("give either `preset` or `rules`, not both")

    @property
    def rule_table(self) -> tuple[BannedRule, ...]:
        """The rules in force: `rules` if given, else the preset's (`default` if none)."""
        return self.rules if self.rules is not None else PRESETS[self.preset or "default"]


# --- checking a decoded message ---------------------------------------------------------


@dataclass(frozen=True)
class BannedPart:
    """A leaf that a `ban` rule decided on, with everything the log wants to say about it."""

    path: tuple[Part, ...]  # from the message (p001) down to the banned part
    rule_index: int
    rule: BannedRule
    matched: str  # the attribute the rule matched: "invoice.exe", ".exe-ms"...

    @property
    def reason(self) -> str:
        """amavisd-new's reply text: `application/octet-stream,.exe,.exe-ms,invoice.exe`."""
        text = ",".join(attributes(self.path[-1], "any"))
        text = re.sub(r"[ \t]{6,}", " ... ", text)  # "photo.jpg            .scr"
        comments = self.rule.comments
        return f"{' '.join(comments)}:{text}" if comments else text

    @property
    def path_description(self) -> str:
        """amavisd-new's log form of the whole path: `P=p001,L=1,M=... | P=p003,...`."""
        return " | ".join(describe(part) for part in self.path)


# a header field line as the stdlib feed parser reads one (email.feedparser.headerRE)
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")
_MIME_FIELDS = (b"content", b"mime")


def mime_view(raw: bytes) -> bytes:
    """The message without its top-level header fields that MIME decoding never reads.

    Kept verbatim: every field whose name starts with Content or MIME (any case, with
    its continuation lines, duplicates and order), and everything from the first line
    that is not a header field on (the empty line, or a line the decoder takes as the
    start of the body). Dropped: the other well-formed fields (Received, To, Subject...).
    """
    header, rest = mime_header(raw)
    return header + raw[rest:]


def mime_header(raw: bytes) -> tuple[bytes, int]:
    """The top-level lines `mime_view` keeps, and the offset from which it keeps all."""
    kept: list[bytes] = []
    keeping = True  # a continuation line before any field stays
    position = 0
    while position < len(raw):
        newline = raw.find(b"\n", position)
        line_end = len(raw) if newline < 0 else newline + 1
        if raw[position] not in b" \t":
            field = _FIELD_NAME.match(raw, position, line_end)
            if field is None:
                break  # the empty line, or what the decoder takes as the body
            keeping = field[1].lower().startswith(_MIME_FIELDS)
        if keeping:
            kept.append(raw[position:line_end])
        position = line_end
    return b"".join(kept), position


def leaf_paths(decoded: DecodedMessage) -> Iterator[tuple[Part, ...]]:
    """Each leaf with the parts it is inside, depth first (iterative: trees can be deep)."""
    stack: list[tuple[Part, ...]] = [(decoded.root,)]
    while stack:
        path = stack.pop()
        children = path[-1].children
        if not children:
            yield path
        stack.extend((*path, child) for child in reversed(children))


def decide(
    path: Sequence[Part], rules: Sequence[BannedRule], seen: _Seen | None = None
) -> tuple[int, Part, str] | None:
    """(rule index, part matched, attribute matched) of the first rule matching the path."""
    for index, rule in enumerate(rules):
        found = rule.first_match(path, seen)
        if found is not None:
            return index, *found
    return None


def find_banned(decoded: DecodedMessage, rules: Sequence[BannedRule]) -> list[BannedPart]:
    """The leaves a `ban` rule decides on, in tree order."""
    banned = []
    seen: _Seen = {}
    for path in leaf_paths(decoded):
        decision = decide(path, rules, seen)
        if decision is not None and rules[decision[0]].banned:
            index, _, matched = decision
            banned.append(BannedPart(path, index, rules[index], matched))
    return banned


def explain(decoded: DecodedMessage, rules: Sequence[BannedRule]) -> list[str]:
    """For every leaf: which rule decided and on what (for `contentfilter scan`)."""
    lines = []
    for path in leaf_paths(decoded):
        leaf = path[-1]
        decision = decide(path, rules)
        if decision is None:
            lines.append(f"{leaf.part_id}: allowed, no rule matches")
            continue
        index, part, matched = decision
        verdict = "BANNED" if rules[index].banned else "allowed"
        where = "" if part is leaf else f" of {part.part_id}"
        rule = f"rules[{index}] {rules[index].describe()}"
        lines.append(f"{leaf.part_id}: {verdict} by {rule} on {matched!r}{where}")
    return lines


# --- the scanner ------------------------------------------------------------------------


class BannedScanner:
    """Checks the decoded parts against the rules; decode problems become UNCHECKED."""

    needs_parts = True

    def __init__(self, name: str, settings: BannedSettings, limits: DecoderLimits) -> None:
        self.name = name
        self.timeout = settings.timeout
        self.on_failure = settings.on_failure
        self.rules = settings.rule_table
        self.limits = limits
        self._fingerprint = cache.fingerprint(settings, self.rules, limits)

    def cache_key(self, message: Message) -> str:
        """What the decoder reads (`mime_view`), its quota for this size, the rules and limits.

        The top-level fields other than Content-* and MIME-* do not count: copies of one
        message that differ only in Received, To or Message-ID share a verdict.
        """
        quota = self.limits.quota(message.size)  # depends on the whole size
        header, rest = mime_header(message.raw)  # the view without copying the body
        return cache.key(self._fingerprint, str(quota), header, memoryview(message.raw)[rest:])

    async def scan(self, message: Message) -> ScanResult:
        decoded = message.parts
        if decoded is None:
            decoded = await asyncio.to_thread(decode, message.raw, self.limits)
        # thousands of parts times a dozen rules: not on the event loop; a few parts are
        # checked faster than a thread hand-off takes
        if sum(1 for _ in decoded.walk()) > INLINE_PARTS:
            banned = await asyncio.to_thread(find_banned, decoded, self.rules)
        else:
            banned = find_banned(decoded, self.rules)
        findings = [Finding(ContentsCategory.BANNED, part.reason, self.name) for part in banned]
        findings += [
            Finding(ContentsCategory.UNCHECKED, text, self.name) for text in decoded.problems
        ]
        return ScanResult(self.name, tuple(findings))

    async def close(self) -> None:
        return None


INLINE_PARTS = 64  # up to this many parts the rules run on the event loop
