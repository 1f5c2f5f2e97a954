"""What a client sends to ``/-/`` (JSON bodies, form and query fields), read strictly.

Every handler that reads a field a client chose goes through here: :func:`json_object` for a
JSON body, :func:`text_field` for a form or query field. Each answers with the value or raises
:class:`BadInput`, whose message names the field and what was expected; the handler turns it
into a 400 (413 for a body over the limit) and nothing else happens.

Invariants:

* A JSON body is at most :data:`~orchestrator.trust.bounds.OWN_BODY_LIMIT` bytes and nested at most
  :data:`MAX_DEPTH` levels, checked on the raw bytes before the parser runs (so the parser
  never recurses deeply); it is one object whose fields are exactly the declared ones, each of
  its declared type: a boolean is ``true`` or ``false``, never ``"false"``, ``0`` or ``null``;
  a key given twice, ``NaN`` or ``Infinity`` is refused.
* Text (JSON strings, form and query values) is valid UTF-8 without lone surrogates, at most
  :data:`MAX_TEXT` characters, and given at most once.
* A value is never echoed into a message (a field may carry a token): only its type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tornado.web import RequestHandler

from orchestrator.trust.bounds import OWN_BODY_LIMIT

MAX_DEPTH = 16
MAX_TEXT = 8 * 1024

_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)
"""A string (to its end when unterminated: each byte is looked at once) or a bracket."""


class BadInput(ValueError):
    """A request's field or body is not what the route takes; ``status`` is 400 or 413."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status

    def body(self) -> dict[str, str]:
        answer = {"error": self.message}
        if self.field is not None:
            answer["field"] = self.field
        return answer


@dataclass(frozen=True)
class Field:
    """A field of a JSON object: its type (``str``, ``bool`` or ``int``) and whether it must be
    there."""

    kind: type
    required: bool = False


_TYPE_NAMES = {str: "a string", bool: "a boolean (true or false)", int: "an integer"}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def depth(body: bytes) -> int:
    """How deeply the arrays and objects of ``body`` nest (strings skipped), without parsing."""
    level = deepest = 0
    for token in _TOKENS.finditer(body):
        opened = token[0]
        if opened in (b"[", b"{"):
            level += 1
            deepest = max(deepest, level)
        elif opened in (b"]", b"}"):
            level -= 1
    return deepest


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadInput(f"the field {key!r} is given twice", _printable(key))
        result[key] = value
    return result


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")[:100]


def _check_text(value: str, field: str) -> str:
    if len(value) > MAX_TEXT:
        raise BadInput(f"{field!r} is longer than {MAX_TEXT} characters", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{field!r} is not valid text (a lone surrogate)", field) from None
    return value


def json_object(body: bytes, fields: Mapping[str, Field], shape: str) -> dict[str, Any]:
    """The JSON object ``body`` holds, each field checked against ``fields``; ``shape`` is the
    expected body as the error messages show it (``{"scope": ..., "rebuild": bool}``)."""
    if len(body) > OWN_BODY_LIMIT:
        raise BadInput(f"the body is too large: /-/ routes take {OWN_BODY_LIMIT} bytes", None, 413)
    if depth(body) > MAX_DEPTH:
        raise BadInput(f"the JSON is nested more than {MAX_DEPTH} levels deep; expected {shape}")
    try:
        payload = json.loads(body or b"{}", object_pairs_hook=_unique, parse_constant=_no_constants)
    except BadInput:
        raise
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise BadInput(f"the body is not valid JSON; expected {shape}") from None
    if not isinstance(payload, dict):
        raise BadInput(f"expected a JSON object {shape}, got {_json_type(payload)}")
    for key in payload:
        if key not in fields:
            raise BadInput(f"unknown field {_printable(key)!r}; expected {shape}", _printable(key))
    for name, field in fields.items():
        if name not in payload:
            if field.required:
                raise BadInput(f"the field {name!r} is required; expected {shape}", name)
            continue
        value = payload[name]
        if field.kind is bool:
            valid = isinstance(value, bool)
        elif field.kind is int:
            valid = isinstance(value, int) and not isinstance(value, bool)
        else:
            valid = isinstance(value, field.kind)
        if not valid:
            raise BadInput(
                f"{name!r} must be {_TYPE_NAMES.get(field.kind, field.kind.__name__)}, "
                f"not {_json_type(value)}",
                name,
            )
        if isinstance(value, str):
            _check_text(value, name)
    return payload


def text_field(arguments: Mapping[str, list[bytes]], name: str) -> str | None:
    """A form or query field (Tornado's ``request.body_arguments`` or ``query_arguments``):
    its text, or None when absent."""
    values = arguments.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadInput(f"the field {name!r} is given more than once", name)
    try:
        text = values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{name!r} is not valid UTF-8", name) from None
    return _check_text(text, name)


def answer_bad_input(handler: RequestHandler, bad: BadInput) -> None:
    """Answer ``bad`` (its status, and a body naming the field)."""
    handler.set_status(bad.status)
    handler.finish(bad.body())


def json_request(
    handler: RequestHandler, fields: Mapping[str, Field], shape: str
) -> dict[str, Any] | None:
    """The request's JSON object read by :func:`json_object`; ``None`` once the refusal is
    answered (415 for a body that is not declared as JSON: a cross-site form cannot send one)."""
    content_type = handler.request.headers.get("Content-Type", "").split(";", 1)[0].strip()
    if content_type != "application/json":
        handler.set_status(415)
        handler.finish({"error": "send JSON: Content-Type: application/json"})
        return None
    try:
        return json_object(handler.request.body, fields, shape)
    except BadInput as bad:
        answer_bad_input(handler, bad)
        return None
