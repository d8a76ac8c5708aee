"""Where a migration file says which phase it belongs to, and the order files run in.

A migration is a plain ``.sql`` file under a directory (``migrations/`` by default). Its phase
is one of ``expand``, ``backfill`` or ``contract``, found in this order:

1. a header comment among the leading comment lines of the file (before the first SQL line)::

       -- nonstop: phase=contract

   other ``key=value`` words on that line (``down=...``) belong to the runner and are ignored;
2. otherwise the name of a parent directory: ``migrations/backfill/0003_copy_emails.sql``;
3. otherwise ``expand``, the strictest phase (the linter forbids the most there).

Files run in order of their file name (``0001_...`` before ``0002_...``) wherever they sit
below the directory; the full path breaks ties so the order is total.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from nonstop.errors import UsageError

Phase = Literal["expand", "backfill", "contract"]
PHASES: tuple[Phase, ...] = get_args(Phase)
DEFAULT_PHASE: Phase = "expand"
HEADER_PREFIX = "nonstop:"


def header_phase(path: Path, text: str) -> Phase | None:
    """The phase named by a ``-- nonstop: phase=...`` header, or None when there is none.

    Only the leading block of blank and ``--`` comment lines is read, so a ``phase=`` inside the
    SQL (a string, a later comment) never counts. An unknown phase is a UsageError naming the line.
    """
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            return None
        body = line[2:].strip()
        if not body.startswith(HEADER_PREFIX):
            continue
        for word in body[len(HEADER_PREFIX) :].split():
            key, _, value = word.partition("=")
            if key != "phase":
                continue
            if value not in PHASES:
                raise UsageError(
                    f"{path}:{number}: unknown migration phase {value!r} "
                    f"(expected one of {', '.join(PHASES)})"
                )
            return value
    return None


def detect_phase(path: Path, text: str) -> Phase:
    """Phase of the migration at ``path`` whose contents are ``text`` (header, directory, default).

    >>> detect_phase(Path("m/0001_a.sql"), "-- nonstop: phase=contract\\nDROP TABLE a;")
    'contract'
    >>> detect_phase(Path("m/backfill/0002_b.sql"), "UPDATE a SET b = 1 WHERE id < 100;")
    'backfill'
    >>> detect_phase(Path("m/0003_c.sql"), "CREATE TABLE c (id int);")
    'expand'
    """
    from_header = header_phase(path, text)
    if from_header is not None:
        return from_header
    for parent in reversed(path.parent.parts):
        if parent in PHASES:
            return parent
    return DEFAULT_PHASE


def list_migrations(directory: Path) -> list[Path]:
    """Every ``.sql`` file below ``directory``, in run order (file name, then full path)."""
    files = [p for p in directory.rglob("*.sql") if p.is_file()]
    return sorted(files, key=lambda p: (p.name, str(p)))
