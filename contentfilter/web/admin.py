"""Admin pages, behind a login: search, the message page with per-recipient actions,
bulk actions, the release-request queue, the audit trail, downloads."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contentfilter.errors import QuarantineError
from contentfilter.quarantine import Change, Entry, Query, State, Via
from contentfilter.web import admins, imap, operations, pages
from contentfilter.web.context import (
    checked_form,
    client_of,
    problem,
    redirect,
    render,
    session_of,
    start_session,
    web_of,
)
from contentfilter.web.downloads import download
from contentfilter.web.security import Session

Page = Callable[[Request], Awaitable[Response]]
SEARCH_FIELDS = ("sender", "recipient", "subject", "mail_id", "queue_id", "message_id")


def routes() -> list[Route]:
    return [
        Route("/admin/login", login_page, methods=["GET"]),
        Route("/admin/login", login, methods=["POST"]),
        Route("/admin/logout", logout, methods=["POST"]),
        Route("/admin", logged_in(search)),
        Route("/admin/requests", logged_in(requests)),
        Route("/admin/audit", logged_in(audit)),
        Route("/admin/m/{mail_id}", logged_in(show), methods=["GET"]),
        Route("/admin/m/{mail_id}", logged_in(act), methods=["POST"]),
        Route("/admin/bulk", logged_in(bulk), methods=["POST"]),
        Route("/admin/m/{mail_id}/download/{part_id}", logged_in(download)),
    ]


def logged_in(page: Page) -> Page:
    async def checked(request: Request) -> Response:
        if session_of(request).admin is None:
            return redirect(request, "/admin/login")
        return await page(request)

    return checked


async def login_page(request: Request) -> Response:
    return render(request, "login.html", title="Log in", failed=False)


async def login(request: Request) -> Response:
    web = web_of(request)
    if not web.login_limit.allow(client_of(request)):
        return problem(request, 429, "Too many attempts", "Please wait a few minutes.")
    form = await checked_form(request)
    if form is None:
        return render(request, "login.html", status=403, title="Log in", failed=True)
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    good = await asyncio.to_thread(admins.verify, web.admins_file, name, password)
    if not good and name in web.config.web.imap.admins:
        good = await asyncio.to_thread(imap.verify, web.config.web.imap, name, password)
    if not good:
        return render(request, "login.html", status=403, title="Log in", failed=True)
    ttl = web.config.web.session_ttl
    anonymous = Session.anonymous(ttl)
    start_session(request, Session(anonymous.session_id, name, anonymous.expires))
    return redirect(request, "/admin")


async def logout(request: Request) -> Response:
    if await checked_form(request) is not None:
        start_session(request, Session.anonymous(web_of(request).config.web.session_ttl))
    return redirect(request, "/admin/login")


def query_from(request: Request, page_size: int) -> Query:
    """The search form's values as a Query (bad values are ignored, not an error)."""
    values = {key: request.query_params.get(key, "").strip()[:500] for key in SEARCH_FIELDS}
    state = next((s for s in State if s.value == request.query_params.get("state")), None)
    category = request.query_params.get("category", "").strip()[:50] or None
    page = _number(request.query_params.get("page"), 1)
    return Query(
        category=category,
        since=_date(request.query_params.get("since")),
        until=_date(request.query_params.get("until"), end_of_day=True),
        state=state,
        limit=page_size,
        offset=(page - 1) * page_size,
        **{key: value or None for key, value in values.items()},
    )


def _number(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() and 0 < int(text) < 100000 else default


def _date(text: str | None, end_of_day: bool = False) -> datetime | None:
    try:
        day = datetime.strptime((text or "").strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return day + timedelta(days=1) if end_of_day else day


async def search(request: Request) -> Response:
    web = web_of(request)
    query = query_from(request, web.config.web.page_size)
    entries = await web.store.search(query)
    page = query.offset // query.limit + 1
    return render(
        request,
        "search.html",
        title="Quarantine",
        entries=entries,
        query=query,
        values=request.query_params,
        states=list(State),
        page=page,
        more=len(entries) == query.limit,
        next_query=_with_page(request, page + 1),
    )


def _with_page(request: Request, page: int) -> str:
    return str(request.url.include_query_params(page=page).query)


async def requests(request: Request) -> Response:
    web = web_of(request)
    entries = await web.store.search(Query(state=State.RELEASE_REQUESTED, limit=200))
    return render(request, "requests.html", title="Release requests", entries=entries)


AUDIT_PAGE = 500  # changes on the audit page (a mail_id shows all of that message's)


async def audit(request: Request) -> Response:
    """The newest changes of any message (or every change of one message), newest first."""
    web = web_of(request)
    mail_id = request.query_params.get("mail_id", "").strip()[:100] or None
    changes: list[tuple[Change, Entry]]
    if mail_id is None:
        changes = list(await web.store.recent_changes(limit=AUDIT_PAGE))
    else:
        entries = await web.store.search(Query(mail_id=mail_id, limit=1))
        changes = [
            (change, entry)
            for entry in entries
            for copy in entry.recipients
            for change in copy.history
        ]
        changes.sort(key=lambda item: item[0].at, reverse=True)
    return render(request, "audit.html", title="Audit trail", changes=changes, mail_id=mail_id)


async def show(request: Request) -> Response:
    entry = await web_of(request).store.get(request.path_params["mail_id"])
    if entry is None:
        return problem(request, 404, "Not found", "There is no such message in the quarantine.")
    actions = operations.admin_actions(entry)
    return await pages.message(
        request, entry, recipient=None, actions=actions, form_action=f"/admin/m/{entry.mail_id}"
    )


async def act(request: Request) -> Response:
    web = web_of(request)
    form = await checked_form(request)
    if form is None:
        return problem(request, 403, "Form expired", "Open the page again and repeat.")
    entry = await web.store.get(request.path_params["mail_id"])
    if entry is None:
        return problem(request, 404, "Not found", "There is no such message in the quarantine.")
    action = str(form.get("action", ""))
    wanted = _list(form.get("rcpt"))
    chosen = [c.address for c in entry.recipients if c.address in wanted]
    if action not in operations.admin_actions(entry) or not chosen:
        return problem(request, 400, "Not possible", "Choose an action and at least one recipient.")
    outcomes = await _carry_out(request, entry, action, chosen, force=form.get("force") == "yes")
    if isinstance(outcomes, Response):
        return outcomes
    return render(
        request,
        "done.html",
        title=operations.LABELS[action],
        entry=entry,
        outcomes=outcomes,
        back="",
    )


async def bulk(request: Request) -> Response:
    """One action on every copy still held (or release-requested) of the chosen messages."""
    web = web_of(request)
    form = await checked_form(request)
    if form is None:
        return problem(request, 403, "Form expired", "Open the page again and repeat.")
    action = str(form.get("action", ""))
    if action not in operations.LABELS or action == "request-release":
        return problem(request, 400, "Not possible", "Choose an action.")
    outcomes: list[operations.Outcome] = []
    for mail_id in _list(form.get("mail_id"))[:200]:
        entry = await web.store.get(mail_id)
        if entry is None or action not in operations.admin_actions(entry):
            continue
        waiting = [c.address for c in entry.recipients if c.state in operations.WAITING]
        if waiting:
            done = await _carry_out(request, entry, action, waiting, force=False)
            if isinstance(done, Response):
                return done
            outcomes += done
    return render(
        request,
        "done.html",
        title=operations.LABELS[action],
        entry=None,
        outcomes=outcomes,
        back="",
    )


async def _carry_out(
    request: Request, entry: Entry, action: str, recipients: list[str], *, force: bool
) -> list[operations.Outcome] | Response:
    web = web_of(request)
    try:
        return await operations.carry_out(
            web.config,
            web.store,
            action,
            entry.mail_id,
            recipients,
            actor=session_of(request).admin or "",
            via=Via.WEB,
            source=client_of(request),
            force=force,
        )
    except QuarantineError as error:
        return problem(request, 503, "Not done", f"The quarantine could not do it: {error}")


def _list(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)] if value else []
