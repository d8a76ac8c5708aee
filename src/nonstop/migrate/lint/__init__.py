"""The phase-aware PostgreSQL migration linter behind ``nonstop migrate lint``.

Pure: no database, no clock. Files are parsed with the real PostgreSQL parser (pglast /
libpg_query); rules (rules.py, one function each) read the tree and the state carried between
statements (state.py) and report findings with a message, the safe alternative and, where the
safe sequence is mechanical, the SQL that ``--fix`` writes (fixes.py).
"""

from nonstop.migrate.lint.engine import (
    FileResult,
    LintInputError,
    apply_fixes,
    describe_rules,
    lint_files,
    lint_text,
)
from nonstop.migrate.lint.model import DEFAULT_PG_VERSION, Finding, LintOptions
from nonstop.migrate.lint.registry import RULES

__all__ = [
    "DEFAULT_PG_VERSION",
    "RULES",
    "FileResult",
    "Finding",
    "LintInputError",
    "LintOptions",
    "apply_fixes",
    "describe_rules",
    "lint_files",
    "lint_text",
]
