"""How an error travels over HTTP: a status by its kind, and a body ``{"kind", "message"}``
that the CLI turns back into the same error and exit code. One table for the routes and for
the listeners that refuse a request before any route runs (:mod:`hyper.daemon.auth`)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from hyper import errors

STATUS = {
    "InvalidArgument": 400,
    "Unauthenticated": 401,
    "PermissionDenied": 403,
    "NotFound": 404,
    "AlreadyExists": 409,
    "FailedPrecondition": 409,
    "ResourceExhausted": 429,
    "ProtocolError": 502,
    "Unavailable": 503,
    "Timeout": 504,
}


def error_response(exc: errors.HyperError, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = type(exc).__name__
    body = {"kind": kind, "message": str(exc)}
    return JSONResponse(body, status_code=STATUS.get(kind, 500), headers=headers)
