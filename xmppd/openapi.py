"""Routes of a JSON API over HTTP, the OpenAPI 3.1 document generated
from them, and the checks of requests against the schemas they declare.

A :class:`Route` declares its method, path template, the scope a token
needs, its parameters and request body (JSON Schema 2020-12, as OpenAPI
3.1 takes it), and its answers.  :func:`document` turns a route table
into the OpenAPI document (OpenAPI 3.1.0, §4.8), and :func:`problem`
checks a value against the same schemas, so what is documented is what
is enforced.  Request schemas may use only the keywords of
:data:`REQUEST_KEYWORDS`, checked when a route is declared.
"""

import re
from dataclasses import dataclass, field

OPENAPI_VERSION = "3.1.0"
REQUEST_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "minLength", "maxLength",
    "minimum", "maximum", "description", "examples"})
ERROR_REF = {"$ref": "#/components/schemas/Error"}
_TEMPLATE = re.compile(r"\{([a-z_]+)\}")
_TYPES = {"object": dict, "string": str, "boolean": bool, "null": type(None)}


@dataclass(frozen=True)
class Parameter:
    """A query parameter (path parameters are ``{NAME}`` in the path and
    declared in :attr:`Route.path_schemas`); its schema is a string's."""

    name: str
    description: str
    schema: dict
    required: bool = False


@dataclass(frozen=True)
class Route:
    """One operation.  ``answers`` maps its success status to
    ``(description, schema of the JSON body or None, {header:
    description})``; ``errors`` are the error statuses it gives besides
    those :func:`error_statuses` adds."""

    method: str
    path: str  # "/users/{jid}"
    handler: str  # the name of the method that serves it
    summary: str
    scope: str | None  # what a token needs; None: no token needed
    answers: dict
    path_schemas: dict = field(default_factory=dict)  # path parameter -> (description, schema)
    query: tuple = ()  # Parameter
    body: dict | None = None  # the request body's schema; None: no body
    body_required: bool = True
    errors: tuple = ()

    def __post_init__(self):
        names = _TEMPLATE.findall(self.path)
        if sorted(names) != sorted(self.path_schemas):
            raise ValueError(f"{self.path}: path parameters {names} are not declared")
        for schema in [self.body, *(p.schema for p in self.query)]:
            if schema is not None:
                _check_keywords(schema)
        if any(p.schema.get("type") != "string" for p in self.query):
            raise ValueError(f"{self.path}: only string query parameters are supported")

    @property
    def segments(self):
        return tuple(self.path.strip("/").split("/"))

    def match(self, segments):
        """The path parameters of ``segments`` (decoded path segments)
        if they are this route's path, else None."""
        if len(segments) != len(self.segments):
            return None
        found = {}
        for template, segment in zip(self.segments, segments):
            name = _TEMPLATE.fullmatch(template)
            if name is not None and segment:
                found[name.group(1)] = segment
            elif template != segment:
                return None
        return found


def _check_keywords(schema):
    unknown = set(schema) - REQUEST_KEYWORDS
    if unknown:
        raise ValueError(f"request schema keywords not enforced: {sorted(unknown)}")
    for nested in schema.get("properties", {}).values():
        _check_keywords(nested)


def problem(schema, value, where="the body"):
    """What is wrong with ``value`` (parsed JSON) for ``schema`` (of the
    :data:`REQUEST_KEYWORDS`), as a sentence naming ``where`` it is; None
    if nothing."""
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is(value, kind) for kind in types):
            return f"{where} must be {' or '.join(_article(kind) for kind in types)}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{where} must have at least {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{where} must have at most {schema['maxLength']} characters"
    if _is(value, "integer"):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where} must be at least {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where} must be at most {schema['maximum']}"
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                return f"{where} must have {name!r}"
        properties = schema.get("properties", {})
        if schema.get("additionalProperties", True) is False:
            extra = sorted(set(value) - set(properties))
            if extra:
                return f"{where} has an unknown member {extra[0]!r}"
        for name, nested in properties.items():
            if name in value:
                found = problem(nested, value[name], repr(name))
                if found is not None:
                    return found
    return None


def _is(value, kind):
    if kind == "integer":  # 2.0 is one (JSON Schema §6.1.1); a bool is not, in JSON
        return (isinstance(value, int) and not isinstance(value, bool)
                or isinstance(value, float) and value.is_integer())
    return isinstance(value, _TYPES[kind])


def _article(kind):
    return {"object": "an object", "integer": "an integer", "null": "null"}.get(kind, f"a {kind}")


def document(routes, info, server_url, security_scheme, errors, always=(), components=None):
    """The OpenAPI 3.1 document of ``routes``.

    ``info`` is the Info Object (§4.8.2), ``security_scheme`` the Security
    Scheme Object (§4.8.27) of a route with a scope, named ``bearer``; the
    route's scope is the role it lists (§4.8.30).  ``errors`` maps every
    error status to ``(description, {header: description})``: a route
    answers those of :func:`error_statuses`, with the JSON schema
    ``#/components/schemas/Error`` (413 has no body: the listener refuses
    the request before it reaches the route)."""
    paths = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = \
            _operation(route, errors, always)
    return {
        "openapi": OPENAPI_VERSION,
        "info": info,
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {**(components or {}), "securitySchemes": {"bearer": security_scheme}},
    }


def error_statuses(route, always=()):
    """The error statuses of ``route``: its own, ``always``, and those
    its declaration implies: 401 and 403 with a scope, 400 with query
    parameters, 400, 413, 415 and 422 with a body, 404 with path
    parameters."""
    statuses = set(route.errors) | set(always)
    if route.scope is not None:
        statuses |= {401, 403}
    if route.query:
        statuses.add(400)
    if route.body is not None:
        statuses |= {400, 413, 415, 422}
    if route.path_schemas:
        statuses.add(404)
    return statuses


def _operation(route, errors, always):
    operation = {
        "operationId": route.handler,
        "summary": route.summary,
        "tags": [route.scope or "document"],
        "security": [] if route.scope is None else [{"bearer": [route.scope]}],
    }
    parameters = [{"name": name, "in": "path", "required": True, "description": text,
                   "schema": schema} for name, (text, schema) in route.path_schemas.items()]
    parameters += [{"name": p.name, "in": "query", "required": p.required,
                    "description": p.description, "schema": p.schema} for p in route.query]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {"required": route.body_required, "content": {
            "application/json": {"schema": route.body}}}
    answers = dict(route.answers)
    for status in error_statuses(route, always):
        description, headers = errors[status]
        answers[status] = (description, None if status == 413 else ERROR_REF, headers)
    operation["responses"] = {str(status): _response(*answers[status])
                              for status in sorted(answers)}
    return operation


def _response(description, schema, headers):
    response = {"description": description}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    if headers:
        response["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                               for name, text in headers.items()}
    return response
