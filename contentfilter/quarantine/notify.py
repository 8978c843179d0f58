"""Notices about quarantined mail: to admins (viruses, banned files) and to recipients,
at once or as a digest, with signed single-use links.

The filter calls `at_once` (through `AtOnce`) when it keeps a message: admin notices
and `immediate` recipient notices. `contentfilter quarantine digest` (cron or the
shipped systemd timer) calls `run` for the rest and for what failed. Every
item is sent once: it is claimed in the store (`notice:...`) before sending, and given
back (`unclaim`) when the next hop did not take the notice, so the next run sends it
again. A notice is never dropped silently: a failure is logged and retried; only a
crash between claiming and sending loses one notice (logged as claimed).

Templates are plain text files read with `string.Template` (`$subject`, `$links`):
no logic in them, and values from hostile mail cannot run anything; an unknown
`$name` stays as written instead of failing the notice. The first line of a template
may be `Subject: ...`. The digest lists its items with `digest-item.txt`.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING

from contentfilter.config import Config
from contentfilter.errors import RelayError
from contentfilter.model import Envelope, Recipient
from contentfilter.policy_settings import is_local
from contentfilter.quarantine import Entry, QuarantineStore, Query, State, tokens
from contentfilter.quarantine.actions import RECIPIENT_MAY, Deliverer
from contentfilter.quarantine.notice_settings import FREQUENCY_SECONDS

if TYPE_CHECKING:
    from contentfilter.metrics import Metrics
    from contentfilter.relay import NextHop

log = logging.getLogger("contentfilter.quarantine")

SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / "config" / "notices"
LOOKBACK = timedelta(days=14)  # held mail older than this gets no first notice
PAGE = 500
CLAIM_DAYS = 400  # a notice key is kept longer than any retention
ACTION_WORDS = {
    "release": "Release it to you",
    "release-allow": "Release it and always accept mail from this sender",
    "delete": "Delete it",
    "request-release": "Ask the postmaster to release it",
    "list": "Everything held for you",
}


@dataclass
class Report:
    """What one run did: counts for the command's output, failures for its exit status."""

    admin_notices: int = 0
    recipient_notices: int = 0
    digests: int = 0
    failures: list[str] = field(default_factory=list)
    metrics: Metrics | None = field(default=None, repr=False)

    def count(self, kind: str, sent: bool) -> None:
        if sent:
            setattr(self, kind, getattr(self, kind) + 1)
        if self.metrics is not None:
            label = {"admin_notices": "admin", "recipient_notices": "notice"}.get(kind, "digest")
            self.metrics.notified(label, "sent" if sent else "failed")

    def __str__(self) -> str:
        text = (
            f"{self.admin_notices} admin notice(s), {self.recipient_notices} recipient"
            f" notice(s), {self.digests} digest(s) sent"
        )
        return text + (f", {len(self.failures)} failed (retried next run)" if self.failures else "")


# --- the run ----------------------------------------------------------------------------


async def run(
    config: Config,
    store: QuarantineStore,
    deliverer: Deliverer,
    now: datetime | None = None,
    metrics: Metrics | None = None,
) -> Report:
    """Send every notice that is due; each item once (see the module's docstring). With
    `metrics`, each notice is counted in `quarantine_notifications_total`."""
    moment = now or datetime.now(UTC)
    report = Report(metrics=metrics)
    entries = await _recent(store, moment)
    for entry in entries:
        await _admin_notice(config, store, deliverer, entry, report)
    by_recipient: dict[str, list[Entry]] = {}
    for entry in entries:
        if entry.category not in config.notices.recipients.categories:
            continue
        for held in entry.recipients:
            if held.state is State.HELD and is_local(held.address, config.policy.local_domains):
                by_recipient.setdefault(held.address.lower(), []).append(entry)
    for recipient, items in by_recipient.items():
        await _recipient(config, store, deliverer, recipient, items, moment, report)
    return report


async def at_once(
    config: Config,
    store: QuarantineStore,
    deliverer: Deliverer,
    entry: Entry,
    metrics: Metrics | None = None,
) -> Report:
    """The notices due the moment the filter kept `entry`: the admin notice and the
    notices of recipients whose frequency is `immediate`. The same claims as `run`, so
    the next digest run sends none of them twice and retries what failed here."""
    moment = datetime.now(UTC)
    report = Report(metrics=metrics)
    await _admin_notice(config, store, deliverer, entry, report)
    if entry.category not in config.notices.recipients.categories:
        return report
    settings = config.notices.recipients
    for held in entry.recipients:
        address = held.address.lower()
        if (
            held.state is State.HELD
            and settings.frequency_for(address) == "immediate"
            and is_local(address, config.policy.local_domains)
        ):
            await _recipient(config, store, deliverer, address, [entry], moment, report)
    return report


def due_at_once(config: Config, entry: Entry) -> bool:
    """Whether keeping `entry` calls for a notice now (cheap: settings only)."""
    if config.notices.admin.for_category(entry.category):
        return True
    if entry.category not in config.notices.recipients.categories:
        return False
    settings = config.notices.recipients
    return any(settings.frequency_for(r.address) == "immediate" for r in entry.recipients)


class AtOnce:
    """What the filter calls once it kept a message (`Pipeline.on_kept`): `at_once`
    through `notices.smtp`, else the filter's own next hop."""

    def __init__(
        self,
        config: Config,
        store: QuarantineStore,
        next_hop: Deliverer,
        metrics: Callable[[], Metrics | None] = lambda: None,
    ) -> None:
        self.config, self.store, self.metrics = config, store, metrics
        self._own_hop: NextHop | None = None
        self.hop = next_hop
        if config.notices.smtp:
            from contentfilter.addresses import HostPort
            from contentfilter.relay import NextHop

            address = HostPort.parse(config.notices.smtp)
            settings = replace(config.next_hop, address=address, xforward=False)
            self.hop = self._own_hop = NextHop(settings, config.server.hostname)

    @staticmethod
    def wanted(config: Config) -> bool:
        """Whether any notice can be due at once with these settings."""
        admin, recipients = config.notices.admin, config.notices.recipients
        return bool(admin.virus or admin.banned) or "immediate" in (
            recipients.frequency,
            *recipients.per_recipient.values(),
        )

    async def __call__(self, entry: Entry) -> None:
        if due_at_once(self.config, entry):
            await at_once(self.config, self.store, self.hop, entry, self.metrics())

    async def close(self) -> None:
        if self._own_hop is not None:
            await self._own_hop.close()


async def _recent(store: QuarantineStore, moment: datetime) -> list[Entry]:
    entries: list[Entry] = []
    offset = 0
    while True:
        page = await store.search(Query(since=moment - LOOKBACK, limit=PAGE, offset=offset))
        entries.extend(page)
        if len(page) < PAGE:
            return entries[::-1]  # oldest first: notices in the order mail came
        offset += PAGE


async def _admin_notice(
    config: Config, store: QuarantineStore, deliverer: Deliverer, entry: Entry, report: Report
) -> None:
    admins = config.notices.admin.for_category(entry.category)
    if not admins:
        return
    key = f"notice:admin:{entry.mail_id}"
    if not await store.claim(key, _keep_until(entry)):
        return
    message = admin_notice(config, entry, admins)
    sent = await _send(deliverer, config, admins, message, key, store, report)
    report.count("admin_notices", sent)


async def _recipient(
    config: Config,
    store: QuarantineStore,
    deliverer: Deliverer,
    recipient: str,
    entries: list[Entry],
    moment: datetime,
    report: Report,
) -> None:
    frequency = config.notices.recipients.frequency_for(recipient)
    if frequency == "off":
        return
    if frequency == "immediate":
        for entry in entries:
            key = f"notice:{entry.mail_id}:{recipient}"
            if await store.claim(key, _keep_until(entry)):
                message = recipient_notice(config, entry, recipient, moment)
                sent = await _send(deliverer, config, [recipient], message, key, store, report)
                report.count("recipient_notices", sent)
        return
    period = FREQUENCY_SECONDS[frequency]
    turn = f"digest:{recipient}:{frequency}:{int(moment.timestamp()) // period}"
    if not await store.claim(turn, moment + timedelta(seconds=2 * period)):
        return  # this recipient had their digest in this period
    new = [
        e for e in entries if await store.claim(f"notice:{e.mail_id}:{recipient}", _keep_until(e))
    ]
    if not new:
        await store.unclaim(turn)
        return
    message = digest(config, recipient, new, moment)
    keys = [turn, *(f"notice:{e.mail_id}:{recipient}" for e in new)]
    sent = await _send(deliverer, config, [recipient], message, keys, store, report)
    report.count("digests", sent)


def _keep_until(entry: Entry) -> datetime:
    return entry.stored + timedelta(days=CLAIM_DAYS)


async def _send(
    deliverer: Deliverer,
    config: Config,
    to: Sequence[str],
    message: bytes,
    keys: str | Sequence[str],
    store: QuarantineStore,
    report: Report,
) -> bool:
    """Send one notice; on any failure give its claims back (retried next run)."""
    sender = notice_sender(config)
    envelope = Envelope(sender, tuple(Recipient(a) for a in to))
    problem = ""
    try:
        delivery = await deliverer.deliver(envelope, envelope.recipients, message)
        refused = [f"<{r.recipient.address}>: {r.code} {r.text}" for r in delivery.recipients]
        if all(r.accepted for r in delivery.recipients):
            return True
        problem = "; ".join(
            t for t, r in zip(refused, delivery.recipients, strict=True) if not r.accepted
        )
    except RelayError as error:
        problem = str(error)
    log.warning("notice to %s not sent (retried next run): %s", ", ".join(to), problem)
    report.failures.append(problem)
    for key in [keys] if isinstance(keys, str) else keys:
        await store.unclaim(key)
    return False


# --- the messages -----------------------------------------------------------------------


def notice_sender(config: Config) -> str:
    return config.notices.sender or f"postmaster@{config.server.hostname}"


def admin_notice(config: Config, entry: Entry, admins: Sequence[str]) -> bytes:
    """amavisd-new's virus_admin / banned_admin notice, with the quarantine id."""
    fields = _entry_fields(entry)
    fields["recipients"] = ", ".join(f"<{r.address}>" for r in entry.recipients)
    fields["findings"] = "\n".join(f"  {line}" for line in entry.findings) or "  (none)"
    fields["release_command"] = f"contentfilter quarantine release {entry.mail_id}"
    subject, body = _render(config, "admin.txt", fields)
    return _message(config, admins, subject, body)


def recipient_notice(config: Config, entry: Entry, recipient: str, now: datetime) -> bytes:
    """ "A message for you was held": sender, subject, reason, id, and links."""
    fields = _entry_fields(entry)
    fields["recipient"] = recipient
    fields["links"] = _links(config, entry, recipient, now)
    subject, body = _render(config, "recipient.txt", fields)
    return _message(config, [recipient], subject, body)


def digest(config: Config, recipient: str, entries: Sequence[Entry], now: datetime) -> bytes:
    """What is new in the quarantine for `recipient`, one item per message."""
    item_template = _template(config, "digest-item.txt")
    items = []
    for entry in entries:
        fields = _entry_fields(entry)
        fields["links"] = _links(config, entry, recipient, now).replace("\n", "\n  ")
        items.append(item_template.safe_substitute(fields).rstrip("\n"))
    fields = {
        "recipient": recipient,
        "count": str(len(entries)),
        "items": "\n\n".join(items),
        "list_link": _list_link(config, recipient, now),
        "hostname": config.server.hostname,
    }
    subject, body = _render(config, "digest.txt", fields)
    return _message(config, [recipient], subject, body)


def _entry_fields(entry: Entry) -> dict[str, str]:
    return {
        "mail_id": entry.mail_id,
        "date": format_datetime(entry.stored.astimezone(UTC)),
        "category": entry.category,
        "reason": _one_line(entry.reason),
        "sender": f"<{_one_line(entry.sender)}>",
        "subject": _one_line(entry.subject) or "(no subject)",
        "from": _one_line(entry.from_header),
        "message_id": _one_line(entry.message_id),
        "size": str(entry.size),
        "client_address": entry.client_address,
        "host": entry.host,
    }


def _links(config: Config, entry: Entry, recipient: str, now: datetime) -> str:
    links = config.notices.links
    if not links.enabled:
        return f"Ask your postmaster, giving the quarantine id {entry.mail_id}."
    lines = []
    for action in RECIPIENT_MAY.get(entry.category, ("delete",)):
        token = tokens.issue(
            links.secret,
            mail_id=entry.mail_id,
            recipient=recipient,
            action=action,
            ttl=links.ttl,
            now=now,
        )
        lines.append(f"{ACTION_WORDS[action]}:\n  {links.base_url}/t/{token}")
    return "\n".join(lines)


def _list_link(config: Config, recipient: str, now: datetime) -> str:
    links = config.notices.links
    if not links.enabled:
        return ""
    token = tokens.issue(
        links.secret, mail_id="", recipient=recipient, action="list", ttl=links.ttl, now=now
    )
    return f"{ACTION_WORDS['list']}:\n  {links.base_url}/t/{token}"


def _one_line(text: str) -> str:
    """A value from the mail as one printable line, not too long."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= 200 else cleaned[:197] + "..."


def _template(config: Config, name: str) -> string.Template:
    directory = Path(config.notices.templates) if config.notices.templates else SHIPPED_TEMPLATES
    path = directory / name
    if not path.is_file():  # an admin's directory may hold only the ones they changed
        path = SHIPPED_TEMPLATES / name
    return string.Template(path.read_text(encoding="utf-8"))


def _render(config: Config, name: str, fields: dict[str, str]) -> tuple[str, str]:
    text = _template(config, name).safe_substitute(fields, hostname=config.server.hostname)
    subject = "Quarantine notice"
    first, _, rest = text.partition("\n")
    if first.lower().startswith("subject:"):
        subject, text = first.partition(":")[2].strip(), rest.lstrip("\n")
    return _one_line(subject), text


def _message(config: Config, to: Sequence[str], subject: str, body: str) -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = notice_sender(config)
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=config.server.hostname)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message.set_content(body, charset="utf-8")
    return message.as_bytes()
