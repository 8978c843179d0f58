"""Admins download a quarantined message or one of its parts: always as
application/octet-stream with Content-Disposition: attachment, so no browser shows
or runs it."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from contentfilter.decode.spool import Spool
from contentfilter.web.context import problem, web_of

PART_ID = re.compile(r"p\d{3,6}")


async def download(request: Request) -> Response:
    web = web_of(request)
    mail_id, part_id = request.path_params["mail_id"], request.path_params["part_id"]
    raw = await web.store.body(mail_id)
    if raw is None:
        return problem(request, 404, "Not found", "The message is not kept (any more).")
    if part_id == "message":
        return attachment(raw, f"{_safe(mail_id)}.eml")
    if not PART_ID.fullmatch(part_id):
        return problem(request, 404, "Not found", "There is no such part.")
    spool = Spool(web.config.decoder.temp_directory)
    try:
        decoded = await web.decoder.decode(raw, spool)
        for extracted in decoded.extracted:
            if extracted.part_id == part_id:
                data = Path(extracted.path).read_bytes()
                return attachment(data, f"{_safe(mail_id)}-{part_id}.bin")
    finally:
        spool.remove()
    return problem(request, 404, "Not found", "This part has no content of its own to download.")


def attachment(data: bytes, name: str) -> Response:
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100]
