"""Reading files users hand us: bounded, and never blocked by something that is not a file.

Kept free of heavy imports: the migration linter reads through it and must start fast.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nonstop.errors import UsageError

__all__ = ["read_regular_file"]


def read_regular_file(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of ``path``, refusing what is not a regular file (a FIFO would block for
    ever, a device never ends) and anything over ``limit`` bytes, with a message naming it.

    The file is opened non-blocking, so opening a FIFO with no writer returns at once."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path}: not a regular file (a {what} must be a plain file)")
        if info.st_size > limit:
            raise UsageError(
                f"{path}: {info.st_size} bytes is more than the {limit} allowed for a {what}"
            )
        os.set_blocking(fd, True)
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while we read
        raise UsageError(f"{path}: more than the {limit} bytes allowed for a {what}")
    return data
