"""Django: audit logins and deletions with emit(), so a recalled outage never fails a request.

Put this module in one of your apps (``myapp/audit.py``) and import it from ``AppConfig.ready()``
so the signal receiver is connected. Settings: ``RECALLED_API_KEY`` and ``RECALLED_BASE_URL`` in
the environment, optionally ``RECALLED_SPOOL_PATH`` in settings.py (a path the app user can
write; the default is the user's state directory).

Process models: one client per process, created on first use. Under gunicorn (``--preload``
or not) each worker gets its own sender after the fork; every worker may share one spool.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, JsonResponse

from recalled import Recalled, SpoolConfig


@functools.cache
def audit() -> Recalled:
    return Recalled(spool=SpoolConfig(path=getattr(settings, "RECALLED_SPOOL_PATH", None)))


def _who(request: HttpRequest) -> dict[str, str | None]:
    user = request.user
    return {"type": "user", "id": str(user.pk), "name": user.get_username(), "email": getattr(user, "email", None)}


@receiver(user_logged_in)
def record_login(sender: object, request: HttpRequest, user: object, **kwargs: object) -> None:
    audit().events.emit(
        action="user.login",
        actor=_who(request),
        ip_address=request.META.get("REMOTE_ADDR"),
        user_agent=request.META.get("HTTP_USER_AGENT"),
    )


def delete_invoice(request: HttpRequest, invoice_id: str) -> JsonResponse:
    """A view: the deletion and its audit event. emit() returns once the event is on disk."""
    # ... delete the invoice here ...
    audit().events.emit(
        action="invoice.deleted",
        organization=getattr(request, "tenant_id", None),
        actor=_who(request),
        targets=[{"type": "invoice", "id": invoice_id}],
        metadata={"reason": request.POST.get("reason", "")},
    )
    return JsonResponse({"deleted": invoice_id})
