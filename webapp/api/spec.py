"""How API operations are declared. One decorator binds a view to the blueprint, checks the
token's scope, validates the query and body with pydantic models, turns the returned model into
JSON, and records the operation, so /api/v1/openapi.json is generated from the very models that
validate requests (OpenAPI 3.1 uses JSON Schema 2020-12, which pydantic emits)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import wraps

from flask import Blueprint, Response, g, request
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from webapp.api.problems import PROBLEM_MEDIA_TYPE, TITLES, ApiProblem, validation_problem
from webapp.api.schemas import MAX_INT, Problem

JSON = "application/json"
RULE_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
# Answers every operation may give besides its own success and listed errors.
COMMON_ERRORS = (400, 401, 403, 404, 413, 429)


@dataclass
class Reply:
    """What a view returns: a model (or raw bytes), a status and headers."""

    body: BaseModel | bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    media: str = JSON


@dataclass
class Operation:
    method: str
    rule: str
    endpoint: str
    summary: str
    description: str
    tag: str
    scope: str | None
    query: type[BaseModel] | None
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    if_match: bool
    errors: tuple[int, ...]
    media: str
    raw_body: str | None
    etag: bool

    @property
    def path_params(self) -> list[tuple[str, str]]:
        return [(name, converter or "string") for converter, name in RULE_PARAM.findall(self.rule)]


class Api:
    """A blueprint plus the list of its operations."""

    def __init__(self, blueprint: Blueprint, title: str, version: str, description: str):
        self.blueprint, self.title, self.version, self.description = blueprint, title, version, description
        self.operations: list[Operation] = []
        self._documents: dict[str, str] = {}

    def operation(self, method: str, rule: str, *, summary: str, tag: str, scope: str | None = "read",
                  query: type[BaseModel] | None = None, body: type[BaseModel] | None = None,
                  response: type[BaseModel] | None = None, status: int = 200, if_match: bool = False,
                  errors: tuple[int, ...] = (), media: str = JSON, raw_body: str | None = None,
                  etag: bool = False):
        """Declare an operation. `scope=None` makes it public (the documentation only)."""

        def decorator(view):
            op = Operation(method, rule, view.__name__, summary, (view.__doc__ or "").strip(), tag,
                           scope, query, body, response, status, if_match, errors, media, raw_body, etag)
            self.operations.append(op)

            @wraps(view)
            def handler(**path):
                _check_path(op, path)
                if op.scope is not None:
                    require_scope(op.scope)
                if op.query is not None:
                    path["query"] = parse_query(op.query)
                if op.body is not None:
                    path["body"] = parse_body(op.body, op.raw_body)
                return render(view(**path), op)

            self.blueprint.add_url_rule(rule, view.__name__, handler, methods=[method])
            return handler

        return decorator

    # The OpenAPI document ------------------------------------------------------------------

    def openapi_json(self, prefix: str) -> str:
        """The document as JSON, built once per process (operations are fixed at import)."""
        if prefix not in self._documents:
            self._documents[prefix] = json.dumps(self.openapi(prefix))
        return self._documents[prefix]

    def openapi(self, prefix: str) -> dict:
        pairs = {(Problem, "serialization")}
        for op in self.operations:
            if op.body is not None:
                pairs.add((op.body, "validation"))
            if op.response is not None:
                pairs.add((op.response, "serialization"))
        ordered = sorted(pairs, key=lambda pair: (pair[0].__name__, pair[1]))
        refs, defs = models_json_schema(ordered, ref_template="#/components/schemas/{model}")
        schemas = defs.get("$defs", {})
        problem_ref = refs[(Problem, "serialization")]
        paths: dict[str, dict] = {}
        for op in self.operations:
            path = prefix + RULE_PARAM.sub(r"{\2}", op.rule)
            paths.setdefault(path, {})[op.method.lower()] = self._operation_doc(op, refs, problem_ref, schemas)
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version, "description": self.description},
            "servers": [{"url": "/"}],
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {"token": {
                    "type": "http", "scheme": "bearer",
                    "description": "A Preflight API token (pft_…), made on your profile's API tokens "
                                   "page or with `flask tokens create`."}},
            },
            "tags": [{"name": tag} for tag in dict.fromkeys(op.tag for op in self.operations)],
        }

    def _operation_doc(self, op: Operation, refs: dict, problem_ref: dict, schemas: dict) -> dict:
        parameters = []
        for name, converter in op.path_params:
            schema = ({"type": "integer", "minimum": 1, "maximum": MAX_INT} if converter == "int"
                      else {"type": "string", "minLength": 1, "maxLength": 80, "pattern": "^[^/]+$"})
            parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
        if op.query is not None:
            query_schema = op.query.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(query_schema.get("$defs", {}))
            required = set(query_schema.get("required", []))
            for name, schema in query_schema["properties"].items():
                schema = _without_null(schema)
                description = schema.pop("description", None)
                schema.pop("title", None)
                param = {"name": name, "in": "query", "required": name in required, "schema": schema}
                if description:
                    param["description"] = description
                parameters.append(param)
        if op.if_match:
            parameters.append({"name": "If-Match", "in": "header", "required": True,
                               "description": "The ETag you last read. A stale one gets 412.",
                               "schema": {"type": "string", "minLength": 1, "maxLength": 200}})
        doc: dict = {
            "operationId": op.endpoint, "summary": op.summary, "tags": [op.tag],
            "parameters": parameters,
        }
        if op.description:
            doc["description"] = op.description
        if op.scope is not None:
            doc["security"] = [{"token": []}]
            doc["x-token-scope"] = op.scope
            doc["description"] = (doc.get("description", "") + f"\n\nNeeds a token with the `{op.scope}` scope.").strip()
        else:
            doc["security"] = []
        if op.body is not None:
            content = {JSON: {"schema": refs[(op.body, "validation")]}}
            if op.raw_body:
                content[op.raw_body] = {"schema": {"type": "string", "contentMediaType": op.raw_body}}
            doc["requestBody"] = {"required": True, "content": content}
        success: dict = {"description": TITLES.get(op.status, "OK") if op.status >= 400 else "Success"}
        if op.response is not None:
            success["content"] = {JSON: {"schema": refs[(op.response, "serialization")]}}
        elif op.media != JSON:
            success["content"] = {op.media: {"schema": {"type": "string", "contentMediaType": op.media}}}
        if op.etag:
            success["headers"] = {"ETag": {"schema": {"type": "string"},
                                           "description": "Send back as If-Match to update."}}
        responses = {str(op.status): success}
        codes = set(COMMON_ERRORS if op.scope is not None else ()) | set(op.errors)
        if op.body is not None:
            codes |= {415, 422}
        if op.query is not None:
            codes.add(422)
        if op.if_match:
            codes |= {412, 428}
        for code in sorted(codes):
            entry = {"description": TITLES.get(code, "Error"),
                     "content": {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}}
            if code == 429:
                entry["headers"] = {"Retry-After": {"schema": {"type": "string"},
                                                    "description": "Seconds to wait."}}
            responses[str(code)] = entry
        doc["responses"] = responses
        return doc


def _without_null(schema: dict) -> dict:
    """A query parameter is absent rather than null: drop the null branch of Optional[...]."""
    schema = dict(schema)
    options = schema.pop("anyOf", None)
    if options:
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) == 1:
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    if schema.get("default") is None:
        schema.pop("default", None)
    return schema


# Per-request helpers ------------------------------------------------------------------------

def _check_path(op: Operation, path: dict) -> None:
    for name, converter in op.path_params:
        value = path.get(name)
        if converter == "int" and not 1 <= value <= MAX_INT:
            raise ApiProblem(404, f"There is no {name.replace('_', ' ')} {value}.")
        if isinstance(value, str) and ("\x00" in value or len(value) > 200):
            raise ApiProblem(404, f"There is no {name.replace('_', ' ')} like that.")


def require_scope(scope: str):
    principal = g.get("api_principal")
    if principal is None:  # the blueprint's before_request refused already; belt and braces
        raise ApiProblem(401, "Send a token: Authorization: Bearer pft_…", kind="unauthenticated",
                         headers={"WWW-Authenticate": 'Bearer realm="preflight"'})
    if not principal.has_scope(scope):
        raise ApiProblem(
            403, f"This token lacks the “{scope}” scope (it has: {', '.join(principal.token.scope_list)}).",
            kind="insufficient-scope",
            headers={"WWW-Authenticate": f'Bearer realm="preflight", error="insufficient_scope", scope="{scope}"'})
    return principal


def parse_query(model: type[BaseModel]) -> BaseModel:
    values = {key: request.args.get(key) for key in request.args}
    unknown = sorted(set(values) - set(model.model_fields))
    if unknown:  # `?lifecyle=live` would otherwise list every service, silently
        known = ", ".join(model.model_fields)
        raise ApiProblem(422, f"Unknown query parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                         f"(this operation takes {known}).", kind="validation",
                         errors=[{"field": key, "detail": f"Unknown query parameter; known: {known}."}
                                 for key in unknown])
    refused = [{"field": key, "detail": "Text cannot contain NUL characters."}
               for key, value in values.items() if key in model.model_fields and "\x00" in value]
    if refused:  # PostgreSQL cannot compare text with NUL in it
        raise ApiProblem(422, f"{len(refused)} query parameter(s) contain NUL characters.",
                         kind="validation", errors=refused)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise validation_problem(exc, "query") from None


def parse_body(model: type[BaseModel], raw_body: str | None):
    media = (request.mimetype or "").lower()
    if raw_body and media == raw_body:
        return request.get_data()
    if media != JSON and not media.endswith("+json"):
        accepted = JSON + (f" or {raw_body}" if raw_body else "")
        raise ApiProblem(415, f"Send the body as {accepted} (Content-Type was “{media or 'missing'}”).",
                         kind="unsupported-media-type")
    data = request.get_data() or b"{}"
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise ApiProblem(400, "The body is not valid JSON.", kind="malformed-json") from None
        raise validation_problem(exc, "body") from None


def render(result, op: Operation) -> Response:
    if isinstance(result, Response):
        return result
    reply = result if isinstance(result, Reply) else Reply(result, op.status)
    if isinstance(reply.body, bytes):
        response = Response(reply.body, status=reply.status, mimetype=reply.media)
    else:
        response = Response(reply.body.model_dump_json(), status=reply.status, mimetype=JSON)
    response.headers.update(reply.headers)
    return response
