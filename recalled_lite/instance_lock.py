"""One server per database: an exclusive lock on `<db>.lock`, held for the server's whole life.

SQLite lets a second process open the same file; a second server would then start, answer
/healthz and fail every write (its writer cannot take the lock the first one holds between
groups, and its idea of the chain head is stale). `flock` is released by the kernel when the
process dies however it dies, so a kill -9 leaves no stale lock behind; the PID written into
the file only names the holder in the refusal message (it is never trusted for the lock).

Offline commands do not take it: reads (verify, export, backup, keys list) are safe beside a
running server, and `keys create/revoke` wait for SQLite's own write lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import ConfigError


class AlreadyServing(ConfigError):
    """Another live process holds the lock on this database."""


def lock_path_for(db_path: Path) -> Path:
    return Path(str(db_path) + ".lock")


class ServerLock:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.path = lock_path_for(db_path)
        self._fd: int | None = None

    def acquire(self) -> "ServerLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise AlreadyServing(
                f"{who} is already serving {self.db_path} (it holds the lock {self.path}); "
                "stop it first, or serve another database with --db"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise ConfigError(f"cannot lock {self.path}: {exc.strerror}; "
                              "is the directory on a file system without flock (some network mounts)?") from None
        # Ours now: record who holds it, for the next one's message.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Explicit release (tests, clean shutdown); the kernel does it at exit anyway.
        The file stays: unlinking it would let a third process lock a new inode while a
        second one still waits on the old."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
