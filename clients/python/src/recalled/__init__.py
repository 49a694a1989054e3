"""recalled: Python client for recalled-lite (and the recalled.dev API).

    from recalled import Recalled

    client = Recalled(api_key="rec_live_...", base_url="http://127.0.0.1:8080")
    client.events.create(action="invoice.paid", actor={"id": "user_1"})   # now, or raise
    client.events.emit(action="invoice.paid", actor={"id": "user_1"})     # spooled, never lost

``AsyncRecalled`` is the asyncio twin. ``recalled.webhooks.verify`` checks deliveries.
"""

from . import webhooks
from ._async import AsyncRecalled
from ._calls import NOT_GIVEN
from ._sync import Recalled
from ._version import __version__
from .errors import (
    APIConnectionError, APITimeoutError, AuthenticationError, ConflictError, IncompleteExportError,
    NotFoundError, PayloadTooLargeError, PermissionDeniedError, PlanLimitError, RateLimitError,
    RecalledError, ServerError, SpoolError, SpoolFullError, UnavailableError, ValidationError,
)
from .pagination import AsyncPage, AsyncPaginator, SyncPage
from .spool import DeadLetter, SpoolConfig, SpoolStatus
from .types import (
    Actor, ApiKey, Attempt, ChainHead, ChainVerification, EmbedToken, ErasureResult, Event, Export,
    Job, Subscription, SubscriptionSecret, Target,
)

__all__ = [
    "__version__", "Recalled", "AsyncRecalled", "SpoolConfig", "SpoolStatus", "DeadLetter", "webhooks",
    "NOT_GIVEN", "SyncPage", "AsyncPage", "AsyncPaginator",
    "Actor", "Target", "Event", "ChainHead", "Export", "ErasureResult", "EmbedToken", "ChainVerification",
    "Subscription", "SubscriptionSecret", "Attempt", "Job", "ApiKey",
    "RecalledError", "ValidationError", "AuthenticationError", "PermissionDeniedError", "NotFoundError",
    "ConflictError", "PayloadTooLargeError", "RateLimitError", "PlanLimitError", "ServerError",
    "UnavailableError", "APIConnectionError", "APITimeoutError", "IncompleteExportError", "SpoolError",
    "SpoolFullError",
]
