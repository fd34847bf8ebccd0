"""OTLP/JSON: protobuf's JSON mapping plus the exceptions the OTLP specification makes to it.

The specification keeps protobuf's mapping (lowerCamelCase names, 64-bit integers as decimal
strings or numbers, `bytes` as base64) except that enums travel as integers and trace and span
ids travel as hex strings, not base64. `json_format` accepts integer enums already, so only the
ids need rewriting before it parses; and receivers must ignore field names they do not know,
so that newer senders still get through.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

# The only object keys in an OTLP document that hold ids; an attribute named "traceId" is a
# value of a "key" field, never an object key, so rewriting by key name cannot touch one.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id",
                      "parent_span_id"})


class OtlpJsonError(ValueError):
    """The body is not an OTLP/JSON request of the expected kind; the message says why."""


def parse(body: bytes, message: Message, resources_key: str) -> None:
    """Fill `message` (an empty Export*ServiceRequest) from an OTLP/JSON body.

    `resources_key` is the request's one top-level field ("resourceMetrics", "resourceLogs"):
    a non-empty object without it was most likely sent to the wrong endpoint, and parsing it
    with unknown fields ignored would accept it as an empty request and lose it.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OtlpJsonError(f"body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise OtlpJsonError(f"body is JSON but not an object with {resources_key!r}")
    snake_key = _snake_case(resources_key)
    if document and resources_key not in document and snake_key not in document:
        found = ", ".join(sorted(map(repr, document))[:5])
        raise OtlpJsonError(f"no {resources_key!r} in the body (it has {found}): "
                            f"wrong endpoint for this signal?")
    _hex_ids_to_base64(document)
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OtlpJsonError(f"body is not an OTLP request: {exc}") from None


def render(message: Message) -> bytes:
    """`message` in protobuf's JSON mapping, compact (responses and Status bodies)."""
    return json_format.MessageToJson(message, indent=None).encode()


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    # Iterative, because attribute values may nest deeper than Python's recursion limit allows.
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _ID_KEYS and isinstance(value, str):
                    node[key] = _hex_to_base64(value, f"{path}.{key}")
                elif isinstance(value, dict | list):
                    stack.append((value, f"{path}.{key}"))
        elif isinstance(node, list):
            stack.extend((value, f"{path}[{i}]") for i, value in enumerate(node)
                         if isinstance(value, dict | list))


def _hex_to_base64(value: str, path: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise OtlpJsonError(f"{path.lstrip('.')}: {value[:40]!r} is not a hex id "
                            f"(OTLP/JSON writes trace and span ids in hex)") from None
    return base64.b64encode(raw).decode("ascii")


def _snake_case(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
