"""The exception tree every layer raises, and the one error shape clients see.

    APIError                      -> {"error": {"code", "message", "details"}}
      ValidationError   400 VALIDATION_ERROR
      Unauthorized      401 UNAUTHORIZED / INVALID_API_KEY / REVOKED_API_KEY
      Forbidden         403 FORBIDDEN
      NotFound          404 NOT_FOUND
      MethodNotAllowed  405 METHOD_NOT_ALLOWED
      RequestTimeout    408 REQUEST_TIMEOUT   (request head or body too slow; HTTP layer)
      IdempotencyConflict 409 IDEMPOTENCY_CONFLICT
      LegalHoldConflict 409 LEGAL_HOLD        (an erasure a legal hold forbids)
      EventTooLarge     413 EVENT_TOO_LARGE
      RequestTooLarge   413 REQUEST_TOO_LARGE
      UnsupportedMediaType 415 UNSUPPORTED_MEDIA_TYPE
      URITooLong        414 URI_TOO_LONG      (HTTP layer)
      HeadersTooLarge   431 HEADERS_TOO_LARGE (HTTP layer)
      RateLimited       429 RATE_LIMITED
      PlanLimitReached  429 PLAN_LIMIT_REACHED
      Unavailable       503 UNAVAILABLE   (always with Retry-After)
      InternalError     500 INTERNAL_ERROR / DATABASE_ERROR
      NotImplementedByServer 501 NOT_IMPLEMENTED (e.g. a transfer coding other than chunked)

`details` is always present in the body (`{}` when there is nothing to add), so
clients can read `error.details.field` without checking for the key first.

Storage raises StorageUnavailable / StorageError (no HTTP knowledge); the HTTP
layer maps them to Unavailable / InternalError.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    status: int = 500
    code: str = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        details = self.details if self.details is not None else {}
        return {"error": {"code": self.code, "message": self.message, "details": details}}


class ValidationError(APIError):
    status, code = 400, "VALIDATION_ERROR"

    @classmethod
    def field(cls, field: str, message: str) -> "ValidationError":
        return cls(message, {"field": field})


class Unauthorized(APIError):
    status, code = 401, "UNAUTHORIZED"


class Forbidden(APIError):
    status, code = 403, "FORBIDDEN"


class NotFound(APIError):
    status, code = 404, "NOT_FOUND"


class MethodNotAllowed(APIError):
    status, code = 405, "METHOD_NOT_ALLOWED"


class RequestTimeout(APIError):
    status, code = 408, "REQUEST_TIMEOUT"


class IdempotencyConflict(APIError):
    status, code = 409, "IDEMPOTENCY_CONFLICT"


class LegalHoldConflict(APIError):
    status, code = 409, "LEGAL_HOLD"


class EventTooLarge(APIError):
    status, code = 413, "EVENT_TOO_LARGE"


class RequestTooLarge(APIError):
    status, code = 413, "REQUEST_TOO_LARGE"


class UnsupportedMediaType(APIError):
    status, code = 415, "UNSUPPORTED_MEDIA_TYPE"


class URITooLong(APIError):
    status, code = 414, "URI_TOO_LONG"


class HeadersTooLarge(APIError):
    status, code = 431, "HEADERS_TOO_LARGE"


class RateLimited(APIError):
    status, code = 429, "RATE_LIMITED"


class PlanLimitReached(APIError):
    status, code = 429, "PLAN_LIMIT_REACHED"


class Unavailable(APIError):
    status, code = 503, "UNAVAILABLE"

    def __init__(self, message: str, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("Retry-After", str(retry_after))


class InternalError(APIError):
    status, code = 500, "INTERNAL_ERROR"


class NotImplementedByServer(APIError):
    status, code = 501, "NOT_IMPLEMENTED"


# --- storage-level errors (no HTTP knowledge) -------------------------------


class StorageError(Exception):
    """The database failed in a way retrying will not fix."""


class StorageUnavailable(StorageError):
    """Transient: disk full, database locked past busy_timeout, shutting down."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(Exception):
    """A configuration value is wrong; the message names the key."""
