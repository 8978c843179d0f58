"""Recipient pages, reached from a link in a notice or digest: no login, the signed
token is the permission.

An action token (`release`, `release-allow`, `delete`, `request-release`) opens a page
that shows the message and asks for confirmation; only the POST of that page acts,
and uses the token up. A `list` token (from a digest) opens the recipient's own list
and lets them act on each of their copies while it is valid. A token only ever
reaches the copy of the recipient it was made for.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contentfilter.errors import QuarantineError, TokenError
from contentfilter.quarantine import Entry, Query, Via, actions, tokens
from contentfilter.quarantine.tokens import Claim
from contentfilter.web import operations, pages
from contentfilter.web.context import checked_form, client_of, problem, render, web_of

TOKEN_PROBLEMS = {
    "expired": (410, "This link has expired"),
    "used": (410, "This link has been used already"),
    "unavailable": (503, "Please try again later"),
}


def routes() -> list[Route]:
    return [
        Route("/t/{token}", show, methods=["GET"]),
        Route("/t/{token}", act, methods=["POST"]),
        Route("/t/{token}/m/{mail_id}", show_listed, methods=["GET"]),
        Route("/t/{token}/m/{mail_id}", act_listed, methods=["POST"]),
    ]


async def _claim(request: Request) -> Claim | Response:
    """The token's claim, or the page saying why it cannot be used."""
    web = web_of(request)
    if not web.token_limit.allow(client_of(request)):
        return problem(request, 429, "Too many requests", "Please wait a few minutes.")
    try:
        return tokens.verify(web.link_key, request.path_params["token"])
    except TokenError as error:
        return _token_problem(request, error)


def _token_problem(request: Request, error: TokenError) -> Response:
    status, title = TOKEN_PROBLEMS.get(error.kind, (403, "This link cannot be used"))
    return problem(request, status, title, error.reason)


async def _entry(request: Request, claim: Claim, mail_id: str) -> Entry | Response:
    """The message if the token's recipient is one of its recipients, else a 404 page
    (the same page whether the message does not exist or is someone else's)."""
    entry = await web_of(request).store.get(mail_id) if mail_id else None
    if entry is None or entry.recipient(claim.recipient) is None:
        return problem(request, 404, "Not found", "There is no such message for you.")
    return entry


async def show(request: Request) -> Response:
    claim = await _claim(request)
    if isinstance(claim, Response):
        return claim
    if claim.action == "list":
        return await _list(request, claim)
    entry = await _entry(request, claim, claim.mail_id)
    if isinstance(entry, Response):
        return entry
    possible = claim.action in operations.recipient_actions(entry, claim.recipient)
    return await pages.message(
        request,
        entry,
        recipient=claim.recipient,
        actions=(claim.action,) if possible else (),
        form_action=f"/t/{request.path_params['token']}",
        token=request.path_params["token"],
    )


async def act(request: Request) -> Response:
    claim = await _claim(request)
    if isinstance(claim, Response):
        return claim
    form = await checked_form(request)
    if form is None:
        return _bad_form(request)
    if claim.action == "list" or form.get("action") != claim.action:
        return problem(request, 400, "Not possible", "This link is for another action.")
    entry = await _entry(request, claim, claim.mail_id)
    if isinstance(entry, Response):
        return entry
    web = web_of(request)  # act_on_link refuses what the recipient may not do, and a second use
    try:
        results = await actions.act_on_link(web.config, web.store, claim, source=client_of(request))
    except TokenError as error:
        return _token_problem(request, error)
    except QuarantineError as error:
        return problem(request, 503, "Not done", f"The quarantine could not do it: {error}")
    return render(
        request,
        "done.html",
        title=operations.LABELS[claim.action],
        entry=entry,
        outcomes=operations.outcomes(results),
        back="",
    )


async def _list(request: Request, claim: Claim) -> Response:
    web = web_of(request)
    entries = await web.store.search(Query(recipient=claim.recipient, limit=200))
    return render(
        request,
        "recipient_list.html",
        title="Your held mail",
        recipient=claim.recipient,
        entries=entries,
        token=request.path_params["token"],
    )


async def _listed(request: Request) -> tuple[Claim, Entry] | Response:
    claim = await _claim(request)
    if isinstance(claim, Response):
        return claim
    if claim.action != "list":
        return problem(request, 404, "Not found", "There is no such page.")
    entry = await _entry(request, claim, request.path_params["mail_id"])
    return entry if isinstance(entry, Response) else (claim, entry)


async def show_listed(request: Request) -> Response:
    found = await _listed(request)
    if isinstance(found, Response):
        return found
    claim, entry = found
    token = request.path_params["token"]
    return await pages.message(
        request,
        entry,
        recipient=claim.recipient,
        actions=operations.recipient_actions(entry, claim.recipient),
        form_action=f"/t/{token}/m/{entry.mail_id}",
        token=token,
    )


async def act_listed(request: Request) -> Response:
    found = await _listed(request)
    if isinstance(found, Response):
        return found
    claim, entry = found
    form = await checked_form(request)
    if form is None:
        return _bad_form(request)
    action = form.get("action")
    if action not in operations.recipient_actions(entry, claim.recipient):
        return problem(request, 400, "Not possible", "This cannot be done to this message now.")
    back = f"/t/{request.path_params['token']}"
    return await _carry_out(request, entry, str(action), claim.recipient, back)


async def _carry_out(
    request: Request, entry: Entry, action: str, recipient: str, back: str
) -> Response:
    web = web_of(request)
    try:
        outcomes = await operations.carry_out(
            web.config,
            web.store,
            action,
            entry.mail_id,
            [recipient],
            actor=recipient,
            via=Via.LINK,
            source=client_of(request),
        )
    except QuarantineError as error:
        return problem(request, 503, "Not done", f"The quarantine could not do it: {error}")
    return render(
        request,
        "done.html",
        title=operations.LABELS[action],
        entry=entry,
        outcomes=outcomes,
        back=back,
    )


def _bad_form(request: Request) -> Response:
    return problem(
        request,
        403,
        "Form expired",
        "The form was not sent from this page, or it is too old. Open the link again.",
    )
