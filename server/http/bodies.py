"""Request bodies: which content types are read, and JSON parsed within the limits of server/jsonbody.py."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web

from .. import jsonbody
from ..errors import BadRequest, UnsupportedMediaType, clip
from ..keys import SETTINGS

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def read_payload(request: web.Request) -> dict[str, Any]:
    """The pipeline's starting data: the JSON object body, or the fields of a form post (see `body_kind`)."""
    if not request.body_exists:
        return {}
    if body_kind(request) == "form":
        try:
            form = await request.post()
        except ValueError as exc:  # a multipart type without its boundary, or a malformed part
            raise BadRequest(f"request body is not a valid form: {exc}") from None
        return {key: value for key, value in form.items() if isinstance(value, str)}
    raw = await request.read()
    if not raw or raw.isspace():
        return {}
    return json_object(raw, request.app[SETTINGS].max_json_depth)


def body_kind(request: web.Request, *, forms: bool = True) -> str:
    """The one rule for which bodies are read: JSON types (or none given) as JSON, forms as fields, else 415."""
    header = request.headers.get(hdrs.CONTENT_TYPE)
    # JSON, the usual body, is told apart without aiohttp's full parse of the header (done anew per request).
    if header is None or header == "application/json" or header.startswith("application/json;"):
        return "json"
    media = request.content_type
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return "json"
    if forms and media in FORM_TYPES:
        return "form"
    accepted = "application/json" + (", application/x-www-form-urlencoded or multipart/form-data" if forms else "")
    raise UnsupportedMediaType(f"a body of type {clip(media, 64)} is not read: send {accepted}", accepted=accepted)


def json_object(raw: bytes, max_depth: int) -> dict[str, Any]:
    """A request body that must be one JSON object; 400 naming what is wrong otherwise."""
    try:
        body = jsonbody.loads(raw, max_depth)
    except jsonbody.JSONBodyError as exc:
        raise BadRequest(f"request body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, not {jsonbody.kind(body)}")
    return body
