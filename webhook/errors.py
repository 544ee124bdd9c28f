"""One API error type and its handler: every refusal is JSON that says what and where."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from common.errors import TvgwError

__all__ = ["ApiError", "register_error_handlers"]


class ApiError(TvgwError):
    """A refusal with its HTTP status, a stable ``code``, a message, and where the problem is."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        where: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.where = where
        self.details = details or []
        #: Response headers the refusal needs (``WWW-Authenticate`` on a 401).
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.where:
            error["where"] = self.where
        if self.details:
            error["details"] = self.details
        return {"status": "refused", "error": error}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Any:
        return jsonify(exc.to_dict()), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        # 404, 405 and friends as JSON too: clients of a webhook read JSON, not HTML.
        body = ApiError(
            exc.code or 500, (exc.name or "error").lower().replace(" ", "_"), exc.description or ""
        ).to_dict()
        return jsonify(body), exc.code or 500
