"""The errors the client raises: one small tree, keyed on the server's error codes.

    RecalledError                      code, status, message, details, request_id
      ValidationError          400     VALIDATION_ERROR
      AuthenticationError      401     UNAUTHORIZED, INVALID_API_KEY, REVOKED_API_KEY
      PermissionDeniedError    403     FORBIDDEN
      NotFoundError            404     NOT_FOUND
      ConflictError            409     IDEMPOTENCY_CONFLICT
      PayloadTooLargeError     413     EVENT_TOO_LARGE, REQUEST_TOO_LARGE
      RateLimitError           429     RATE_LIMITED            (retry_after)
      PlanLimitError           429     PLAN_LIMIT_REACHED      (retry_after)
      ServerError              5xx     INTERNAL_ERROR, DATABASE_ERROR, ...
        UnavailableError       503     UNAVAILABLE             (retry_after)
      APIConnectionError       0       NETWORK_ERROR: nothing usable came back
        APITimeoutError        0       TIMEOUT (also a builtin TimeoutError)
        IncompleteExportError  0       INCOMPLETE_EXPORT: an export ended without its chain head
      SpoolError               0       SPOOL_ERROR: the local spool could not be used
        SpoolFullError         0       SPOOL_FULL: emit() refused, the spool is at its bound

Any other status (405, 408, 414, 415, 431, 501, ...) is a plain ``RecalledError`` with the
server's code. ``status`` is 0 for errors that did not come from an HTTP response.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "RecalledError", "ValidationError", "AuthenticationError", "PermissionDeniedError",
    "NotFoundError", "ConflictError", "PayloadTooLargeError", "RateLimitError", "PlanLimitError",
    "ServerError", "UnavailableError", "APIConnectionError", "APITimeoutError",
    "IncompleteExportError", "SpoolError", "SpoolFullError", "error_from_response",
]


class RecalledError(Exception):
    """Base of every error this package raises.

    ``code`` is the server's error code (``VALIDATION_ERROR``, ...) or a client-side one
    (``NETWORK_ERROR``, ``TIMEOUT``, ``SPOOL_FULL``, ...); ``details`` is the server's
    ``error.details`` (for a batch: ``{"errors": [{"index", "field", "message"}, ...]}``).
    """

    default_code = "UNKNOWN_ERROR"

    def __init__(self, message: str, *, code: str | None = None, status: int = 0,
                 details: Any = None, request_id: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status = status
        self.details = details
        self.request_id = request_id
        # Seconds the server asked us to wait (Retry-After), when it said so.
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status else ""
        return f"{self.code}{where}: {self.message}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, "
                f"message={self.message!r}, details={self.details!r})")

    def to_dict(self) -> dict[str, Any]:
        """The error in the server's shape (what the spool stores for a dead letter)."""
        return {"code": self.code, "status": self.status, "message": self.message,
                "details": self.details, "request_id": self.request_id}


class ValidationError(RecalledError):
    default_code = "VALIDATION_ERROR"


class AuthenticationError(RecalledError):
    default_code = "UNAUTHORIZED"


class PermissionDeniedError(RecalledError):
    default_code = "FORBIDDEN"


class NotFoundError(RecalledError):
    default_code = "NOT_FOUND"


class ConflictError(RecalledError):
    default_code = "IDEMPOTENCY_CONFLICT"


class PayloadTooLargeError(RecalledError):
    default_code = "REQUEST_TOO_LARGE"


class RateLimitError(RecalledError):
    default_code = "RATE_LIMITED"


class PlanLimitError(RecalledError):
    default_code = "PLAN_LIMIT_REACHED"


class ServerError(RecalledError):
    default_code = "INTERNAL_ERROR"


class UnavailableError(ServerError):
    default_code = "UNAVAILABLE"


class APIConnectionError(RecalledError):
    default_code = "NETWORK_ERROR"


class APITimeoutError(APIConnectionError, builtins.TimeoutError):
    default_code = "TIMEOUT"


class IncompleteExportError(APIConnectionError):
    default_code = "INCOMPLETE_EXPORT"


class SpoolError(RecalledError):
    default_code = "SPOOL_ERROR"


class SpoolFullError(SpoolError):
    default_code = "SPOOL_FULL"


_BY_STATUS: dict[int, type[RecalledError]] = {
    400: ValidationError, 401: AuthenticationError, 403: PermissionDeniedError,
    404: NotFoundError, 409: ConflictError, 413: PayloadTooLargeError, 503: UnavailableError,
}


def _class_for(status: int, code: str) -> type[RecalledError]:
    if status == 429:
        return PlanLimitError if code == "PLAN_LIMIT_REACHED" else RateLimitError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return RecalledError


def _code_for_status(status: int) -> str:
    if status == 429:
        return "RATE_LIMITED"
    if status in _BY_STATUS:
        return _BY_STATUS[status].default_code
    return "INTERNAL_ERROR" if status >= 500 else "UNKNOWN_ERROR"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    import time

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(status: int, body: bytes, headers: Any) -> RecalledError:
    """The error for a non-2xx response, from the server's ``{"error": {...}}`` body.

    A body that is not the server's shape (a proxy's HTML page, say) still gives an
    error of the right class, with a code derived from the status.
    """
    import json

    code = message = None
    details: Any = None
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message") if isinstance(error.get("message"), str) else None
        details = error.get("details")
    code = code or _code_for_status(status)
    if message is None:
        snippet = body[:200].decode("utf-8", "replace").strip() if body else ""
        message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    cls = _class_for(status, code)
    return cls(message, code=code, status=status, details=details,
               request_id=headers.get("x-request-id"),
               retry_after=parse_retry_after(headers.get("retry-after")))
