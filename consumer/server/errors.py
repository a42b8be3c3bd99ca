"""The one error handler: every failure becomes a JSON body with the status its error class carries.

combe errors carry ``status`` (format/errors.py); werkzeug's HTTP errors
(unknown route, method not allowed, body too large) carry ``code``; anything
else is a bug, logged with its traceback and answered 500 without details.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import jsonify
from werkzeug.wrappers import Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from combe.format.errors import CombeError

log = logging.getLogger(__name__)


def error_document(status: int, kind: str, message: str) -> dict[str, Any]:
    """The body of every error answer, from the app and from the worker alike."""
    return {"error": {"status": status, "type": kind, "message": message}}


def render_error(exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.code is not None and exc.code < 400:
        return exc.get_response()  # a redirect (trailing slash), not an error
    if isinstance(exc, CombeError):
        status, message = exc.status, str(exc)
    elif isinstance(exc, HTTPException):
        status, message = exc.code or 500, exc.description or exc.name
    else:
        log.exception("unhandled error answering a request")
        status, message = 500, "internal error; the server log has the details"
    if status >= 500 and isinstance(exc, CombeError):
        log.error("answering %d: %s", status, exc)
    response = jsonify(error_document(status, type(exc).__name__, message))
    response.status_code = status
    challenge = getattr(exc, "challenge", None)
    if challenge is not None:
        response.headers["WWW-Authenticate"] = challenge
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response
