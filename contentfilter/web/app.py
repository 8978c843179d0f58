"""The Starlette application: the routes of both kinds of pages, the error pages, and
the middleware (security headers, body limit, path prefix)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from contentfilter.errors import QuarantineError
from contentfilter.web import admin, recipient
from contentfilter.web.context import HERE, MAX_FORM_BYTES, Web, log, problem, redirect
from contentfilter.web.security import BodyLimit, PathPrefix, SecurityHeaders


async def index(request: Request) -> Response:
    return redirect(request, "/admin")


async def not_found(request: Request, exc: Exception) -> Response:
    return problem(request, 404, "Not found", "There is no page at this address.")


async def server_error(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("Internal error; the log says more.", status_code=500)


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """The store is down or slow: say so (503), without a traceback on the page."""
    log.error("quarantine store: %s", exc)
    return problem(
        request, 503, "Please try again later", "The quarantine cannot be reached just now."
    )


def build_app(web: Web) -> Any:
    """The ASGI application: routes, then the security headers, then the path prefix."""
    routes = [
        Route("/", index),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        *recipient.routes(),
        *admin.routes(),
    ]
    handlers = {404: not_found, 500: server_error, QuarantineError: store_unavailable}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.web = web
    return PathPrefix(SecurityHeaders(BodyLimit(app, MAX_FORM_BYTES)), web.prefix)
