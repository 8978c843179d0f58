"""What the page's buttons do: the quarantine's own operations, called the one way.

Release, delete, request-release and allow-sender are carried out by
`contentfilter.quarantine.actions`, as for the CLI and for links; this module only
chooses which, says which a recipient may use for a message, and turns the results
into lines a page shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contentfilter.config import Config
from contentfilter.quarantine import Entry, QuarantineStore, State, Via, actions

# labels of the buttons, in the order shown
LABELS = {
    "release": "Release",
    "release-allow": "Release and always allow this sender",
    "request-release": "Ask an admin to release it",
    "delete": "Delete",
}
# states of a copy that an admin's bulk action applies to
WAITING = frozenset({State.HELD, State.RELEASE_REQUESTED})


@dataclass(frozen=True, slots=True)
class Outcome:
    recipient: str
    done: bool
    text: str  # what happened, for the page


def recipient_actions(entry: Entry, recipient: str) -> tuple[str, ...]:
    """The actions a recipient may take on their own copy now (none once it is gone):
    the quarantine's own rule per category (viruses and banned files only by request)."""
    copy = entry.recipient(recipient)
    if copy is None or entry.body_removed or copy.state is not State.HELD:
        return ()
    allowed = actions.RECIPIENT_MAY.get(entry.category, ("delete",))
    return tuple(action for action in LABELS if action in allowed)


def admin_actions(entry: Entry) -> tuple[str, ...]:
    if entry.body_removed:
        return ()
    return ("release", "release-allow", "delete")


async def carry_out(
    config: Config,
    store: QuarantineStore,
    action: str,
    mail_id: str,
    recipients: Sequence[str],
    *,
    actor: str,
    via: Via,
    source: str,
    force: bool = False,
) -> list[Outcome]:
    """Do `action` for these recipients of `mail_id`; one outcome per recipient.

    QuarantineError for an unknown message or a store that cannot be reached."""
    who = actions.Actor(actor, via, source)
    chosen = list(recipients)
    results: list[actions.ActionResult] = []
    if action in ("release", "release-allow"):
        results += await actions.release(config, store, mail_id, chosen, actor=who, force=force)
        released = [r.recipient for r in results if r.result is actions.Result.RELEASED]
        if action == "release-allow" and released:
            entry = await store.get(mail_id)
            sender = entry.sender if entry is not None else ""
            for address in released:
                results.append(await actions.allow_sender(store, address, sender, actor=who))
    elif action == "delete":
        results += await actions.delete(store, mail_id, chosen, actor=who)
    elif action == "request-release":
        results += [await actions.request_release(store, mail_id, r, actor=who) for r in chosen]
    else:
        raise ValueError(f"unknown action {action!r}")
    return outcomes(results)


def outcomes(results: Sequence[actions.ActionResult]) -> list[Outcome]:
    return [Outcome(r.recipient, r.ok, _text(r)) for r in results]


def _text(result: actions.ActionResult) -> str:
    text = result.result.value
    return f"{text} ({result.detail})" if result.detail else text
