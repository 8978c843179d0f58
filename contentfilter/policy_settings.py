"""The `policy:` and `policy_banks:` sections: what admins tune.

Each key carries amavisd-new's name in a comment so admins can map what they know.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from contentfilter.addresses import Network
from contentfilter.model import ContentsCategory, Destiny


@dataclass(frozen=True)
class Destinies:
    """Destiny per contents category ($final_*_destiny)."""

    virus: Destiny = Destiny.DISCARD  # $final_virus_destiny
    banned: Destiny = Destiny.DISCARD  # $final_banned_destiny
    unchecked: Destiny = Destiny.PASS  # $final_unchecked_destiny
    spam: Destiny = Destiny.PASS  # $final_spam_destiny
    bad_header: Destiny = Destiny.PASS  # $final_bad_header_destiny
    oversized: Destiny = Destiny.BOUNCE  # $final_oversized_destiny

    def for_category(self, category: ContentsCategory) -> Destiny:
        name = {
            ContentsCategory.VIRUS: "virus",
            ContentsCategory.BANNED: "banned",
            ContentsCategory.UNCHECKED: "unchecked",
            ContentsCategory.SPAM: "spam",
            ContentsCategory.BAD_HEADER: "bad_header",
            ContentsCategory.OVERSIZED: "oversized",
        }.get(category)
        return Destiny.PASS if name is None else getattr(self, name)


@dataclass(frozen=True)
class SubjectTags:
    """Subject prefixes per category; `_SCORE_` and `_REQD_` are expanded."""

    spam: str = "***SPAM*** "  # $sa_spam_subject_tag (at tag2 level)
    spam3: str = ""  # $sa_spam_subject_tag3 (at tag3 level, if set)
    unchecked: str = "***UNCHECKED*** "  # $undecipherable_subject_tag
    virus: str = "***INFECTED*** "  # subject tag for a virus passed to a virus lover
    banned: str = "***BANNED*** "
    bad_header: str = ""


@dataclass(frozen=True)
class RecipientOverrides:
    """Per-recipient/domain and per-policy-bank settings; unset keys inherit."""

    tag_level: float | Literal["always"] | None = None  # $sa_tag_level_deflt (undef: "always")
    tag2_level: float | None = None  # $sa_tag2_level_deflt
    tag3_level: float | None = None  # $sa_tag3_level_deflt
    kill_level: float | None = None  # $sa_kill_level_deflt
    dsn_cutoff_level: float | None = None  # $sa_dsn_cutoff_level
    virus_destiny: Destiny | None = None
    banned_destiny: Destiny | None = None
    unchecked_destiny: Destiny | None = None
    spam_destiny: Destiny | None = None
    bad_header_destiny: Destiny | None = None
    spam_lover: bool | None = None  # spam_lovers_maps
    virus_lover: bool | None = None  # virus_lovers_maps
    banned_files_lover: bool | None = None  # banned_files_lovers_maps
    bad_header_lover: bool | None = None  # bad_header_lovers_maps
    unchecked_lover: bool | None = None  # unchecked_lovers_maps
    bypass_spam_checks: bool | None = None  # bypass_spam_checks_maps
    bypass_virus_checks: bool | None = None  # bypass_virus_checks_maps
    bypass_banned_checks: bool | None = None  # bypass_banned_checks_maps
    bypass_header_checks: bool | None = None  # bypass_header_checks_maps
    local: bool | None = None  # force local (headers and tags) or not


@dataclass(frozen=True)
class RecipientPolicy:
    """The fully resolved settings for one recipient (no unset values)."""

    tag_level: float | None = 2.0
    tag2_level: float = 6.31
    tag3_level: float | None = None
    kill_level: float = 6.31
    dsn_cutoff_level: float | None = 10.0
    destinies: Destinies = Destinies()
    spam_lover: bool = False
    virus_lover: bool = False
    banned_files_lover: bool = False
    bad_header_lover: bool = False
    unchecked_lover: bool = False
    bypass_spam_checks: bool = False
    bypass_virus_checks: bool = False
    bypass_banned_checks: bool = False
    bypass_header_checks: bool = False
    local: bool = True

    def with_overrides(self, overrides: RecipientOverrides) -> RecipientPolicy:
        changes: dict[str, object] = {}
        destinies: dict[str, Destiny] = {}
        for spec in dataclasses.fields(overrides):
            value = getattr(overrides, spec.name)
            if value is None:
                continue
            if value == "always":  # amavisd-new's undef tag level: headers for every score
                changes[spec.name] = None
            elif spec.name.endswith("_destiny"):
                destinies[spec.name.removesuffix("_destiny")] = value
            else:
                changes[spec.name] = value
        if destinies:
            changes["destinies"] = dataclasses.replace(self.destinies, **destinies)
        return dataclasses.replace(self, **changes) if changes else self  # type: ignore[arg-type]


@dataclass(frozen=True)
class SenderLists:
    """Sender allow/deny lists (amavisd-new's white/blacklist_sender_maps, score_sender_maps).

    Entries: a full address, `@domain`, `.domain` (any subdomain) or a shell glob.
    """

    allow: tuple[str, ...] = ()  # never spam (whitelist_sender_maps)
    deny: tuple[str, ...] = ()  # always spam (blacklist_sender_maps)
    score: dict[str, float] = field(default_factory=dict)  # added to the score (score_sender_maps)


def address_matches(pattern: str, address: str) -> bool:
    """amavisd-new lookup semantics, simplified: address, @domain, .domain, domain, glob."""
    pattern, address = pattern.lower(), address.lower()
    domain = address.rpartition("@")[2]
    if pattern.startswith("@"):
        return domain == pattern[1:]
    if pattern.startswith("."):
        return domain == pattern[1:] or domain.endswith(pattern)
    if "@" not in pattern and not any(c in pattern for c in "*?["):
        return domain == pattern
    return address == pattern or fnmatch.fnmatchcase(address, pattern)


def is_local(address: str, local_domains: Sequence[str]) -> bool:
    """@local_domains_maps: with no entries, every recipient counts as local."""
    return not local_domains or any(address_matches(p, address) for p in local_domains)


@dataclass(frozen=True)
class PolicySettings:
    """The `policy:` section."""

    local_domains: tuple[str, ...] = ()  # @local_domains_maps; empty: every recipient is local
    virus_scanned_header: str = "contentfilter at {hostname}"  # $X_HEADER_LINE
    defaults: RecipientOverrides = RecipientOverrides()
    destiny: Destinies = Destinies()
    subject_tags: SubjectTags = SubjectTags()
    recipients: dict[str, RecipientOverrides] = field(default_factory=dict)
    senders: SenderLists = SenderLists()
    # @viruses_that_fake_sender_maps; amavisd-new's default: every virus but EICAR fakes
    # the sender, so no DSN goes out for real viruses. "!pattern" means "does not fake".
    faked_sender_viruses: tuple[str, ...] = ("!*eicar*", "*")

    def base_recipient_policy(self) -> RecipientPolicy:
        return RecipientPolicy(destinies=self.destiny).with_overrides(self.defaults)


@dataclass(frozen=True)
class PolicyBank:
    """A named set of overrides chosen by listener or client address (amavisd-new policy banks)."""

    clients: tuple[Network, ...] = ()  # also chosen when the original client is in these
    overrides: RecipientOverrides = RecipientOverrides()
    local_domains: tuple[str, ...] | None = None
    subject_tags: SubjectTags | None = None
