"""Keep secrets out of everything the gateway writes: SQLite rows, log lines and HTTP answers.

An alert body is hostile input that carries a secret (the strategy's passphrase). Whatever shape
it has — valid JSON, JSON with a syntax error beside the passphrase, escaped keys
(``"pass\\u0070hrase"``), single-quoted pseudo-JSON, a secret pasted into the wrong field — the
gateway must not echo a byte of a configured secret. Two rules, applied at every place text leaves
the gateway (the stored payload, the refusal reason, the answer, the log):

1. Every configured secret (each strategy's passphrase, the API token, exchange and news-source
   credentials) is replaced wherever it appears, in any string, before anything is cut to size,
   so a cut can never land inside one.
2. The value of any field whose name says it is a secret (passphrase, secret, token, password,
   api key) is masked even when it is *not* a configured secret: a wrong passphrase is usually a
   typo of the right one.

A raw body that is not valid JSON is stored as a readable rendering with its ``\\u`` escapes
decoded (so ``"s3\\u0063ret"`` is recognised as ``s3cret``), then rules 1 and 2 apply.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import orjson

from engine.alert import Alert
from webhook.errors import ApiError

__all__ = ["MASK", "Redactor", "install_log_redaction"]

MASK = "***"

#: Field names that hold a secret, whatever their case or decoration (``Passphrase``,
#: ``api_key``, ``X-Secret``, ``webhook_token``).
_SECRET_NAME = re.compile(r"pass(?:phrase|word|wd)?|secret|token|api[_-]?key|auth", re.IGNORECASE)

#: In text that is not valid JSON: a secret-named key, quoted with ' or " or bare, a separator,
#: then its value (quoted, or bare up to a delimiter). The value is what gets masked.
_SECRET_PAIR = re.compile(
    # Starts at the secret word itself (what precedes it in the key is kept as it is): a leading
    # ``[\w-]*`` would make the scan quadratic on a long run of word characters.
    r"""(?P<key>(?:pass(?:phrase|word|wd)?|secret|token|api[_-]?key|auth)[\w-]*["']?\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?|[^\s,;}\]&]*)""",
    re.IGNORECASE,
)


_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


class Redactor:
    """Scrubs the configured secrets (and secret-named fields) out of text and JSON values."""

    def __init__(self, secrets: Iterable[str]):
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets: tuple[str, ...] = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        #: How each secret looks inside serialised JSON (quotes and control characters escaped).
        self._json_forms = tuple({orjson.dumps(s)[1:-1] for s in self.secrets})
        #: Every spelling :meth:`text` replaces: the secret and its JSON-escaped form.
        self._spellings = tuple(
            sorted({*self.secrets, *(f.decode() for f in self._json_forms)}, key=len, reverse=True)
        )

    def text(self, value: str) -> str:
        """``value`` with every configured secret replaced by the mask (also where it is
        written JSON-escaped, as in a raw body or a serialised row)."""
        for secret in self._spellings:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def value(self, value: Any) -> Any:
        """A JSON-like value with secrets scrubbed from every string (keys included) and the
        values of secret-named fields masked. Returns new containers; the input is not changed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                name = self.text(key) if isinstance(key, str) else key
                secret_named = isinstance(key, str) and _SECRET_NAME.search(key) is not None
                out[name] = MASK if secret_named and item not in (None, "") else self.value(item)
            return out
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """An HTTP answer with every configured secret scrubbed. Answers are built by the
        gateway, not echoed, so this rarely finds anything: one serialisation and a substring
        test per secret decide whether the walk is needed (the answer is on every alert's path)."""
        text = orjson.dumps(body, default=str)
        if any(form in text for form in self._json_forms):
            return dict(self.value(body))
        return body

    def refuse_misplaced(self, data: dict[str, Any]) -> None:
        """Refuse an alert that carries a configured secret anywhere but a secret-named field
        (the ticker, a comment, an unknown field): nothing past the intake, no row, no order id,
        no log line, may hold it. The refusal names the field, never the value."""
        if not self.secrets:
            return
        found = self._misplaced(data, "")
        if found is not None:
            raise ApiError(
                400, "secret_in_alert",
                f"field {self.text(found)!r} holds a passphrase or key: send the passphrase only in "
                '"passphrase", and nothing else secret in an alert',
                where=f"field {self.text(found)}",
            )  # fmt: skip

    def _misplaced(self, value: Any, path: str) -> str | None:
        if isinstance(value, str):
            return path if any(secret in value for secret in self.secrets) else None
        if not isinstance(value, dict | list):
            return None
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and any(secret in key for secret in self.secrets):
                return path or "(a field name)"
            if isinstance(key, str) and _SECRET_NAME.search(key) and not path:
                continue  # the passphrase's own field (and its aliases) may hold it
            found = self._misplaced(item, where)
            if found is not None:
                return found
        return None

    def record(self, alert: Alert) -> str:
        """The JSON stored for an accepted alert: no passphrase, secret-named extras masked."""
        if not alert.extras:
            return alert.record()
        return orjson.dumps(self.value(orjson.loads(alert.record()))).decode()

    def body(self, parsed: dict[str, Any], limit: int) -> dict[str, Any]:
        """What is kept of a refused body that parsed: the scrubbed object as JSON text, cut to
        ``limit`` characters (after scrubbing, so a cut never lands inside a secret)."""
        text = orjson.dumps(self.value(parsed), default=str).decode()
        return {"raw": text[:limit], "truncated": len(text) > limit}

    def raw_body(self, raw: bytes, limit: int) -> dict[str, Any]:
        """What is kept of a refused body that could not be parsed: a scrubbed rendering of at
        most ``limit`` characters. Scrubbing happens before the cut (rule 1 above)."""
        text = raw.decode("utf-8", errors="replace")
        rendered = self.text(_decode_escapes(text))
        rendered = _SECRET_PAIR.sub(_mask_pair, rendered)
        kept = rendered[:limit]
        return {"raw": kept, "truncated": len(rendered) > limit, "escapes_decoded": rendered != text}


def _decode_escapes(text: str) -> str:
    """``\\uXXXX`` escapes turned into the characters they stand for (surrogate pairs joined,
    lone surrogates replaced), so a secret or a key spelled with them is seen as itself. Quote
    and backslash escapes stay, so the text keeps its quoting (the JSON-escaped spelling of a
    secret is scrubbed as well)."""
    if "\\u" not in text:
        return text
    decoded = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16", errors="replace")


def _mask_pair(match: re.Match[str]) -> str:
    value = match.group("value")
    if not value or value in ('""', "''"):
        return match.group(0)
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match.group('key')}{quote}{MASK}{quote}"


_log_secrets: set[str] = set()
_log_redactor = Redactor(())


def install_log_redaction(redactor: Redactor) -> None:
    """Scrub every log record this process makes, whichever logger or handler it goes to (ours,
    gunicorn's, pytest's): a record factory, so no handler added later can miss it. The secrets of
    every app built in this process are scrubbed (a test process builds many)."""
    if not _log_secrets:
        logging.setLogRecordFactory(_redacting_factory(logging.getLogRecordFactory()))
    _log_secrets.update(redactor.secrets)
    global _log_redactor
    _log_redactor = Redactor(_log_secrets)


def _redacting_factory(make: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return record  # a malformed record: logging reports it when it is emitted
        record.msg, record.args = _log_redactor.text(message), None
        if record.exc_info:
            record.exc_text = _log_redactor.text(logging.Formatter().formatException(record.exc_info))
        return record

    return factory
