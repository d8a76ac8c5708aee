"""Safe rewrites that ``--fix`` writes in place of a hazardous statement.

Edits are made at token positions found by PostgreSQL's own scanner (``pglast.parser.scan``)
on the statement's text, so the user's formatting and comments survive and a keyword inside a
string or a quoted name is never touched: ``CREATE INDEX`` gets `` CONCURRENTLY`` after the
``INDEX`` token, a constraint gets `` NOT VALID`` after its last token. The text returned has no
closing semicolon: the original one still follows it in the file.
"""

from __future__ import annotations

import re
from functools import cache

from pglast import parser as pg

from nonstop.migrate.lint.sqltext import quote_ident

LOCK_TIMEOUT = "SET lock_timeout = '2s';\n"
_MAX_NAME = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer identifiers


def constraint_name(*parts: str) -> str:
    """PostgreSQL-style default name: (orders, customer_id, fkey) -> orders_customer_id_fkey."""
    base, suffix = "_".join(parts[:-1]), parts[-1]
    return f"{base[: _MAX_NAME - len(suffix) - 1]}_{suffix}"


# Plain words (keywords or unquoted names: ASCII letters, digits, _ and $) separated by the
# scanner's white space, up to the first word that is the keyword looked for. Such a prefix
# holds no comment, string or quoted name, so the scanner reads each word as one token and
# that word is the keyword's first token (a non-ASCII letter after it would extend the word).
_SPACE, _WORD = r"[ \t\n\r\f]", r"[A-Za-z_][A-Za-z0-9_$]*"
_WORDS_THEN = rf"{_SPACE}*(?:{_WORD}{_SPACE}+)*?({{}})(?![A-Za-z0-9_$]|[^\x00-\x7f])"


@cache
def _keyword_after_words(keyword: str) -> re.Pattern[str]:
    return re.compile(_WORDS_THEN.format(re.escape(keyword)), re.IGNORECASE)


def insert_after(sql: str, token_name: str, text: str) -> str:
    """``sql`` with ``text`` inserted right after the first token named ``token_name``.

    A keyword led by plain words only (``CREATE UNIQUE INDEX``, ``REFRESH MATERIALIZED VIEW``:
    nearly every statement fixed) is found without scanning the statement, which builds a
    token object for each of its tokens (~15 us per statement); anything else is scanned."""
    if token_name.isalpha():
        found = _keyword_after_words(token_name).match(sql)
        if found is not None:
            return sql[: found.end(1)] + text + sql[found.end(1) :]
    for token in pg.scan(sql):
        if token.name == token_name:
            return sql[: token.end + 1] + text + sql[token.end + 1 :]
    raise ValueError(f"no {token_name} token in {sql!r}")


def _append(sql: str, text: str) -> str:
    """``text`` after the statement's last token (before any trailing comment)."""
    last = [t for t in pg.scan(sql) if t.name not in ("SQL_COMMENT", "C_COMMENT")][-1]
    return sql[: last.end + 1] + text + sql[last.end + 1 :]


def outside_transaction(sql: str, in_transaction: bool) -> str:
    """Close the open transaction around ``sql`` when a CONCURRENTLY statement sits inside one."""
    return f"COMMIT;\n{sql};\nBEGIN" if in_transaction else sql


def concurrent_index(sql: str, in_transaction: bool) -> str:
    """``CREATE [UNIQUE] INDEX ...`` and ``DROP INDEX ...`` -> ``... INDEX CONCURRENTLY ...``."""
    return outside_transaction(insert_after(sql, "INDEX", " CONCURRENTLY"), in_transaction)


def concurrent_reindex(sql: str, in_transaction: bool) -> str:
    """``REINDEX TABLE t`` -> ``REINDEX (CONCURRENTLY) TABLE t``; options are kept."""
    tokens = pg.scan(sql)
    if len(tokens) > 1 and tokens[1].name == "ASCII_40":  # REINDEX ( options ) ...
        fixed = insert_after(sql, "ASCII_40", "CONCURRENTLY, ")
    else:
        fixed = insert_after(sql, "REINDEX", " (CONCURRENTLY)")
    return outside_transaction(fixed, in_transaction)


def not_valid_then_validate(sql: str, table_sql: str, name: str, unnamed_at: int | None) -> str:
    """``ALTER TABLE t ADD [CONSTRAINT c] ...`` -> ``... NOT VALID; ALTER TABLE t VALIDATE
    CONSTRAINT c``. ``unnamed_at`` is the character offset of an unnamed constraint, where
    ``CONSTRAINT name`` goes so the VALIDATE can refer to it."""
    fixed = _append(sql, " NOT VALID")
    if unnamed_at is not None:
        fixed = f"{fixed[:unnamed_at]}CONSTRAINT {quote_ident(name)} {fixed[unnamed_at:]}"
    return f"{fixed};\nALTER TABLE {table_sql} VALIDATE CONSTRAINT {quote_ident(name)}"


def set_not_null_sequence(table_sql: str, column: str, name: str) -> str:
    """SET NOT NULL without a long ACCESS EXCLUSIVE scan (PostgreSQL 12+)."""
    col, check = quote_ident(column), quote_ident(name)
    return (
        f"ALTER TABLE {table_sql} ADD CONSTRAINT {check} CHECK ({col} IS NOT NULL) NOT VALID;\n"
        f"ALTER TABLE {table_sql} VALIDATE CONSTRAINT {check};\n"
        f"ALTER TABLE {table_sql} ALTER COLUMN {col} SET NOT NULL;\n"
        f"ALTER TABLE {table_sql} DROP CONSTRAINT {check}"
    )


def unique_using_index(
    table_sql: str, name: str, keys: list[str], primary: bool, in_transaction: bool
) -> str:
    """Build the index CONCURRENTLY, then attach it as the constraint (brief lock only)."""
    index, columns = quote_ident(name), ", ".join(quote_ident(key) for key in keys)
    kind = "PRIMARY KEY" if primary else "UNIQUE"
    build = outside_transaction(
        f"CREATE UNIQUE INDEX CONCURRENTLY {index} ON {table_sql} ({columns})", in_transaction
    )
    return f"{build};\nALTER TABLE {table_sql} ADD CONSTRAINT {index} {kind} USING INDEX {index}"
