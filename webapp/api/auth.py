"""Token authentication for /api/v1: bearer tokens only, never the session cookie. Because a
browser never attaches an Authorization header on its own, a cross-site page cannot make an
authenticated API request, which is why the API needs (and has) no CSRF tokens."""

from __future__ import annotations

import hashlib
import logging

from flask import after_this_request, current_app, g, request
from flask_limiter.util import get_remote_address
from sqlalchemy.exc import SQLAlchemyError

from webapp import tokens
from webapp.api.problems import ApiProblem
from webapp.models import utcnow

log = logging.getLogger("webapp.api")

PUBLIC_ENDPOINTS = {"api.openapi_document", "api.docs"}
UPLOAD_ENDPOINTS = {"api.verify_report"}


def bearer_secret() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


def authenticate_request() -> None:
    """before_request of the API blueprint: cap the body, then find the token's principal."""
    # JSON bodies are small; a report PDF sent for verification may be large.
    request.max_content_length = current_app.config[
        "API_MAX_UPLOAD_BYTES" if request.endpoint in UPLOAD_ENDPOINTS else "API_MAX_BODY_BYTES"]
    g.api_principal = None
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    secret = bearer_secret()
    challenge = {"WWW-Authenticate": 'Bearer realm="preflight"'}
    if secret is None:
        raise ApiProblem(401, "Send an API token: Authorization: Bearer pft_…. Session cookies are "
                         "not accepted by the API.", kind="unauthenticated", headers=challenge)
    principal, why = tokens.authenticate(secret)
    if principal is None:
        raise ApiProblem(401, why, kind="unauthenticated",
                         headers={"WWW-Authenticate": 'Bearer realm="preflight", error="invalid_token"'})
    g.api_principal = principal
    if tokens.use_is_stale(principal.token):
        _record_use_after_response(principal.token.id)


def _record_use_after_response(token_id: int) -> None:
    """Write last_used_at once the response is sent (the server closes it), outside the
    request: a GET never writes while it is being handled, and the client never waits."""
    app, now = current_app._get_current_object(), utcnow()

    def record() -> None:
        with app.app_context():
            try:
                tokens.note_use(token_id, now)
            except SQLAlchemyError:  # bookkeeping only: never fail a response that has gone
                log.warning("could not record the use of API token %s", token_id, exc_info=True)

    @after_this_request
    def on_close(response):
        response.call_on_close(record)
        return response


def rate_limit_key() -> str:
    """Each token has its own budget (keyed by a hash, never the secret); requests without a
    token share their address's."""
    secret = bearer_secret()
    if secret:
        return "api-token:" + hashlib.sha256(secret.encode()).hexdigest()[:32]
    return "api-ip:" + (get_remote_address() or "unknown")


def rate_limit_value() -> str:
    return current_app.config["API_RATE_LIMIT"]
