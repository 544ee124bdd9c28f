"""Turn a request body into a dict, whatever the Content-Type says, with errors that point.

TradingView sends ``text/plain`` when its own check thinks the message is not JSON (and often
when it is), so the body is parsed as JSON regardless of the header.
"""

from __future__ import annotations

import json
import re
from typing import Any

from engine.alert import PLACEHOLDER_RE, is_secret_key
from webhook.errors import ApiError

__all__ = ["parse_alert_body", "redact"]

_UNFILLED_FIELD = re.compile(r'"([^"\\]{1,64})"\s*:\s*(\{\{[^{}]*\}\})')
#: A JSON member with a scalar value, ``"key": "value"`` or ``"key": 123``; a string value may
#: be cut off by the end of the text (a refused body is kept truncated).
_MEMBER = re.compile(r'"((?:[^"\\]|\\.)*)"(\s*:\s*)(?:"(?:[^"\\]|\\.)*(?:"|\Z)|[^,{}\[\]\s"]+)')


def redact(text: str) -> str:
    """Hide a passphrase in a raw body we keep for the record (a refused body is stored).

    A key counts as a passphrase when the alert schema would read it as one (any case, padding
    or JSON escape of ``passphrase``/``secret``): :func:`engine.alert.is_secret_key` decides."""
    return _MEMBER.sub(_redacted_member, text)


def _redacted_member(match: re.Match[str]) -> str:
    try:
        key = json.loads(f'"{match.group(1)}"')
    except json.JSONDecodeError:
        return match.group(0)
    return f'"{match.group(1)}"{match.group(2)}"***"' if is_secret_key(key) else match.group(0)


def parse_alert_body(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    """The body as a JSON object, or an :class:`ApiError` (400) saying what is wrong and where."""
    if not raw.strip():
        raise ApiError(400, "empty_body", "the request body is empty; expected a JSON alert")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "invalid_encoding", f"the body is not UTF-8 ({exc.reason})", where=f"byte {exc.start}"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(text, exc) from None
    except RecursionError:
        raise ApiError(400, "too_deep", f"JSON nested deeper than {max_depth} levels") from None
    if not isinstance(data, dict):
        raise ApiError(400, "not_an_object", f"the alert must be a JSON object, got {type(data).__name__}")
    depth = _depth(data)
    if depth > max_depth:
        raise ApiError(400, "too_deep", f"JSON nested {depth} levels deep; the limit is {max_depth}")
    if "{{" in text:  # the common case has none: skip the walk
        _check_placeholders(data)
    return data


def _check_placeholders(data: dict[str, Any], prefix: str = "") -> None:
    """A quoted placeholder TradingView left unfilled (``"{{exchnage}}"``) names its field."""
    for key, value in data.items():
        if isinstance(value, dict):
            _check_placeholders(value, f"{prefix}{key}.")
        elif isinstance(value, str) and key != "comment" and "{{" in value:
            found = PLACEHOLDER_RE.search(value)
            if found is not None:
                raise ApiError(
                    400, "unfilled_placeholder",
                    f"field {prefix + key!r} holds the unfilled TradingView placeholder {found.group(0)}: "
                    "check its spelling in the alert message",
                    where=f"field {prefix + key}",
                )  # fmt: skip


def _json_error(text: str, exc: json.JSONDecodeError) -> ApiError:
    where = f"line {exc.lineno} column {exc.colno} (char {exc.pos})"
    match = _UNFILLED_FIELD.search(text)
    if match is not None:
        return ApiError(
            400, "unfilled_placeholder",
            f"field {match.group(1)!r} holds the unfilled TradingView placeholder {match.group(2)}: "
            "TradingView left it as text, so the message is not valid JSON; check its spelling",
            where=f"field {match.group(1)}",
        )  # fmt: skip
    if PLACEHOLDER_RE.search(text):
        found = PLACEHOLDER_RE.search(text)
        assert found is not None
        return ApiError(
            400,
            "unfilled_placeholder",
            f"the message holds the unfilled TradingView placeholder {found.group(0)}",
            where=where,
        )
    snippet = text[max(0, exc.pos - 20) : exc.pos + 20]
    return ApiError(
        400, "invalid_json", f"the body is not valid JSON: {exc.msg} near {snippet!r}", where=where
    )


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((v, level + 1) for v in children if isinstance(v, dict | list))
    return deepest
