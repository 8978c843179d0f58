"""Pure policy: scan results + settings -> one Verdict per recipient.

amavisd-new semantics: a message falls in several contents categories; for each
recipient the deciding category is the highest one whose destiny is not PASS for
that recipient (lovers turn a destiny into PASS, bypass switches ignore the
category). Header edits apply to recipients in local domains only, except the
X-Virus-Scanned line, which every passed copy gets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from contentfilter import bounce, headers
from contentfilter.config import Listener
from contentfilter.model import (
    ContentsCategory,
    Destiny,
    DsnDecision,
    Envelope,
    Finding,
    Message,
    Recipient,
    ScanResult,
    SpamReport,
    Verdict,
)
from contentfilter.policy_settings import (
    PolicyBank,
    PolicySettings,
    RecipientPolicy,
    SubjectTags,
    address_matches,
    is_local,
)

C = ContentsCategory


@dataclass(frozen=True)
class Evidence:
    """What the scanners found, gathered once per message."""

    sender: str
    findings: tuple[Finding, ...]
    spam: SpamReport | None
    sender_score: float  # score_sender_maps adjustment
    sender_allowed: bool
    sender_denied: bool

    def details(self, category: ContentsCategory) -> list[str]:
        seen: list[str] = []
        for finding in self.findings:
            if finding.category is category and finding.detail not in seen:
                seen.append(finding.detail)
        return seen

    def spam_score(self) -> float | None:
        if self.spam is None:
            return None
        return self.spam.score + self.sender_score


def gather(message: Message, results: Sequence[ScanResult], settings: PolicySettings) -> Evidence:
    findings = tuple(f for result in results for f in result.findings)
    spam = next((r.spam for r in results if r.spam is not None), None)
    sender = message.envelope.mail_from
    lists = settings.senders
    score = sum(
        v for pattern, v in lists.score.items() if sender and address_matches(pattern, sender)
    )
    return Evidence(
        sender=sender,
        findings=findings,
        spam=spam,
        sender_score=score,
        sender_allowed=bool(sender) and any(address_matches(p, sender) for p in lists.allow),
        sender_denied=bool(sender) and any(address_matches(p, sender) for p in lists.deny),
    )


# --- which categories apply to a recipient: an ordered table of named rules ------------

CategoryRule = Callable[[Evidence, RecipientPolicy], str | None]


def _virus(evidence: Evidence, policy: RecipientPolicy) -> str | None:
    names = evidence.details(C.VIRUS)
    if names and not policy.bypass_virus_checks:
        return "INFECTED: " + ", ".join(names)
    return None


def _banned(evidence: Evidence, policy: RecipientPolicy) -> str | None:
    parts = evidence.details(C.BANNED)
    if parts and not policy.bypass_banned_checks:
        return "BANNED: " + parts[0]  # amavisd-new names the first banned part only
    return None


def _unchecked(evidence: Evidence, policy: RecipientPolicy) -> str | None:
    reasons = evidence.details(C.UNCHECKED)
    return "UNCHECKED: " + ", ".join(reasons) if reasons else None


def _spam(evidence: Evidence, policy: RecipientPolicy) -> str | None:
    if policy.bypass_spam_checks or evidence.sender_allowed:
        return None
    if evidence.sender_denied:
        return "spam (sender on deny list)"
    score = evidence.spam_score()
    return "spam" if score is not None and score >= policy.kill_level else None


def _spammy(evidence: Evidence, policy: RecipientPolicy) -> str | None:
    if policy.bypass_spam_checks or evidence.sender_allowed:
        return None
    score = evidence.spam_score()
    return "spammy" if score is not None and score >= policy.tag2_level else None


def _bad_header(evidence: Evidence, policy: RecipientPolicy) -> str | None:
    problems = evidence.details(C.BAD_HEADER)
    if problems and not policy.bypass_header_checks:
        return "BAD HEADER: " + ", ".join(problems)
    return None


def _oversized(evidence: Evidence, policy: RecipientPolicy) -> str | None:
    sizes = evidence.details(C.OVERSIZED)
    return "OVERSIZED: " + ", ".join(sizes) if sizes else None


CATEGORY_RULES: tuple[tuple[ContentsCategory, CategoryRule], ...] = (
    (C.VIRUS, _virus),
    (C.BANNED, _banned),
    (C.UNCHECKED, _unchecked),
    (C.SPAM, _spam),
    (C.SPAMMY, _spammy),
    (C.BAD_HEADER, _bad_header),
    (C.OVERSIZED, _oversized),
)

LOVERS = {
    C.VIRUS: "virus_lover",
    C.BANNED: "banned_files_lover",
    C.UNCHECKED: "unchecked_lover",
    C.SPAM: "spam_lover",
    C.BAD_HEADER: "bad_header_lover",
}


def categories(evidence: Evidence, policy: RecipientPolicy) -> list[tuple[ContentsCategory, str]]:
    """The categories the message falls in for this recipient, highest first."""
    found = [
        (category, reason)
        for category, rule in CATEGORY_RULES
        if (reason := rule(evidence, policy)) is not None
    ]
    return found or [(C.CLEAN, "CLEAN")]


def destiny_for(category: ContentsCategory, policy: RecipientPolicy) -> tuple[Destiny, str]:
    """The destiny of a category for a recipient, and the setting that decided it."""
    lover = LOVERS.get(category)
    if lover and getattr(policy, lover):
        return Destiny.PASS, lover
    return policy.destinies.for_category(category), f"destiny.{category.config_name}"


# --- per-recipient settings -----------------------------------------------------------


def recipient_policy(
    address: str, settings: PolicySettings, bank: PolicyBank | None
) -> RecipientPolicy:
    """Defaults, then the policy bank, then domain and address entries (most specific last)."""
    policy = settings.base_recipient_policy()
    if bank is not None:
        policy = policy.with_overrides(bank.overrides)
    domains = settings.local_domains
    if bank is not None and bank.local_domains is not None:
        domains = bank.local_domains
    policy = replace(policy, local=is_local(address, domains))
    matching = [(len(key), key) for key in settings.recipients if address_matches(key, address)]
    for _, key in sorted(matching):
        policy = policy.with_overrides(settings.recipients[key])
    return policy


def choose_bank(
    envelope: Envelope, listeners: Sequence[Listener], banks: Mapping[str, PolicyBank]
) -> PolicyBank | None:
    """amavisd-new's policy bank: the listener's own, else the first whose clients match.

    The client is the original one (XFORWARD ADDR) when Postfix sent it, else our peer.
    """
    for listener in listeners:
        if listener.policy_bank and str(listener.address) == envelope.listener:
            return banks[listener.policy_bank]
    client = envelope.original_client
    for bank in banks.values():
        if any(client in network for network in bank.clients):
            return bank
    return None


# --- the decision ---------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """Per-message values the decision needs beyond the scan results."""

    hostname: str
    settings: PolicySettings
    bank: PolicyBank | None = None

    @property
    def subject_tags(self) -> SubjectTags:
        if self.bank is not None and self.bank.subject_tags is not None:
            return self.bank.subject_tags
        return self.settings.subject_tags


def decide(
    message: Message, results: Sequence[ScanResult], context: Context
) -> tuple[Verdict, ...]:
    """One verdict per envelope recipient."""
    evidence = gather(message, results, context.settings)
    return tuple(
        decide_recipient(recipient, evidence, context) for recipient in message.envelope.recipients
    )


def decide_recipient(recipient: Recipient, evidence: Evidence, context: Context) -> Verdict:
    policy = recipient_policy(recipient.address, context.settings, context.bank)
    found = categories(evidence, policy)
    dsn = dsn_decision(evidence, policy, context.settings)
    for category, reason in found:
        destiny, rule = destiny_for(category, policy)
        if destiny is not Destiny.PASS:
            details = tuple(evidence.details(category))
            return Verdict(
                recipient, category, destiny, reason, rule=rule, details=details, dsn=dsn
            )
    category, reason = found[0]
    lines, tag = _edits(evidence, policy, found, context)
    return Verdict(
        recipient,
        category,
        Destiny.PASS,
        reason,
        header_lines=lines,
        subject_tag=tag,
        remove_spam_headers=policy.local,
        rule=destiny_for(category, policy)[1],
        details=tuple(evidence.details(category)),
        dsn=dsn,
    )


def dsn_decision(
    evidence: Evidence, policy: RecipientPolicy, settings: PolicySettings
) -> DsnDecision:
    """Whether the sender hears of it when this recipient's copy is bounced or refused.

    The recipient's own dsn_cutoff_level decides, policy bank included.
    """
    suppressed = bounce.should_send_dsn(
        evidence.sender,
        evidence.spam_score(),
        policy.dsn_cutoff_level,
        evidence.details(C.VIRUS),
        settings.faked_sender_viruses,
    )
    return DsnDecision() if suppressed is None else DsnDecision(send=False, reason=suppressed)


def _edits(
    evidence: Evidence,
    policy: RecipientPolicy,
    found: list[tuple[ContentsCategory, str]],
    context: Context,
) -> tuple[tuple[bytes, ...], str]:
    lines: list[bytes] = []
    if not policy.bypass_virus_checks:
        text = context.settings.virus_scanned_header.replace("{hostname}", context.hostname)
        lines.append(headers.virus_scanned_header(text))
    if not policy.local:
        return tuple(lines), ""
    for category, _reason in found:
        if category in (C.VIRUS, C.BANNED, C.BAD_HEADER):
            details = evidence.details(category)
            lines.append(headers.alert_header(headers.alert_text(category, details)))
        elif category is C.UNCHECKED:  # amavisd-new only tags the Subject; we say why
            details = evidence.details(category)
            lines.append(headers.alert_header("UNCHECKED, " + ", ".join(details)))
    lines.extend(_spam_lines(evidence, policy))
    return tuple(lines), _subject_tag(evidence, policy, found, context.subject_tags)


def _spam_lines(evidence: Evidence, policy: RecipientPolicy) -> list[bytes]:
    score = evidence.spam_score()
    if evidence.spam is None or score is None or policy.bypass_spam_checks:
        return []
    if policy.tag_level is not None and score < policy.tag_level:
        return []
    spammy = score >= policy.tag2_level or evidence.sender_denied
    if evidence.sender_allowed:
        spammy = False
    return list(
        headers.spam_headers(
            score=score,
            tagged_above=policy.tag_level,
            required=policy.tag2_level,
            is_spammy=spammy,
            tests=evidence.spam.tests,
            autolearn=evidence.spam.autolearn,
        )
    )


def _subject_tag(
    evidence: Evidence,
    policy: RecipientPolicy,
    found: list[tuple[ContentsCategory, str]],
    tags: SubjectTags,
) -> str:
    score = evidence.spam_score()
    by_category = {
        C.VIRUS: tags.virus,
        C.BANNED: tags.banned,
        C.UNCHECKED: tags.unchecked,
        C.SPAM: tags.spam,
        C.SPAMMY: tags.spam,
        C.BAD_HEADER: tags.bad_header,
    }
    for category, _reason in found:
        tag = by_category.get(category, "")
        if (
            category in (C.SPAM, C.SPAMMY)
            and tags.spam3
            and policy.tag3_level is not None
            and score is not None
            and score >= policy.tag3_level
        ):
            tag = tags.spam3
        if tag:
            required = policy.tag2_level
            return headers.expand_subject_tag(tag, score, required)
    return ""
