"""Errors as RFC 9457 problem details (`application/problem+json`), for every /api/ response."""

from __future__ import annotations

import json
import uuid

from flask import Response, g, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
DOCS = "/api/v1/docs"

TITLES = {
    400: "Bad request", 401: "Authentication required", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 412: "Precondition failed", 413: "Request too large",
    415: "Unsupported media type", 422: "Invalid request", 428: "Precondition required",
    429: "Too many requests", 500: "Internal server error", 503: "Service unavailable",
}


class ApiProblem(Exception):
    """Raise anywhere under the API blueprint; it becomes a problem+json response."""

    def __init__(self, status: int, detail: str, *, kind: str | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None, **extra):
        super().__init__(detail)
        self.status, self.detail, self.kind = status, detail, kind
        self.title = title or TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra


def problem_response(status: int, detail: str, *, kind: str | None = None, title: str | None = None,
                     headers: dict[str, str] | None = None, **extra) -> Response:
    if not g.get("request_id"):  # a rate-limit refusal comes before the app assigns one
        g.request_id = uuid.uuid4().hex
    body = {
        # A documented problem type links to its explanation; plain HTTP errors are about:blank.
        "type": f"{DOCS}#problem-{kind}" if kind else "about:blank",
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "request_id": g.get("request_id"),
        **extra,
    }
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MEDIA_TYPE)
    response.headers.update(headers or {})
    return response


def from_api_problem(error: ApiProblem) -> Response:
    return problem_response(error.status, error.detail, kind=error.kind, title=error.title,
                            headers=error.headers, **error.extra)


def from_http_exception(error: HTTPException) -> Response:
    """Werkzeug's errors (404 for an unknown URL, 405, 413, ...) as problems."""
    code = error.code or 500
    detail = error.description or TITLES.get(code, "Error")
    if code == 404 and "requested URL was not found" in detail:
        detail = "There is no such API resource. The operations are listed at /api/v1/openapi.json."
    if code == 413 and request.max_content_length:
        detail = f"The body is larger than this operation takes ({request.max_content_length // 1024:,} KiB at most)."
    headers = {}
    if code == 405 and getattr(error, "valid_methods", None):
        headers["Allow"] = ", ".join(error.valid_methods)
    return problem_response(code, detail, headers=headers)


def validation_problem(error: ValidationError, where: str) -> ApiProblem:
    """Every invalid field, each with a JSON pointer into the request body (or the query name)."""
    errors = []
    for item in error.errors(include_url=False, include_input=False):
        location = [str(part) for part in item["loc"]]
        field = ".".join(location) or "(body)"
        pointer = "#/" + "/".join(location) if where == "body" else None
        entry = {"field": field, "detail": item["msg"].removeprefix("Value error, ")}
        if pointer:
            entry["pointer"] = pointer
        errors.append(entry)
    names = ", ".join(e["field"] for e in errors)
    noun = "field is" if len(errors) == 1 else "fields are"
    return ApiProblem(422, f"{len(errors)} {noun} invalid in the request {where}: {names}.",
                      kind="validation", errors=errors)
