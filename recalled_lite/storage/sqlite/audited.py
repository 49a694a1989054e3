"""The audited writes live in storage/audited.py (the same for every backend)."""

from ..audited import AuditAppendFailed, AuditedCall, AuditIf, AuditWhenFinished, call_op

__all__ = ["AuditAppendFailed", "AuditedCall", "AuditIf", "AuditWhenFinished", "call_op"]
