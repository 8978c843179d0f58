"""The message page shared by recipients and admins: summary, safe preview, part tree."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from contentfilter.model import DecodedMessage, Part
from contentfilter.quarantine import Entry
from contentfilter.web import operations
from contentfilter.web.context import render, web_of
from contentfilter.web.preview import Preview, preview


async def looked_at(request: Request, entry: Entry) -> tuple[Preview | None, list[Part]]:
    """The preview and the part tree (decoded in a worker process: hostile bytes)."""
    web = web_of(request)
    raw = None if entry.body_removed else await web.store.body(entry.mail_id)
    if raw is None:
        return None, []
    shown = await asyncio.to_thread(preview, raw)
    decoded: DecodedMessage = await web.decoder.decode(raw)
    return shown, list(decoded.walk())


async def message(
    request: Request,
    entry: Entry,
    *,
    recipient: str | None,
    actions: tuple[str, ...],
    form_action: str = "",
    token: str = "",
) -> Response:
    """The page of one message; `recipient` None is the admin's view of every copy."""
    shown, parts = await looked_at(request, entry)
    copies = entry.recipients if recipient is None else (entry.recipient(recipient),)
    return render(
        request,
        "message.html",
        title=entry.subject or "(no subject)",
        entry=entry,
        copies=[c for c in copies if c is not None],
        preview=shown,
        parts=parts,
        actions=[(a, operations.LABELS[a]) for a in actions],
        form_action=form_action,
        token=token,
        as_admin=recipient is None,
    )
