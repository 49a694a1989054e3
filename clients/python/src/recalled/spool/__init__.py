"""The durable spool behind ``events.emit()``: see ``outbox.py`` (process model),
``store.py`` (the SQLite file), ``sender.py`` (delivery) and ``policy.py`` (retry rules)."""

from .config import SpoolConfig
from .store import DeadLetter, DestinationStatus, SpoolStatus

__all__ = ["SpoolConfig", "SpoolStatus", "DestinationStatus", "DeadLetter"]
