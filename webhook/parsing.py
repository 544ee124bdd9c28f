"""Turn a request body into a dict, whatever the Content-Type says, with errors that point.

TradingView sends ``text/plain`` when its own check thinks the message is not JSON (and often
when it is), so the body is parsed as JSON regardless of the header.
"""

from __future__ import annotations

import json
import re
from typing import Any

from engine.alert import PLACEHOLDER_RE
from webhook.errors import ApiError

__all__ = ["MAX_INT_DIGITS", "parse_alert_body"]

_UNFILLED_FIELD = re.compile(r'"([^"\\]{1,64})"\s*:\s*(\{\{[^{}]*\}\})')

#: Integers in an alert are sizes, prices and epoch times: 19 digits (a signed 64-bit integer)
#: is far beyond any of them, and anything larger could not be stored or read back as JSON.
MAX_INT_DIGITS = 19
_INT64 = 2**63


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
        data = json.loads(text, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise _json_error(text, exc) from None
    except RecursionError:
        raise ApiError(400, "too_deep", f"JSON nested deeper than {max_depth} levels") from None
    if not isinstance(data, dict):
        raise ApiError(400, "not_an_object", f"the alert must be a JSON object, got {type(data).__name__}")
    depth = _depth(data)
    if depth > max_depth:
        raise ApiError(400, "too_deep", f"JSON nested {depth} levels deep; the limit is {max_depth}")
    if "\\u" in text:  # a lone surrogate can only come from an escape: skip the walk without one
        _check_surrogates(data)
    if "{{" in text:  # the common case has none: skip the walk
        _check_placeholders(data)
    return data


def _bounded_int(digits: str) -> int:
    """json's integer hook: refuse integers that no field can mean and no JSON reader can read
    back (a 5,000-digit number, or one outside 64 bits), naming the size, never the text."""
    size = len(digits.lstrip("-"))
    if size <= MAX_INT_DIGITS:
        value = int(digits)
        if -_INT64 <= value < _INT64:
            return value
    raise ApiError(
        400, "number_out_of_range",
        f"the body holds a {size}-digit integer; integers must fit in 64 bits "
        "(send prices and sizes as decimals, times as epoch seconds or milliseconds)",
    )  # fmt: skip


def _check_surrogates(data: Any, path: str = "") -> None:
    """A ``\\ud800`` escape without its pair decodes to a string that is not Unicode text: it
    cannot be compared, stored or sent back, so it is refused, naming the field."""
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        where = f"{path}{key}"
        if isinstance(key, str) and not _is_text(key):
            raise ApiError(400, "invalid_unicode", f"a field name under {path or 'the top level'!r} "
                           "holds a lone UTF-16 surrogate escape", where=path or None)  # fmt: skip
        if isinstance(value, str) and not _is_text(value):
            raise ApiError(400, "invalid_unicode", f"field {where!r} holds a lone UTF-16 surrogate "
                           "escape (\\ud800-\\udfff without its pair)", where=f"field {where}")  # fmt: skip
        if isinstance(value, dict | list):
            _check_surrogates(value, f"{where}.")


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_placeholders(data: dict[str, Any], prefix: str = "") -> None:
    """A quoted placeholder TradingView left unfilled (``"{{exchnage}}"``) names its field."""
    for key, value in data.items():
        if isinstance(value, dict):
            _check_placeholders(value, f"{prefix}{key}.")
        elif isinstance(value, str) and key != "comment" and "{{" in value:
            found = PLACEHOLDER_RE.search(value)
            if found is not None:
                raise _unfilled(prefix + key, found.group(0), "check its spelling in the alert message")


def _unfilled(field: str, placeholder: str, hint: str) -> ApiError:
    """A placeholder TradingView left unfilled, named with the field that holds it."""
    return ApiError(
        400, "unfilled_placeholder",
        f"field {field!r} holds the unfilled TradingView placeholder {placeholder}: {hint}",
        where=f"field {field}",
    )  # fmt: skip


def _json_error(text: str, exc: json.JSONDecodeError) -> ApiError:
    where = f"line {exc.lineno} column {exc.colno} (char {exc.pos})"
    match = _UNFILLED_FIELD.search(text)
    if match is not None:
        return _unfilled(
            match.group(1), match.group(2),
            "TradingView left it as text, so the message is not valid JSON; check its spelling",
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
    # The position and the kind of error only: the text around it may be the passphrase.
    return ApiError(400, "invalid_json", f"the body is not valid JSON: {exc.msg} at {where}", where=where)


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((v, level + 1) for v in children if isinstance(v, dict | list))
    return deepest
