"""What every page handler shares: the `Web` made at start-up, the session, the client's
address, rendering and the checked form."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from contentfilter.config import Config
from contentfilter.decode.workers import DecoderPool
from contentfilter.quarantine import QuarantineStore, State
from contentfilter.web.security import (
    COOKIE,
    RateLimiter,
    Session,
    Signer,
    client_address,
)

log = logging.getLogger("contentfilter.web")
HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024
STATE_LABELS = {
    State.HELD: "held",
    State.RELEASE_REQUESTED: "release requested",
    State.RELEASING: "releasing",
    State.RELEASED: "released",
    State.DELETED: "deleted",
    State.EXPIRED: "expired",
}


@dataclass
class Web:
    """Everything a page handler needs, made once at start-up."""

    config: Config
    store: QuarantineStore
    link_key: bytes
    public_url: str  # e.g. https://mail.example.com/quarantine (no trailing slash)
    decoder: DecoderPool
    signer: Signer = field(default_factory=Signer)
    templates: jinja2.Environment = field(init=False)
    login_limit: RateLimiter = field(init=False)
    token_limit: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        settings = self.config.web
        self.login_limit = RateLimiter(settings.login_attempts, settings.rate_window)
        self.token_limit = RateLimiter(settings.token_requests, settings.rate_window)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["when"] = _when
        self.templates.filters["size"] = _size
        self.templates.globals["prefix"] = self.prefix
        self.templates.globals["state_label"] = lambda state: STATE_LABELS.get(state, "?")

    @property
    def prefix(self) -> str:
        """The path the page lives under behind the reverse proxy ("" at the root)."""
        return urlsplit(self.public_url).path.rstrip("/")

    @property
    def admins_file(self) -> Path:
        return Path(self.config.web.admins_file)


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _size(value: int) -> str:
    if value < 1024:
        return f"{value} bytes"
    if value < 1024 * 1024:
        return f"{value / 1024:.1f} KB"
    return f"{value / (1024 * 1024):.1f} MB"


# --- per request ----------------------------------------------------------------------


def web_of(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def session_of(request: Request) -> Session:
    """The request's session: the cookie's, or a new anonymous one (sent back)."""
    cached = getattr(request.state, "session", None)
    if isinstance(cached, Session):
        return cached
    web = web_of(request)
    session = web.signer.load(request.cookies.get(COOKIE))
    if session is None:
        session = Session.anonymous(web.config.web.session_ttl)
        request.state.new_session = True
    request.state.session = session
    return session


def start_session(request: Request, session: Session) -> None:
    """Replace the session (a login or logout gets a new id: no fixation)."""
    request.state.session = session
    request.state.new_session = True


def client_of(request: Request) -> str:
    return client_address(request.scope, web_of(request).config.web.trusted_proxies)


def finish(request: Request, response: Response) -> Response:
    """Send the session cookie along when it is new."""
    if getattr(request.state, "new_session", False):
        web = web_of(request)
        session = session_of(request)
        response.set_cookie(
            COOKIE,
            web.signer.dump(session),
            max_age=int(web.config.web.session_ttl),
            path=web.prefix or "/",
            secure=web.config.web.secure_cookies,
            httponly=True,
            samesite="strict",
        )
    return response


def render(
    request: Request, template: str, status: int = 200, *, forms: bool = True, **values: Any
) -> Response:
    """The page; with `forms`, a new session's cookie is sent along (its CSRF token is in
    the forms). Pages without forms never start a session: a request for a missing
    /favicon.ico must not replace the cookie the forms of the page depend on."""
    web = web_of(request)
    session = session_of(request)
    page = web.templates.get_template(template).render(
        csrf=web.signer.csrf_token(session), admin=session.admin, **values
    )
    response = HTMLResponse(page, status_code=status)
    return finish(request, response) if forms else response


def problem(request: Request, status: int, title: str, text: str) -> Response:
    return render(request, "problem.html", status=status, forms=False, title=title, text=text)


async def checked_form(request: Request) -> dict[str, Any] | None:
    """The POSTed form if its CSRF token matches the session, else None."""
    async with request.form(max_files=0, max_fields=2000) as form:
        values: dict[str, Any] = {key: form.getlist(key) for key in form}
    tokens = values.get("csrf") or [None]
    if not web_of(request).signer.csrf_valid(session_of(request), tokens[0]):
        return None
    return {key: items[0] if len(items) == 1 else items for key, items in values.items()}


def redirect(request: Request, path: str) -> Response:
    return finish(request, RedirectResponse(web_of(request).prefix + path, status_code=303))
