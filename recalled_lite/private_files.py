"""Files that hold the whole log (backups, exports) are created readable by their owner only."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


def create_private_file(path: Path) -> int:
    """A new file only its owner can read (0600 whatever the umask allows more of): backups
    and exports hold the whole log. Refuses a missing directory instead of creating it, so a
    typo in a path fails loudly rather than writing somewhere unexpected."""
    if not path.parent.is_dir():
        raise ConfigError(f"the directory {path.parent} does not exist; create it first "
                          f"(mkdir -p {path.parent}) or choose another path")
    # O_NOFOLLOW: a symlink planted at the path must not redirect (and truncate) another file.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}; choose another path") from None
    os.fchmod(fd, 0o600)  # a stale file left by a crash keeps its old mode otherwise
    return fd
